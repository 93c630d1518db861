"""Empirical Bayes against a direct scipy maximisation of the same marginal likelihood, its
intervals against the HDIs of its normal approximation, and its fits at the edge of a range."""

import re
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import poolwise
from poolwise.data import reduce
from poolwise.families import FAMILIES
from poolwise.onefactor import run_engine

RATS = pd.read_csv(poolwise.example_path("rat_tumors"))
PUMPS = pd.read_csv(poolwise.example_path("pumps"))
RATS_COLUMNS = {"group": "experiment", "successes": "y", "trials": "n"}
PUMPS_COLUMNS = {"group": "pump", "counts": "x_failures", "exposure": "t_thousand_hours"}


def test_beta_binomial_marginal_maximum_likelihood():
    k, n = RATS["y"].to_numpy(), RATS["n"].to_numpy()

    def nll(x):
        a, b = np.exp(x)
        return -stats.betabinom.logpmf(k, n, a, b).sum()

    best = optimize.minimize(
        nll, np.log([1.0, 5.0]), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    )
    a, b = np.exp(best.x)
    fit = poolwise.fit(RATS, group="experiment", successes="y", trials="n", method="eb", seed=0)
    assert fit.method == "eb"
    assert fit.population.loc["a", "mean"] == pytest.approx(a, rel=1e-5)
    assert fit.population.loc["b", "mean"] == pytest.approx(b, rel=1e-5)
    # groups are the conditional Beta posteriors at the estimate
    np.testing.assert_allclose(
        fit.groups["mean"].to_numpy(),
        ((a + k) / (a + b + n))[np.argsort(RATS["experiment"])],
        rtol=1e-5,
    )
    # standard errors from the curvature: a central-difference Hessian in (a, b)
    x0, step, h = np.array([a, b]), 1e-4, np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * step, np.eye(2)[j] * step
            h[i, j] = (
                nll(np.log(x0 + ei + ej))
                - nll(np.log(x0 + ei - ej))
                - nll(np.log(x0 - ei + ej))
                + nll(np.log(x0 - ei - ej))
            ) / (4 * step**2)
    se = np.sqrt(np.diag(np.linalg.inv(h)))
    assert fit.population.loc["a", "sd"] == pytest.approx(se[0], rel=1e-3)
    assert fit.population.loc["b", "sd"] == pytest.approx(se[1], rel=1e-3)


def test_gamma_poisson_marginal_maximum_likelihood():
    c, e = PUMPS["x_failures"].to_numpy(), PUMPS["t_thousand_hours"].to_numpy()

    def nll(x):
        alpha, beta = np.exp(x)
        # negative binomial: r = alpha, p = beta / (beta + e)
        return -stats.nbinom.logpmf(c, alpha, beta / (beta + e)).sum()

    best = optimize.minimize(
        nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    )
    fit = poolwise.fit(
        PUMPS, group="pump", counts="x_failures", exposure="t_thousand_hours", method="eb"
    )
    assert fit.population.loc["alpha", "mean"] == pytest.approx(np.exp(best.x[0]), rel=1e-5)
    assert fit.population.loc["beta", "mean"] == pytest.approx(np.exp(best.x[1]), rel=1e-5)


