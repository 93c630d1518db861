"""Ranks from posterior draws: intervals, P(best), P(top k), against closed forms."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import poolwise
from poolwise.ranks import rank_draws


def fit_counts(k, n, priors=None, draws=4000):
    df = pd.DataFrame({"g": [f"g{i:02d}" for i in range(len(k))], "k": k, "n": n})
    return poolwise.fit(
        df, group="g", successes="k", trials="n", priors=priors, seed=3, draws=draws
    )


def test_rank_draws_small_example_and_ties():
    theta = np.array([[0.1, 0.5, 0.3], [0.2, 0.1, 0.0]])
    assert rank_draws(theta).tolist() == [[3, 1, 2], [1, 2, 3]]
    assert rank_draws(theta, best="low").tolist() == [[1, 3, 2], [3, 2, 1]]
    # complete ties are broken at random: every rank is used once per draw, each group as often
    tied = rank_draws(np.zeros((4000, 4)), seed=1)
    assert (np.sort(tied, axis=1) == np.arange(1, 5)).all()
    np.testing.assert_allclose((tied == 1).mean(axis=0), 0.25, atol=4 * np.sqrt(0.25 * 0.75 / 4000))
    with pytest.raises(
        ValueError, match=r"theta: expected draws x groups \(2-D\), got shape \(3,\)"
    ):
        rank_draws(np.zeros(3))


def test_larger_group_with_equal_raw_rate_gets_narrower_rank_interval():
    # two groups at 50%, one with 10 trials and one with 400, among groups spread around them
    k = [5, 200, 2, 6, 9, 12, 15, 18, 21, 24, 30, 36]
    n = [10, 400, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60]
    table = fit_counts(k, n).ranks()
    width = table["rank_high"] - table["rank_low"]
    assert table.loc["g00", "raw"] == table.loc["g01", "raw"] == 0.5
    assert width["g01"] < width["g00"]
    # the small group's raw 50% ranks near the top too, but its posterior is pulled down more
    assert table.loc["g00", "rank_mean"] > table.loc["g01", "rank_mean"]


def test_p_best_sums_to_one_and_p_top_k_to_k():
    rng = np.random.default_rng(0)
    n = rng.integers(5, 80, 30)
    k = rng.binomial(n, rng.beta(3, 7, 30))
    fit = fit_counts(k, n, draws=2000)
    for top in (1, 3, 7):
        table = fit.ranks(top=top)
        assert table["p_best"].sum() == pytest.approx(1.0, abs=1e-12)
        assert table[f"p_top{top}"].sum() == pytest.approx(top, abs=1e-12)
        assert (table["rank_low"] <= table["rank_mean"]).all()
        assert (table["rank_mean"] <= table["rank_high"]).all()
    assert table["rank_mean"].is_monotonic_increasing
    assert table["rank_mean"].sum() == pytest.approx(30 * 31 / 2)
    # ranking from the bottom mirrors the ranks from the top (no ties among continuous draws)
    low = fit.ranks(best="low")
    np.testing.assert_allclose(low["rank_mean"], 31 - table.loc[low.index, "rank_mean"])
    np.testing.assert_allclose(low["p_best"].sum(), 1.0)


def test_p_best_matches_closed_form_for_two_independent_betas():
    # a fixed Beta(6, 4) population: the two posteriors are independent Beta(6 + k, 4 + n - k)
    fit = fit_counts([70, 2], [100, 2], priors={"a": 6, "b": 4}, draws=4000)
    a1, b1, a2, b2 = 76, 34, 8, 4
    exact, _ = integrate.quad(lambda t: stats.beta.pdf(t, a1, b1) * stats.beta.cdf(t, a2, b2), 0, 1)
    table = fit.ranks(top=1)
    p = table.loc["g00", "p_best"]
    mc_sd = np.sqrt(exact * (1 - exact) / 4000)
    assert abs(p - exact) < 4 * mc_sd  # exact 0.5441; seen |error| 0.0009, 4 sd = 0.031
    assert table.loc["g01", "p_best"] == pytest.approx(1 - p)
    np.testing.assert_allclose(table["p_top1"], table["p_best"])


def test_rank_interval_probability_and_errors():
    fit = fit_counts([5, 20, 40], [50, 50, 50], draws=1000)
    wide = fit.ranks(prob=0.99)
    assert wide.loc["g01", "rank_low"] <= 2 <= wide.loc["g01", "rank_high"]
    assert list(fit.ranks().index) == ["g02", "g01", "g00"]
    assert fit.ranks()["raw_rank"].tolist() == [1, 2, 3]
    with pytest.raises(
        ValueError, match=r"top must lie between 1 and the number of groups \(3\), got 4"
    ):
        fit.ranks(top=4)
    with pytest.raises(TypeError, match="top must be an integer, got str"):
        fit.ranks(top="3")
    with pytest.raises(ValueError, match="best must be 'high' or 'low', got 'up'"):
        fit.ranks(best="up")
    with pytest.raises(ValueError, match="prob must lie strictly between 0 and 1, got 1.5"):
        fit.ranks(prob=1.5)
