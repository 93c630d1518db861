"""AGHQ with many levels: beta and the log sd jointly normal on the exact likelihood, against the
grid's tables on the same model, and the levels' draws made when first read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import poolwise as pw
from poolwise.fitdata import THETA_CHUNK, LazyDraws, chunked
from poolwise.glmm import aghq
from poolwise.glmm.setup import prepare

FORMULA = "p(k, n) ~ x1 + x2 + x3 + (1|g)"


def _levels(n_levels: int, seed: int = 0) -> pd.DataFrame:
    """The scale benchmark's model (5 rows of 10 trials a level, three covariates), smaller."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_levels), 5)
    x = rng.normal(size=(g.size, 3))
    eta = -0.5 + x @ np.array([0.4, -0.3, 0.2]) + rng.normal(0, 0.7, n_levels)[g]
    k = rng.binomial(10, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"g": g, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "k": k, "n": 10})


@pytest.fixture(scope="module")
def both():
    """The joint normal (its skewness check relaxed: 400 levels are below its bound) and the
    grid, on one model."""
    prep = prepare(FORMULA, _levels(400))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aghq, "SKEW_SHIFT", 1.0)
        joint = aghq.fit_aghq(prep, seed=1, draws=1000, gaussian=True)
    grid = aghq.fit_aghq(prep, seed=1, draws=200, gaussian=False)
    return joint, grid


def test_the_joint_normal_matches_the_grid(both):
    """Within a small share of a posterior sd; the sd's share (0.056 here) falls as
    1 / sqrt(levels): 0.035 at 1,000 levels, 0.012 at 10,000."""
    joint, grid = both
    assert joint.info["joint_normal"] and joint.info["sd_grid"] == 1
    assert grid.info["sd_grid"] > 1
    a, b = joint.population, grid.population
    shift = (a - b)[["mean", "median", "hdi_low", "hdi_high"]].div(b["sd"], axis=0).abs()
    assert shift.drop(index="1|g_sigma").to_numpy().max() < 0.02  # seen 0.009
    assert shift.loc["1|g_sigma"].max() < 0.15  # seen 0.084
    np.testing.assert_allclose(a["sd"], b["sd"], rtol=0.01)  # seen 0.005
    ga, gb = joint.groups, grid.groups
    for column in ("mean", "hdi_low", "hdi_high"):
        assert ((ga[column] - gb[column]) / gb["sd"]).abs().max() < 0.03  # seen 0.018
    np.testing.assert_allclose(ga["sd"], gb["sd"], rtol=0.01)  # seen 0.004


def test_the_levels_draws_are_made_when_read_and_follow_the_tables(both):
    joint, _ = both
    draws = joint.draws
    assert isinstance(draws, LazyDraws)
    assert "1|g" not in draws._values  # (not made by the fit)
    effects = draws["1|g"]
    assert effects.shape == (1, 1000, 400)
    assert draws["1|g"] is effects  # made once
    groups = joint.groups
    se = groups["sd"].to_numpy() / np.sqrt(1000)
    z = (effects[0].mean(axis=0) - groups["mean"].to_numpy()) / se
    assert np.abs(z).max() < 4.5  # 400 levels' means
    np.testing.assert_allclose(effects[0].std(axis=0), groups["sd"], rtol=0.2)
    # zero-sum deviations: the intercept carries their mean
    for name in ("Intercept", "x1", "1|g_sigma"):
        row = joint.population.loc[name]
        x = draws[name].reshape(-1)
        assert abs(x.mean() - row["mean"]) < 4 * row["sd"] / np.sqrt(1000)
        np.testing.assert_allclose(x.std(), row["sd"], rtol=0.1)
    # the levels' mean given (beta, sd) is drawn from its normal, apart from the levels' own
    # draws: their deviations' mean is the difference of two such draws
    expected = np.sqrt(2 * (groups["sd"] ** 2).sum()) / 400
    assert 0.85 < effects[0].mean(axis=1).std() / expected < 1.15


def test_few_levels_keep_the_grid():
    """Asked for the joint normal where its skewness check fails: the grid."""
    fit = aghq.fit_aghq(prepare(FORMULA, _levels(40)), seed=1, draws=100, gaussian=True)
    assert "joint_normal" not in fit.info and fit.info["sd_grid"] > 1


def test_many_levels_take_the_joint_normal(monkeypatch):
    monkeypatch.setattr(aghq, "MANY_LEVELS", 300)
    monkeypatch.setattr(aghq, "SKEW_SHIFT", 1.0)
    fit = pw.fit(FORMULA, _levels(300), method="laplace", seed=2, draws=50)
    assert fit.info["joint_normal"]
    assert "jointly Gaussian" in fit.method_reason


def test_chunked_draws_do_not_depend_on_the_groups_drawn_with_them():
    def draw(groups, rng):
        return rng.normal(size=(3, groups.stop - groups.start))

    many = chunked(7, THETA_CHUNK + 10, draw)
    np.testing.assert_array_equal(many[:, :THETA_CHUNK], chunked(7, THETA_CHUNK, draw))