def test_normal_rows_marginal_maximum_likelihood():
    rng = np.random.default_rng(3)
    sizes = rng.integers(2, 30, 40)
    theta = rng.normal(10, 2, 40)
    df = pd.DataFrame(
        {"g": np.repeat(np.arange(40), sizes), "y": rng.normal(np.repeat(theta, sizes), 4)}
    )

    def nll(x):
        mu, tau, sigma = x[0], np.exp(x[1]), np.exp(x[2])
        total = 0.0
        for _, y in df.groupby("g")["y"]:
            cov = sigma**2 * np.eye(len(y)) + tau**2
            total += stats.multivariate_normal.logpdf(y.to_numpy(), np.full(len(y), mu), cov)
        return -total

    best = optimize.minimize(
        nll,
        np.array([10.0, 0.5, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 4000},
    )
    fit = poolwise.fit(df, group="g", y="y", method="eb")
    assert fit.population.loc["mu", "mean"] == pytest.approx(best.x[0], abs=1e-4)
    assert fit.population.loc["tau", "mean"] == pytest.approx(np.exp(best.x[1]), rel=1e-4)
    assert fit.population.loc["sigma", "mean"] == pytest.approx(np.exp(best.x[2]), rel=1e-4)


def test_map_with_priors_adds_the_log_prior():
    y, s = np.array([28.0, 8, -3, 7, -1, 1, 18, 12]), np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
    df = pd.DataFrame({"g": list("ABCDEFGH"), "y": y, "s": s})

    def neg_log_post(x):
        mu, tau = x[0], np.exp(min(x[1], 50.0))
        return -(
            stats.norm.logpdf(y, mu, np.sqrt(tau**2 + s**2)).sum()
            + stats.norm.logpdf(mu, 0, 5)
            + stats.gamma.logpdf(tau, 2.0, scale=10.0)
        )

    best = optimize.minimize(
        neg_log_post,
        np.array([1.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12},
    )
    # a Gamma(2, 0.1) prior keeps the mode of tau inside its range (the likelihood alone peaks at 0)
    fit = poolwise.fit(
        df,
        group="g",
        y="y",
        se="s",
        method="eb",
        priors={"mu": poolwise.Normal(0, 5), "tau": poolwise.Gamma(2.0, 0.1)},
    )
    assert fit.population.loc["mu", "mean"] == pytest.approx(best.x[0], abs=1e-5)
    assert fit.population.loc["tau", "mean"] == pytest.approx(np.exp(best.x[1]), rel=1e-4)


def test_boundary_estimate_is_reported_with_a_warning():
    # estimates that vary less than their standard errors imply: tau-hat = 0
    df = pd.DataFrame({"g": list("ABCDEF"), "y": [1.0, 1.1, 0.9, 1.05, 0.95, 1.0], "s": [1.0] * 6})
    with pytest.warns(poolwise.PoolwiseWarning, match="edge of its range"):
        fit = poolwise.fit(df, group="g", y="y", se="s", method="eb")
    assert fit.population.loc["tau", "mean"] < 1e-4
    np.testing.assert_allclose(fit.groups["shrinkage"], 1.0, atol=1e-6)


# ---------------------------------------------------------------- edges of a range
def _named_missing(fit) -> set[str]:
    """The rows the fit's warnings say are shown without sd or HDI."""
    named = set()
    for message in fit.warnings:
        for found in re.findall(r"no sd or HDI \(NaN\) for ([\w, ]+)", message):
            named.update(found.split(", "))
    return named


@pytest.mark.parametrize(
    ("frame", "options", "missing"),
    [
        (  # every success zero: phi at 0, kappa flat
            pd.DataFrame({"g": list("abc"), "k": [0, 0, 0], "n": [1, 1, 4]}),
            {"successes": "k", "trials": "n"},
            {"phi", "kappa", "a", "b"},
        ),
        (  # every trial a success: phi at 1
            pd.DataFrame({"g": list("abc"), "k": [3, 5, 4], "n": [3, 5, 4]}),
            {"successes": "k", "trials": "n"},
            {"phi", "kappa", "a", "b"},
        ),
        (  # identical groups: kappa runs off to infinity, phi stays inside
            pd.DataFrame({"g": list("abcd"), "k": [2] * 4, "n": [5] * 4}),
            {"successes": "k", "trials": "n"},
            {"kappa", "a", "b"},
        ),
        (  # no counts at all: mu at 0
            pd.DataFrame({"g": list("abc"), "c": [0, 0, 0], "e": [1.0, 2.0, 3.0]}),
            {"counts": "c", "exposure": "e"},
            {"mu", "kappa", "alpha", "beta"},
        ),
        (
            pd.DataFrame({"g": list("abc"), "c": [0, 0, 0]}),
            {"counts": "c"},
            {"mu", "kappa", "alpha", "beta"},
        ),
        (  # estimates that agree exactly: tau at 0
            pd.DataFrame({"g": list("abcd"), "y": [1.0] * 4, "se": [1.0] * 4}),
            {"y": "y", "se": "se"},
            {"tau"},
        ),
        (  # one row a group: only tau² + sigma² is pinned down, a flat ridge
            pd.DataFrame({"g": list("abcd"), "y": [1.0, 3.0, 2.0, 5.0]}),
            {"y": "y"},
            {"tau", "sigma"},
        ),
        (  # complete pooling: phi alone, at 0
            pd.DataFrame({"g": list("abc"), "k": [0, 0, 0], "n": [1, 1, 4]}),
            {"successes": "k", "trials": "n", "pooling": "complete"},
            {"phi"},
        ),
        (  # huge trials: nothing at an edge
            pd.DataFrame(
                {"g": list("abcd"), "k": [10**8, 2 * 10**8, 15 * 10**7, 10**8], "n": [10**9] * 4}
            ),
            {"successes": "k", "trials": "n"},
            set(),
        ),
    ],
    ids=[
        "binomial-zero",
        "binomial-full",
        "binomial-same",
        "poisson-zero",
        "poisson-zero-no-exposure",
        "normal-se-same",
        "normal-one-row",
        "binomial-complete-zero",
        "binomial-huge",
    ],
)
def test_edges_give_numbers_or_named_missing_values(frame, options, missing):
    # before, all-zero successes overflowed the normal approximation's draws (a RuntimeWarning,
    # an error here, and NaN in the table) and edge rows got intervals of a normal the curvature
    # cannot give there; now a row the approximation says nothing about is missing and named
    # (no warning at all where nothing is missing: the suite turns warnings into errors)
    with pytest.warns(poolwise.PoolwiseWarning) if missing else nullcontext():
        fit = poolwise.fit(frame, group="g", method="eb", seed=1, **options)
    pop = fit.population
    assert np.isfinite(pop[["mean", "median"]].to_numpy()).all(), pop
    shown = pop[["sd", "hdi_low", "hdi_high"]]
    assert set(pop.index[shown.isna().any(axis=1)]) == missing == _named_missing(fit)
    assert shown.loc[list(missing)].isna().all(axis=None)
    assert np.isfinite(shown.drop(index=list(missing)).to_numpy()).all(), pop
    numbers = fit.groups.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(numbers).all(), fit.groups


# ---------------------------------------------------------------- intervals of the approximation
def _approximation(name, family, columns, group):
    stats_ = reduce(pd.read_csv(poolwise.example_path(name)), group, family, columns).stats
    run = run_engine(FAMILIES[family](), stats_, "partial", "eb", None)
    return run.model, run.posterior


def _transformed_normal_hdi(m, s, prob, natural):
    """HDI of natural(v), v ~ N(m, s²), natural the inverse of a log or logit link: the lower
    tail mass p at which the densities at both ends are equal (x's density is
    phi((v - m) / s) / |dx/dv|, and log |dx/dv| is v for exp, log x (1 - x) for expit)."""

    def ends(p):
        return m + s * special.ndtri(p), m + s * special.ndtri(p + prob)

    def log_density(v):
        x = natural(v)
        jac = np.log(x) if natural is np.exp else np.log(x) + np.log1p(-x)
        return -0.5 * ((v - m) / s) ** 2 - jac

    def gap(p):
        lo, hi = ends(p)
        return log_density(lo) - log_density(hi)

    p = optimize.brentq(gap, 1e-12, 1 - prob - 1e-12, xtol=1e-15, rtol=1e-15)
    return tuple(natural(v) for v in ends(p))


def _lognormal_hdi(m, s2, prob):
    """Closed form: log-ends a + b = 2 (m - s²), centred half-width c with the mass ``prob``."""
    s = np.sqrt(s2)
    c = optimize.brentq(
        lambda c: special.ndtr((c - s2) / s) - special.ndtr((-c - s2) / s) - prob,
        0.0,
        50 * s + s2,
        xtol=1e-15,
        rtol=1e-15,
    )
    return np.exp(m - s2 - c), np.exp(m - s2 + c)


def test_eb_hdis_are_those_of_the_lognormal_approximation():
    # Poisson: mu and kappa are free on the log scale, alpha = kappa and log beta = log kappa -
    # log mu are affine in them: every row is exactly log-normal
    model, post = _approximation(
        "pumps", "poisson", {"counts": "x_failures", "exposure": "t_thousand_hours"}, "pump"
    )
    (m_mu, m_k), cov = post.mode, post.cov
    fit = poolwise.fit(PUMPS, **PUMPS_COLUMNS, method="eb", hdi_prob=0.9)
    expected = {
        "mu": (m_mu, cov[0, 0]),
        "kappa": (m_k, cov[1, 1]),
        "alpha": (m_k, cov[1, 1]),
        "beta": (m_k - m_mu, cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]),
    }
    for name, (m, s2) in expected.items():
        lo, hi = _lognormal_hdi(m, s2, 0.9)
        row = fit.population.loc[name]
        # the solver's ends are accurate to ~1e-10 sd (beta's log-scale slope by differences)
        assert row["hdi_low"] == pytest.approx(lo, rel=1e-8), name
        assert row["hdi_high"] == pytest.approx(hi, rel=1e-8), name
        lo2, hi2 = _transformed_normal_hdi(m, np.sqrt(s2), 0.9, np.exp)
        assert (lo2, hi2) == pytest.approx((lo, hi), rel=1e-10)


def test_eb_hdis_of_logit_normal_and_linearised_rows():
    model, post = _approximation(
        "rat_tumors", "binomial", {"successes": "y", "trials": "n"}, "experiment"
    )
    (z_phi, z_k), cov = post.mode, post.cov
    fit = poolwise.fit(RATS, **RATS_COLUMNS, method="eb")
    pop = fit.population
    lo, hi = _transformed_normal_hdi(z_phi, np.sqrt(cov[0, 0]), 0.94, special.expit)
    assert pop.loc["phi", "hdi_low"] == pytest.approx(lo, rel=1e-8)
    assert pop.loc["phi", "hdi_high"] == pytest.approx(hi, rel=1e-8)
    # a = phi kappa and b = (1 - phi) kappa: log a = log expit(z_phi) + z_kappa is not affine;
    # the row is the log-normal of its linearisation at the estimate (gradient by hand)
    phi = special.expit(z_phi)
    for name, value, grad in [
        ("a", phi * np.exp(z_k), np.array([1 - phi, 1.0])),
        ("b", (1 - phi) * np.exp(z_k), np.array([-phi, 1.0])),
    ]:
        lo, hi = _lognormal_hdi(np.log(value), grad @ cov @ grad, 0.94)
        # central differences of step 1e-4 in z: relative error ~1e-8 in the slope
        assert pop.loc[name, "hdi_low"] == pytest.approx(lo, rel=1e-7), name
        assert pop.loc[name, "hdi_high"] == pytest.approx(hi, rel=1e-7), name


def test_eb_hdi_of_an_unbounded_location_is_the_normal_one():
    model, post = _approximation("dyes", "normal", {"y": "yield_g"}, "batch")
    t = model.transforms[0]
    sd = t.scale * np.sqrt(post.cov[0, 0])
    mu = t.loc + t.scale * post.mode[0]
    fit = poolwise.fit(
        pd.read_csv(poolwise.example_path("dyes")), group="batch", y="yield_g", method="eb"
    )
    lo, hi = stats.norm.interval(0.94, mu, sd)
    assert fit.population.loc["mu", "hdi_low"] == pytest.approx(lo, rel=1e-12)
    assert fit.population.loc["mu", "hdi_high"] == pytest.approx(hi, rel=1e-12)


@pytest.mark.parametrize("seed", [2, None])
def test_eb_tables_do_not_depend_on_the_seed(seed):
    # intervals come from the approximation's distribution, not from draws of it
    for frame, columns in [(RATS, RATS_COLUMNS), (PUMPS, PUMPS_COLUMNS)]:
        one = poolwise.fit(frame, method="eb", seed=1, **columns)
        other = poolwise.fit(frame, method="eb", seed=seed, **columns)
        pd.testing.assert_frame_equal(one.population, other.population, check_exact=True)
        pd.testing.assert_frame_equal(one.groups, other.groups, check_exact=True)
