"""One scalar factor of a binomial or poisson regression by adaptive Gauss–Hermite quadrature:
the model NUTS samples (zero-sum effects included), against long NUTS runs and direct sums."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise as pw

from . import REFERENCES, reference_script

references = reference_script("run_glmm_references")

N, H = pw.Normal, pw.HalfNormal
SEED_FORMULA = "p(opens, sent) ~ 1 + trial_control + (1|distribution)"
# the models of tests/reference/run_glmm_references.py, as poolwise formulas with their priors
MODELS = {
    "surgical": (
        "p(r_deaths, n_operations) ~ 1 + (1|hospital)",
        references.surgical_data,
        {},
        {"Intercept": N(-2.5, 2), "1|hospital_sigma": H(1)},
    ),
    "seeds": (
        "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
        references.seeds_data,
        {},
        {
            "Intercept": N(0, 2),
            "x1_seed_type": N(0, 2),
            "x2_root_extract": N(0, 2),
            "x1_seed_type:x2_root_extract": N(0, 2),
            "1|plate_sigma": H(1),
        },
    ),
    "bernoulli_small": (
        "y ~ 1 + x + (1|g)",
        references.bernoulli_small_data,
        {"family": "bernoulli"},
        {"Intercept": N(0, 2), "x": N(0, 1), "1|g_sigma": H(1)},
    ),
    "poisson_one": (
        "c ~ 1 + x + (1|g)",
        references.poisson_one_data,
        {"family": "poisson", "exposure": "t"},
        {"Intercept": N(0, 2), "x": N(0, 1), "1|g_sigma": H(1)},
    ),
}


def _fit(name: str, **options) -> pw.PoolFit:
    formula, data, kwargs, priors = MODELS[name]
    if name != "seeds":
        return pw.fit(formula, data=data(), priors=priors, seed=3, **kwargs, **options)
    # seeds' covariates vary between plates only: the check says the plates can trade with them
    with pytest.warns(pw.PoolwiseWarning, match="identifiability"):
        return pw.fit(formula, data=data(), priors=priors, seed=3, **kwargs, **options)


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_long_nuts(name):
    """Common effects and the group sd within 0.1 posterior sd in the mean and 10 % in the sd;
    each level's effect likewise (20,000 independent draws: Monte Carlo error 0.007 sd)."""
    fit = _fit(name, method="laplace", draws=20_000)
    assert fit.method == "laplace"
    assert "adaptive Gauss–Hermite, 15 nodes" in fit.method_reason
    ref = json.loads((REFERENCES / f"glmm_aghq_{name}.json").read_text())["parameters"]
    for parameter, value in ref.items():
        if isinstance(value, list):
            rows = fit.groups.loc[parameter]
            mean = np.array([v["mean"] for v in value])
            sd = np.array([v["sd"] for v in value])
            assert np.abs(rows["mean"].to_numpy() - mean).max() < 0.1 * sd.min()
            assert np.abs(rows["sd"].to_numpy() / sd - 1).max() < 0.1
            continue
        row = fit.population.loc[parameter]
        assert abs(row["mean"] - value["mean"]) < 0.1 * value["sd"], parameter
        assert abs(row["sd"] / value["sd"] - 1) < 0.1, parameter


def test_zero_sum_effects_are_the_nuts_model():
    """Two levels, intercept prior N(0, 0.5), sd fixed at 0.65 (sd^2 / J = 0.85 of the
    intercept's prior variance): the posterior of (Intercept, d) with d = (delta, -delta) by a
    direct sum on a grid, against the draws. Independent effects with that intercept prior
    would move the Intercept's sd by 12 % and its mean by 0.09 sd."""
    df = pd.DataFrame({"k": [2, 9], "n": [12, 12], "g": ["a", "b"]})
    fit = pw.fit(
        "p(k, n) ~ 1 + (1|g)",
        data=df,
        method="laplace",
        priors={"Intercept": N(0, 0.5), "1|g_sigma": 0.65},
        draws=40_000,
        seed=2,
    )
    a = np.linspace(-5, 5, 801)[:, None]
    delta = np.linspace(-5, 5, 801)[None, :]

    def log_post(a_prior_var):
        eta = [a + delta, a - delta]
        ll = sum(
            k * e - n * np.logaddexp(0, e) for k, n, e in zip([2, 9], [12, 12], eta, strict=True)
        )
        return ll - a**2 / (2 * a_prior_var) - 2 * delta**2 / (2 * 0.65**2)

    def moments(lp):
        w = np.exp(lp - lp.max())
        w /= w.sum()
        mean_a, mean_d = (w * a).sum(), (w * delta).sum()
        return mean_a, np.sqrt((w * (a - mean_a) ** 2).sum()), mean_d

    mean_a, sd_a, mean_d = moments(log_post(0.25))
    draws_a = fit.population.loc["Intercept"]
    assert abs(draws_a["mean"] - mean_a) < 4 * sd_a / np.sqrt(40_000)
    assert abs(draws_a["sd"] / sd_a - 1) < 0.015
    assert abs(fit.groups.loc[("1|g", "a"), "mean"] - mean_d) < 0.01
    # the independent-effects model with the same intercept prior: a visibly other posterior
    _, naive_sd, _ = moments(log_post(0.25 + 0.65**2 / 2))
    assert abs(naive_sd / sd_a - 1) > 0.1


