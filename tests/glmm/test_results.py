"""The verbs of one factor on a formula fit, per group-specific term."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise

THREAD = pd.DataFrame(
    {
        "distribution": list("aabbcc"),
        "trial_control": [0, 1] * 3,
        "opens": [30, 40, 20, 28, 35, 45],
        "sent": [100] * 6,
    }
)


@pytest.fixture(scope="module")
def fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.PoolwiseWarning)
        return poolwise.fit(
            "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
            data=THREAD,
            seed=1,
            draws=800,
            tune=400,
            progress=False,
        )


def test_factor_view_holds_the_terms_levels(fit):
    view = fit.factor()
    assert view.groups.index.name == "1|distribution"
    assert view.groups.index.tolist() == ["a", "b", "c"]
    assert view.groups["n"].tolist() == [200, 200, 200]  # trials per level
    pd.testing.assert_frame_equal(
        view.groups, fit.groups.loc["1|distribution"].rename_axis("1|distribution")
    )
    np.testing.assert_array_equal(view.theta_draws(), fit.theta_draws())
    with pytest.raises(ValueError, match="no term 'x'"):
        fit.factor("x")


def test_shrinkage_plot_draws_raw_and_pooled_effects(fit):
    fig = fit.plot_shrinkage()
    ax = fig.axes[0]
    raw = next(c for c in ax.collections if c.get_gid() == "raw")
    pooled = next(c for c in ax.collections if c.get_gid() == "pooled")
    np.testing.assert_allclose(raw.get_offsets()[:, 1], fit.groups["raw"].to_numpy())
    np.testing.assert_allclose(pooled.get_offsets()[:, 1], fit.groups["mean"].to_numpy())
    # deviations shrink towards 0, the line drawn as the population
    line = next(x for x in ax.get_lines() if x.get_gid() == "population")
    assert line.get_ydata()[0] == 0.0
    assert "trials" in ax.get_title()


def test_ranks_per_factor_come_from_the_effect_draws(fit):
    table = fit.ranks(top=1)
    draws = fit.theta_draws()
    best = np.bincount(draws.argmax(axis=1), minlength=3) / draws.shape[0]
    expected = pd.Series(best, index=["a", "b", "c"])
    np.testing.assert_allclose(table["p_best"].sort_index().to_numpy(), expected.to_numpy())


def test_forest_and_estimates_plots_draw_every_level(fit):
    assert fit.plot_forest().axes
    assert fit.plot_estimates().axes


def test_population_plot_shows_every_sampled_parameter_with_its_prior(fit):
    fig = fit.plot_population()
    names = ["Intercept", "trial_control", "1|distribution_sigma"]
    assert [a.get_title() for a in fig.axes[:3]] == names
    for ax, name in zip(fig.axes[:3], names, strict=True):
        assert any(x.get_gid() == "prior" for x in ax.get_lines()), name
    # the table's median is the draws' median
    draws = fit.hyper_draws["trial_control"]
    assert fit.population.loc["trial_control", "median"] == np.median(draws)


def test_check_replicates_the_cells_from_the_posterior(fit):
    rates = (THREAD["opens"] / THREAD["sent"]).to_numpy()
    ppc = fit.check(statistic="sd", draws=800, seed=3)
    assert ppc.observed == pytest.approx(np.std(rates, ddof=1), rel=1e-12)
    assert 0.05 < ppc.p_value < 0.95  # the model reproduces the spread of its own data
    # the replicated mean rate averages the posterior predictive mean, expit(eta), over the draws
    mean = fit.check(statistic="mean", draws=800, seed=3)
    expected = (1 / (1 + np.exp(-fit.linear_predictor(np.arange(800))))).mean()
    mc_error = mean.replicated.std() / np.sqrt(800)
    assert abs(mean.replicated.mean() - expected) < 4 * mc_error
    assert "cell estimates" in ppc.description


def test_a_formula_fit_is_frozen(fit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.method = "eb"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.draws = {}
