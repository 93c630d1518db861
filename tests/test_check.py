"""Simulation-based calibration in the suite: small runs, fixed seeds, stated false-alarm rates.

A calibrated engine's ranks are uniform, so each p-value is uniform on (0, 1) (the ECDF test's
up to its Monte Carlo resolution). A run is declared miscalibrated when its smallest p-value over
m tests falls below ALPHA / m (Bonferroni): a correct engine then fails with probability at most
ALPHA = 0.001 per run. The seeds are fixed, so the suite is deterministic; the rate says how
unlucky a seed would have to be. The full runs (1000 simulations each) are in CALIBRATION.md.
"""

import matplotlib
import numpy as np
import pandas as pd
import pytest

import poolwise
import poolwise.check as pc

ALPHA = 0.001


def assert_uniform(cal: pc.Calibration) -> None:
    m = 2 * len(cal.tests)
    assert cal.ranks.to_numpy().min() >= 0 and cal.ranks.to_numpy().max() <= cal.spec.draws
    assert cal.min_p > ALPHA / m, cal.tests


SIZES = {
    "normal": (2, 3, 5, 8, 10, 20),
    "normal_se": (2.0, 1.0, 1.0, 0.5, 0.5, 0.3),
    "binomial": (5, 10, 20, 20, 50, 100),
    "poisson": (0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
}


@pytest.mark.parametrize("family", list(SIZES))
def test_exact_is_calibrated(family):
    spec = pc.CalibrationSpec(family, SIZES[family], method="exact", draws=19)
    cal = pc.calibration(spec, n_sims=60, seed=11)
    assert_uniform(cal)


def test_nuts_on_the_collapsed_model_is_calibrated():
    spec = pc.CalibrationSpec("poisson", SIZES["poisson"], method="nuts", draws=19, tune=300)
    cal = pc.calibration(spec, n_sims=50, seed=12)
    assert_uniform(cal)
    # divergences are rare: the chains start at the mode (jittered), and a start moved by 1e-8
    # (the mode search's own precision) moves the chains' paths: then one of the 50 fits'
    # 50 x 4 x (300 + 19) transitions diverged (none before)
    assert cal.divergences <= 1


def test_eb_with_few_groups_is_caught():
    # the check has power: with five groups empirical Bayes ignores the uncertainty of tau,
    # so the groups' intervals are too narrow (ranks pile up at both ends)
    spec = pc.CalibrationSpec("normal_se", (1.0,) * 5, method="eb", draws=19)
    cal = pc.calibration(spec, n_sims=100, seed=13)
    theta = cal.tests.loc[["theta[0]", "theta[4]"], ["chi2_p", "ecdf_p"]].to_numpy()
    assert theta.min() < ALPHA / (2 * len(cal.tests))
    ranks = cal.ranks["theta[0]"].to_numpy()
    ends = np.mean((ranks <= 1) | (ranks >= 18))
    assert ends > 4 / 20  # uniform ranks land there with probability 4/20


def test_regression_smoke():
    spec = pc.CalibrationSpec("regression", (20,) * 4, method="nuts", draws=9, tune=200)
    cal = pc.calibration(spec, n_sims=2, seed=3)
    assert list(cal.ranks.columns) == spec.parameters()
    assert cal.ranks.to_numpy().min() >= 0 and cal.ranks.to_numpy().max() <= 9
    assert cal.engines == ["nuts", "nuts"]


def test_regression_records_the_engine_method_laplace_used():
    # one scalar factor of a Bernoulli model, 20 levels under the default HalfNormal(1) group sd:
    # far from the bound sd^2 = 20 x the intercept's prior variance where AGHQ declines
    spec = pc.CalibrationSpec("regression_bernoulli", (2, 3, 4, 5) * 5, method="laplace", draws=9)
    assert pc.calibration(spec, n_sims=3, seed=1).engines == ["aghq"] * 3


def test_laplace_is_calibrated_for_a_normal_regression():
    # a normal outcome's effects are exactly Gaussian given the variance parameters: the
    # Laplace engine is exact up to quadrature error
    spec = pc.CalibrationSpec("regression_normal", (2, 3, 5, 8, 10, 20), method="laplace", draws=19)
    assert spec.parameters()[3] == "sigma"
    cal = pc.calibration(spec, n_sims=60, seed=14)
    assert_uniform(cal)
    assert cal.engines == ["laplace"] * 60  # a normal outcome is never AGHQ's


def test_regression_eb_draws_variance_parameters_from_their_asymptotic_normal():
    spec = pc.CalibrationSpec("regression", (30,) * 8, method="eb", draws=999)
    df, _, _ = pc.simulate_regression(spec.group_sizes, spec.used_priors(), seed=3)
    fit = pc._fit_regression(spec, df, seed=1)
    draws = pc._regression_draws(spec, fit, np.random.default_rng(2))
    mean, sd = fit.population.loc["1|group_sigma", ["mean", "sd"]]
    log = np.log(draws["1|group_sigma"])
    # log-normal around the estimate with the delta method's sd: 5 standard errors
    assert abs(log.mean() - np.log(mean)) < 5 * (sd / mean) / np.sqrt(999)
    assert abs(log.std() / (sd / mean) - 1) < 5 / np.sqrt(2 * 999)
    assert {len(d) for d in draws.values()} == {999}


def test_simulated_regression_effects_sum_to_zero():
    df, truth, b = pc.simulate_regression((10, 20, 30), pc.REGRESSION_PRIORS, seed=4)
    assert abs(b.sum()) < 1e-12 and truth["1|group_sigma"] > 0
    assert (df["successes"] <= df["trials"]).all() and len(df) == 6


def test_uniformity_tests_hold_their_level():
    # uniform ranks: each test rejects at 5% about 5% of the time (a binomial 99.9% range)
    rng = np.random.default_rng(5)
    p = np.array([pc.uniformity(rng.integers(0, 20, 100), 19, 10)[1:] for _ in range(300)])
    lo, hi = 3, 31  # binom(300, 0.05).ppf([0.0005, 0.9995])
    for column in p.T:
        assert lo <= np.sum(column < 0.05) <= hi


def test_uniformity_rejects_a_u_shape():
    rng = np.random.default_rng(6)
    ranks = np.concatenate(
        [rng.integers(0, 3, 40), rng.integers(17, 20, 40), rng.integers(0, 20, 40)]
    )
    chi2, p, p_ecdf = pc.uniformity(ranks, 19, 10)
    assert p < 1e-6 and p_ecdf < 1e-3


def test_ranks_break_ties_at_random():
    rng = np.random.default_rng(0)
    ranks = [pc._ranks(0.0, np.zeros(9), rng) for _ in range(2000)]
    counts = np.bincount(ranks, minlength=10)
    assert counts.min() > 120  # each of the 10 ranks expects 200


def test_plot_and_errors():
    spec = pc.CalibrationSpec("normal_se", (1.0, 1.0, 2.0), draws=9)
    cal = pc.calibration(spec, n_sims=20, seed=1)
    fig = cal.plot()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2 * 4
    matplotlib.pyplot.close(fig)
    assert isinstance(cal.ranks, pd.DataFrame)
    with pytest.raises(ValueError, match="method must be one of"):
        pc.CalibrationSpec("binomial", method="mcmc")
    with pytest.raises(ValueError, match="a regression is fitted by method"):
        pc.CalibrationSpec("regression_poisson", method="exact")
    with pytest.raises(ValueError, match="regression_bernoulli"):
        pc.CalibrationSpec("logistic")
    with pytest.raises(ValueError, match="must be proper"):
        pc.CalibrationSpec(
            "normal_se", priors={"mu": poolwise.Flat(), "tau": poolwise.HalfNormal(1)}
        )
    with pytest.raises(ValueError, match="bins must divide"):
        pc.calibration(spec, n_sims=20, bins=3)
    with pytest.raises(TypeError, match="CalibrationSpec"):
        pc.calibration("binomial")