def test_auto_takes_one_factor_regressions_and_laplace_refuses_the_rest():
    df = references.bernoulli_small_data()
    fit = pw.fit("y ~ 1 + x + (1|g)", data=df, family="bernoulli", seed=1, draws=400)
    assert fit.method == "laplace"
    assert fit.table is not None and fit.hyper_draws["1|g_sigma"].shape == (400,)
    assert "Gauss–Hermite" in fit.method_reason
    # crossed with g: two factors are the Laplace engine's, whose accuracy check flags these
    # tiny Bernoulli levels (auto would sample them by NUTS)
    df["h"] = np.arange(len(df)) % 3
    with pytest.warns(pw.PoolwiseWarning, match="Laplace approximation may be inaccurate"):
        two = pw.fit(
            "y ~ 1 + x + (1|g) + (1|h)",
            data=df,
            family="bernoulli",
            method="laplace",
            seed=1,
            draws=400,
        )
    assert two.method == "laplace" and "Gauss–Hermite" not in two.method_reason
    with pytest.raises(TypeError, match="chains not used by method='laplace'"):
        pw.fit("y ~ 1 + x + (1|g)", data=df, family="bernoulli", method="laplace", chains=2)


def test_the_default_priors_are_the_nuts_models():
    """The record keeps the priors the plan was built with: the same resolution as NUTS."""
    formula, data, _, _ = MODELS["seeds"]
    with pytest.warns(pw.PoolwiseWarning, match="identifiability"):
        fit = pw.fit(formula, data=data(), method="laplace", seed=1, draws=400)
    assert fit.priors["1|plate_sigma"] == H(1.0)
    assert isinstance(fit.priors["Intercept"], N)
    assert fit.plan.terms[0].zero_sum


def test_tables_are_the_quadratures_not_the_draws():
    """Levels with the same data get the same rows, and the tables do not move with the seed
    (nor with the number of draws): they are sums over the quadrature, not draw statistics."""
    df = pd.DataFrame(
        {
            "g": list("aabbccdd"),
            "x": [0, 1] * 4,
            "k": [3, 6, 3, 6, 1, 2, 8, 9],
            "n": [10, 10, 10, 10, 12, 12, 11, 11],
        }
    )
    one, two = (
        pw.fit("p(k, n) ~ 1 + x + (1|g)", data=df, method="laplace", seed=s, draws=d)
        for s, d in ((1, 400), (2, 1000))
    )
    assert one.info["engine"] == "aghq"
    pd.testing.assert_frame_equal(one.population, two.population)
    pd.testing.assert_frame_equal(one.groups, two.groups)
    pd.testing.assert_frame_equal(one.table, two.table)
    rows = one.groups.loc["1|g"]
    pd.testing.assert_series_equal(rows.loc["a"], rows.loc["b"], check_names=False)
    assert not rows.loc["a"].equals(rows.loc["c"])


