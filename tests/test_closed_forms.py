"""Every family and pooling against a conjugate closed form."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import poolwise

RNG = np.random.default_rng(20261122)


def binomial_rows():
    return pd.DataFrame({"g": list("abcde"), "k": [3, 0, 12, 7, 1], "n": [10, 4, 30, 9, 2]})


def test_binomial_complete_pooling_is_the_beta_posterior_of_all_data():
    df = binomial_rows()
    fit = poolwise.fit(
        df,
        group="g",
        successes="k",
        trials="n",
        pooling="complete",
        priors={"phi": poolwise.Beta(2, 3)},
        seed=0,
    )
    post = stats.beta(2 + df.k.sum(), 3 + (df.n - df.k).sum())
    assert fit.population.loc["phi", "mean"] == pytest.approx(post.mean(), rel=1e-7)
    assert fit.population.loc["phi", "sd"] == pytest.approx(post.std(), rel=1e-5)
    np.testing.assert_allclose(fit.groups["mean"], post.mean(), rtol=1e-7)
    np.testing.assert_allclose(fit.groups["shrinkage"], 1.0)
    # the 94% HDI from 4000 draws: Monte Carlo error of an endpoint ~ 0.05 sd
    lo, hi = fit.groups.iloc[0][["hdi_low", "hdi_high"]]
    assert post.cdf(hi) - post.cdf(lo) == pytest.approx(0.94, abs=0.01)


def test_poisson_complete_pooling_is_the_gamma_posterior():
    c, e = np.array([5, 1, 5, 14, 3]), np.array([94.3, 15.7, 62.9, 126.0, 5.24])
    df = pd.DataFrame({"g": range(5), "c": c, "e": e})
    fit = poolwise.fit(
        df,
        group="g",
        counts="c",
        exposure="e",
        pooling="complete",
        priors={"mu": poolwise.Gamma(2.0, 10.0)},
        seed=0,
    )
    post = stats.gamma(2.0 + c.sum(), scale=1 / (10.0 + e.sum()))
    assert fit.population.loc["mu", "mean"] == pytest.approx(post.mean(), rel=1e-7)
    assert fit.population.loc["mu", "sd"] == pytest.approx(post.std(), rel=1e-5)


def test_known_se_complete_pooling_is_the_precision_weighted_mean():
    y, s = np.array([28.0, 8, -3, 7]), np.array([15.0, 10, 16, 11])
    df = pd.DataFrame({"g": list("ABCD"), "y": y, "s": s})
    fit = poolwise.fit(
        df,
        group="g",
        y="y",
        se="s",
        pooling="complete",
        priors={"mu": poolwise.Normal(0, 100)},
        seed=0,
    )
    precision = (1 / s**2).sum() + 1 / 100**2
    assert fit.population.loc["mu", "mean"] == pytest.approx((y / s**2).sum() / precision, rel=1e-7)
    assert fit.population.loc["mu", "sd"] == pytest.approx(precision**-0.5, rel=1e-6)


def test_known_se_no_pooling_uses_the_mu_prior_for_each_group():
    y, s = np.array([28.0, 8, -3]), np.array([15.0, 10, 16])
    df = pd.DataFrame({"g": list("ABC"), "y": y, "s": s})
    fit = poolwise.fit(
        df, group="g", y="y", se="s", pooling="none", priors={"mu": poolwise.Normal(5, 10)}, seed=0
    )
    b = s**2 / (s**2 + 100)
    np.testing.assert_allclose(fit.groups["mean"], b * 5 + (1 - b) * y, rtol=1e-12)
    np.testing.assert_allclose(fit.groups["sd"], np.sqrt((1 - b) * s**2), rtol=1e-12)
    np.testing.assert_allclose(fit.groups["shrinkage"], b, rtol=1e-12)


def test_normal_rows_fixed_population_is_the_blog_formula():
    # theta_j | data = (n ybar / sigma² + mu / tau²) / (n / sigma² + 1 / tau²)
    df = pd.DataFrame({"g": [0, 0, 0, 1, 1, 2], "y": [60.0, 70, 65, 50, 52, 80]})
    mu, tau, sigma = 63.0, 2.0, 10.0
    fit = poolwise.fit(df, group="g", y="y", priors={"mu": mu, "tau": tau, "sigma": sigma}, seed=0)
    g = df.groupby("g")["y"]
    n, ybar = g.size().to_numpy(), g.mean().to_numpy()
    expected = (n * ybar / sigma**2 + mu / tau**2) / (n / sigma**2 + 1 / tau**2)
    np.testing.assert_allclose(fit.groups["mean"], expected, rtol=1e-12)
    np.testing.assert_allclose(
        fit.groups["shrinkage"], sigma**2 / (sigma**2 + n * tau**2), rtol=1e-12
    )


def test_normal_rows_within_sd_posterior_with_everything_else_fixed():
    # with mu, tau fixed the posterior of sigma is one-dimensional: integrate it on a fine grid
    df = pd.DataFrame({"g": np.repeat([0, 1, 2], [5, 8, 3]), "y": RNG.normal(0, 2, 16)})
    prior = poolwise.HalfNormal(5.0)
    fit = poolwise.fit(df, group="g", y="y", priors={"mu": 0.0, "tau": 1.0, "sigma": prior}, seed=0)
    sig = np.linspace(1e-3, 15, 200_001)
    g = df.groupby("g")["y"]
    n, ybar, m2 = (
        g.size().to_numpy(),
        g.mean().to_numpy(),
        g.var(ddof=0).to_numpy() * g.size().to_numpy(),
    )
    s2 = sig[:, None] ** 2
    lp = (
        -(n - 1) / 2 * np.log(s2) - m2 / (2 * s2) + stats.norm.logpdf(ybar, 0, np.sqrt(1 + s2 / n))
    ).sum(1)
    lp += stats.halfnorm.logpdf(sig, scale=5)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    assert fit.population.loc["sigma", "mean"] == pytest.approx(w @ sig, rel=1e-6)


def test_beta_binomial_partial_pooling_against_two_dimensional_grid():
    df = binomial_rows()
    priors = {"phi": poolwise.Beta(2, 2), "kappa": poolwise.Gamma(2.0, 0.2)}
    fit = poolwise.fit(df, group="g", successes="k", trials="n", priors=priors, seed=0)
    phi = np.linspace(1e-4, 1 - 1e-4, 1501)[:, None]
    kappa = np.linspace(1e-3, 150, 3001)[None, :]
    a, b = phi * kappa, (1 - phi) * kappa
    lp = stats.beta.logpdf(phi, 2, 2) + stats.gamma.logpdf(kappa, 2.0, scale=5.0)
    for k, n in zip(df.k, df.n, strict=True):
        lp = lp + stats.betabinom.logpmf(k, n, a, b)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    assert fit.population.loc["phi", "mean"] == pytest.approx((w * phi).sum(), rel=1e-4)
    assert fit.population.loc["kappa", "mean"] == pytest.approx((w * kappa).sum(), rel=1e-3)
    theta_c = (w * (a + 12) / (kappa + 30)).sum()
    assert fit.groups.loc["c", "mean"] == pytest.approx(theta_c, rel=1e-4)


def test_binomial_no_pooling_default_is_a_uniform_prior_per_group():
    df = binomial_rows()
    fit = poolwise.fit(df, group="g", successes="k", trials="n", pooling="none", seed=0)
    np.testing.assert_allclose(fit.groups["mean"], (1 + df.k) / (2 + df.n), rtol=1e-12)
    assert fit.method == "exact" and fit.priors["a"] == 1.0 and fit.priors["b"] == 1.0


def test_poisson_no_pooling_with_a_fixed_gamma_population():
    df = pd.DataFrame({"g": list("abc"), "c": [0, 4, 9], "e": [2.0, 3.0, 10.0]})
    fit = poolwise.fit(
        df,
        group="g",
        counts="c",
        exposure="e",
        pooling="none",
        priors={"alpha": 2.0, "beta": 1.0},
        seed=0,
    )
    np.testing.assert_allclose(fit.groups["mean"], (2 + df.c) / (1 + df.e), rtol=1e-12)
    np.testing.assert_allclose(fit.groups["sd"], np.sqrt(2 + df.c) / (1 + df.e), rtol=1e-12)


def test_normal_rows_complete_pooling_is_one_normal_mean():
    # with sigma fixed, mu given all rows is the conjugate normal posterior
    df = pd.DataFrame({"g": np.repeat([0, 1, 2], [4, 2, 6]), "y": RNG.normal(3, 2, 12)})
    fit = poolwise.fit(
        df,
        group="g",
        y="y",
        pooling="complete",
        priors={"mu": poolwise.Normal(0, 10), "sigma": 2.0},
        seed=0,
    )
    precision = len(df) / 4 + 1 / 100
    assert fit.population.loc["mu", "mean"] == pytest.approx(df.y.sum() / 4 / precision, rel=1e-9)
    assert fit.population.loc["mu", "sd"] == pytest.approx(precision**-0.5, rel=1e-6)
    np.testing.assert_allclose(fit.groups["mean"], fit.population.loc["mu", "mean"], rtol=1e-9)
