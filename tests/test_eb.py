"""Empirical Bayes against a direct scipy maximisation of the same marginal likelihood."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import poolwise

RATS = pd.read_csv(poolwise.example_path("rat_tumors"))
PUMPS = pd.read_csv(poolwise.example_path("pumps"))


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