def test_draws_are_made_when_first_read(monkeypatch):
    """The fit returns before its beta and level draws (the tables need none): they are made
    once, from the same random stream, when a verb first reads one of them, and are the same
    numbers whichever is read first; the sd's draws (the boundary note reads them) are there
    at once."""
    from poolwise.glmm import aghq

    calls = []
    real = aghq.sample_levels

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(aghq, "sample_levels", spy)
    df = pd.DataFrame(
        {"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7], "n": [10] * 6}
    )
    one, two = (
        pw.fit("p(k, n) ~ 1 + x + (1|g)", data=df, method="laplace", seed=5) for _ in range(2)
    )
    sd = one.hyper_draws["1|g_sigma"]
    assert calls == [] and sd.shape == (4000,)
    intercept = one.hyper_draws["Intercept"]
    assert len(calls) == 1 and intercept.shape == (4000,)
    effects = two.draws["1|g"][0]  # the other fit reads its levels first
    assert len(calls) == 2
    np.testing.assert_array_equal(two.draws["Intercept"][0], intercept)
    np.testing.assert_array_equal(two.hyper_draws["1|g_sigma"], sd)
    np.testing.assert_array_equal(one.draws["1|g"][0], effects)
    assert len(calls) == 2  # (each fit's draws made once for all their readers)
    assert list(one.draws) == ["Intercept", "x", "1|g_sigma", "1|g"]
    assert np.abs(effects.sum(axis=1)).max() < 1e-12  # zero-sum deviations


def test_tables_match_a_direct_integral():
    """Three levels, independent effects (as written): every posterior mean, sd and one level's
    HDI against a direct sum over (intercept, log sd, effect) on a dense grid (the effect as sd
    times a standard normal's grid, which resolves every sd). What is left is beta's Gaussian
    given the sd: 0.005 sd here; 400 draws' tables would be off by ~0.05 sd."""
    from poolwise.glmm.aghq import fit_aghq
    from poolwise.glmm.setup import prepare

    k, n = np.array([4, 9, 15]), np.array([30, 30, 30])
    df = pd.DataFrame({"g": list("abc"), "k": k, "n": n})
    priors = {"Intercept": N(0, 1.5), "1|g_sigma": H(1)}
    with pytest.warns(pw.PoolwiseWarning, match="identifiability"):
        prep = prepare("p(k, n) ~ 1 + (1|g)", df, priors=priors, parametrization="as-written")
    fit = fit_aghq(prep, seed=1, draws=400)
    mu = np.linspace(-4, 2.5, 131)[:, None, None]
    z = np.linspace(-9, 2.5, 161)[None, :, None]
    t = np.linspace(-9, 9, 181)[None, None, :]
    sd = np.exp(z)

    def level(j, b, scale):
        """log likelihood + log N(b | 0, sd^2) (up to a constant), for b = scale * t or b."""
        eta = mu + b
        return k[j] * eta - n[j] * np.logaddexp(0, eta) - 0.5 * (b / sd) ** 2 - np.log(scale)

    log_post = -0.5 * (mu[..., 0] / 1.5) ** 2 - 0.5 * sd[..., 0] ** 2 + z[..., 0]
    conditionals, log_norms = [], []
    for j in range(3):
        lt = level(j, sd * t, 1.0)
        top = lt.max(axis=2, keepdims=True)
        w = np.exp(lt - top)
        log_norms.append(np.log(w.sum(axis=2) * (t[0, 0, 1] - t[0, 0, 0])) + top[..., 0])
        log_post = log_post + log_norms[-1]
        conditionals.append(w / w.sum(axis=2, keepdims=True))
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()

    def moments(values, squares):
        mean = (weights * values).sum()
        return mean, np.sqrt((weights * squares).sum() - mean**2)

    expected = {
        ("Intercept",): moments(mu[..., 0], mu[..., 0] ** 2),
        ("1|g_sigma",): moments(sd[..., 0], sd[..., 0] ** 2),
    }
    for j, name in enumerate("abc"):
        e1 = (conditionals[j] * t).sum(axis=2) * sd[..., 0]
        e2 = (conditionals[j] * t**2).sum(axis=2) * sd[..., 0] ** 2
        expected[("1|g", name)] = moments(e1, e2)
    for key, (mean, sd_) in expected.items():
        row = fit.population.loc[key[0]] if len(key) == 1 else fit.groups.loc[key]
        assert abs(row["mean"] - mean) < 0.01 * sd_, key
        assert abs(row["sd"] / sd_ - 1) < 0.003, key
    # level a's marginal density on a grid of b, its shortest 94 % interval
    b = np.linspace(-4, 3, 701)[None, None, :]
    density = np.einsum("ms,msb->b", weights, np.exp(level(0, b, sd) - log_norms[0][..., None]))
    cdf = np.r_[0.0, np.cumsum(density[1:] + density[:-1])]
    cdf /= cdf[-1]
    low = np.linspace(0.0, 0.06, 20_001)
    ends = np.interp(low, cdf, b[0, 0]), np.interp(low + 0.94, cdf, b[0, 0])
    best = np.argmin(ends[1] - ends[0])
    row, sd_a = fit.groups.loc[("1|g", "a")], expected[("1|g", "a")][1]
    assert abs(row["hdi_low"] - ends[0][best]) < 0.03 * sd_a
    assert abs(row["hdi_high"] - ends[1][best]) < 0.03 * sd_a


def _smooth_sd_interval(post, prob: float) -> tuple[float, float, float]:
    """The sd's HDI and median from its density on the grid: a cubic spline of the log weights
    in the grid's even coordinate v, evaluated finely; below the grid the density of sd taken
    flat at the lowest point's value (the interval then starts at zero)."""
    from scipy.interpolate import CubicSpline

    g = post.grid
    v = np.linspace(post.v.min(), post.v.max(), 400_001)
    dv = v[1] - v[0]
    f_v = np.exp(CubicSpline(post.v, np.log(post.weights))(v))
    x = np.exp(g.mode[0] + g.chol[0, 0] * np.sinh(v))
    f_x = f_v / (g.chol[0, 0] * np.cosh(v) * x)
    x, f_x = np.r_[x[0] / 2, x], np.r_[f_x[0], f_x]
    mass = np.r_[f_x[0] * x[1], f_v * dv]
    mass /= mass.sum()
    order = np.argsort(-f_x, kind="stable")
    inside = order[: np.searchsorted(np.cumsum(mass[order]), prob) + 1]
    median = x[np.searchsorted(np.cumsum(mass), 0.5)]
    return (0.0 if 0 in inside else x[inside].min()), x[inside].max(), median


@pytest.mark.parametrize(
    "name, prob", [("surgical", 0.8), ("poisson_one", 0.94), ("seeds", 0.94), ("seed", 0.94)]
)
def test_the_sd_row_is_the_grids_smooth_density(name, prob):
    """The sd's median and HDI against its density on the grid, smoothed by a spline, within
    0.01 posterior sd (a normal per grid point over its cell leaves ripples of ~40 % in the
    density, whose crossings put these intervals at [0, 0.57], [0, 1.31] and [0.071, 0.626];
    the seed model's runs from zero)."""
    from poolwise.glmm.aghq import _posterior
    from poolwise.glmm.setup import prepare

    if name == "seed":
        seeds = reference_script("run_laplace_references")
        formula, data, kwargs = SEED_FORMULA, seeds.seed_model_data(), {}
        priors = None
    else:
        formula, make, kwargs, priors = MODELS[name]
        data = make()
    with warnings.catch_warnings():  # (the seed model's sd at zero; seeds' plates)
        warnings.simplefilter("ignore", pw.PoolwiseWarning)
        fit = pw.fit(formula, data, priors=priors, method="laplace", hdi_prob=prob, **kwargs)
        post = _posterior(prepare(formula, data, priors=priors, **kwargs), 15)
    row = fit.population.loc[fit.design.groups[0].sigma_name]
    lo, hi, median = _smooth_sd_interval(post, prob)
    tol = 0.01 * row["sd"]
    assert abs(row["hdi_low"] - lo) < tol and abs(row["hdi_high"] - hi) < tol, (row, lo, hi)
    assert abs(row["median"] - median) < tol
    assert (row["hdi_low"] == 0) == (lo == 0)


@pytest.mark.parametrize("u", [2.0, 3.0])
def test_tail_share_beyond_the_bound_bounds_a_normals_tail(u):
    # a standard normal in log sd: the share beyond u is the normal's upper tail; the estimate
    # (the tail continued along the last step's slope) lies above it, by Mills' ratio's margin
    from scipy.special import ndtr

    from poolwise.glmm.aghq import _tail_share

    share, top = _tail_share(lambda z: -0.5 * z[:, 0] ** 2, u)
    exact = ndtr(-u)
    assert exact < share < 1.5 * exact
    # the parabola through the line's highest point and its neighbours tops at the mode
    assert abs(top) < 1e-12


def test_a_posterior_far_beyond_the_bound_is_declined_before_the_grid():
    # 20 Bernoulli levels of 2-5 rows, a wide sd prior against a Normal(0, 1) intercept: the
    # zero-sum effects' independent form needs sd^2 < 20; the sd's posterior has most of its
    # mass beyond, so the fit goes to the Laplace engine at once (the grid, against the density's
    # wall at the bound, took six minutes), which says why
    from poolwise.simulate_formula import FORMULAS, PRIORS, simulate_regression

    priors = {**PRIORS["bernoulli"], "1|group_sigma": pw.HalfNormal(2.5)}
    df, _, _ = simulate_regression((2, 3, 4, 5) * 5, priors, 4, family="bernoulli")
    with pytest.warns(pw.PoolwiseWarning, match="may be inaccurate"):  # the engine's own check
        fit = pw.fit(
            FORMULAS["bernoulli"], df, family="bernoulli", method="laplace", priors=priors, seed=1
        )
    assert fit.info["engine"] == "laplace"
    assert "reaches sd^2 = levels x the intercept's prior variance" in fit.method_reason
