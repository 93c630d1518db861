"""Formula fits by the Laplace engine: against long NUTS runs, the verbs, the routes of method.

References: tests/reference/run_glmm_references.py (numpyro, 4 x 10,000 draws). Criterion:
every common effect and group sd within 0.1 posterior sd of the reference mean, and its sd
within 10 %; the references' own Monte Carlo error is below 0.01 sd in the mean.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise import HalfNormal, Normal, PoolwiseWarning, Uniform

from . import REFERENCES, reference_script

references = reference_script("run_glmm_references")

CROSSED_PRIORS = {
    "Intercept": Normal(0, 2),
    "x": Normal(0, 1),
    "1|a_sigma": HalfNormal(1),
    "1|b_sigma": HalfNormal(1),
}
RADON_PRIORS = {
    "Intercept": Normal(1.5, 2),
    "floor": Normal(0, 2),
    "1|county_sigma": HalfNormal(1),
    "sigma": HalfNormal(2),
}


def _close(fit, reference: str, rows: list[str], mean_tol=0.1, sd_tol=0.1):
    """Means within ``mean_tol`` posterior sds and sds within ``sd_tol`` of the reference's,
    each widened by three of the reference's own Monte Carlo errors (negligible for the long
    runs; 7 % of the sd for the seed model's group sd, whose three levels give it a heavy tail,
    kurtosis 33)."""
    stored = json.loads((REFERENCES / f"glmm_{reference}.json").read_text())["parameters"]
    s = fit.summary()
    for row in rows:
        name, _, level = row.partition("[")
        r = stored[name]
        if level:
            r = r[list(fit.groups.loc[name].index.astype(str)).index(level[:-1])]
        tol = math.hypot(mean_tol * r["sd"], 3 * r["mcse_mean"])
        assert abs(s.loc[row, "mean"] - r["mean"]) < tol, (row, s.loc[row], r)
        mc = math.sqrt((r["kurtosis"] - 1) / (4 * r["ess_square"]))
        rel = math.hypot(sd_tol, 3 * mc)
        assert abs(s.loc[row, "sd"] / r["sd"] - 1) < rel, (row, s.loc[row, "sd"], r["sd"])


def _radon(seed: int):
    return poolwise.fit(
        "log_radon ~ 1 + floor + (1|county)",
        data=references.radon_data(),
        priors=RADON_PRIORS,
        method="laplace",
        seed=seed,
    )


@pytest.fixture(scope="module")
def radon_fit():
    return _radon(5)


def test_radon_agrees_with_reference(radon_fit):
    # a normal outcome: the Laplace marginal is exact, only quadrature error is left
    rows = ["Intercept", "floor", "1|county_sigma", "sigma", "1|county[AITKIN]"]
    _close(radon_fit, "radon", [*rows, "1|county[ST LOUIS]"])
    assert radon_fit.method == "laplace" and radon_fit.divergences == 0


def test_binomial_crossed_agrees_with_reference():
    df = references.binomial_crossed_data()
    fit = poolwise.fit(
        "p(k, n) ~ 1 + x + (1|a) + (1|b)", data=df, priors=CROSSED_PRIORS, method="laplace", seed=5
    )
    rows = ["Intercept", "x", "1|a_sigma", "1|b_sigma", "1|a[0]", "1|b[5]"]
    _close(fit, "binomial_crossed", rows)


def test_poisson_crossed_with_exposure_agrees_with_reference():
    df = references.poisson_crossed_data()
    fit = poolwise.fit(
        "c ~ 1 + x + (1|a) + (1|b) + offset(log(t))",
        data=df,
        priors=CROSSED_PRIORS,
        method="laplace",
        seed=5,
    )
    _close(fit, "poisson_crossed", ["Intercept", "x", "1|a_sigma", "1|b_sigma", "1|a[3]"])


def test_tables_are_exact_mixtures_and_draws_follow_them(radon_fit):
    # the tables carry no Monte Carlo noise: the same on every seed
    again = _radon(6)
    pd.testing.assert_frame_equal(radon_fit.population, again.population)
    pd.testing.assert_frame_equal(radon_fit.groups, again.groups)
    # the draws come from the same posterior: means within 4 Monte Carlo standard errors
    for name in ["Intercept", "floor", "1|county_sigma", "sigma"]:
        d = radon_fit.draws[name].reshape(-1)
        row = radon_fit.population.loc[name]
        assert abs(d.mean() - row["mean"]) < 4 * row["sd"] / np.sqrt(d.size), name
        assert abs(d.std() / row["sd"] - 1) < 0.1, name
    lo, hi = radon_fit.population.loc["floor", ["hdi_low", "hdi_high"]]
    assert lo < radon_fit.population.loc["floor", "median"] < hi


def test_every_verb_works(radon_fit, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    assert "r_hat" in radon_fit.summary().columns
    idata = radon_fit.to_arviz()
    assert idata.posterior["floor"].shape == (1, 4000)
    assert idata.attrs["method"] == "laplace"
    new = pd.DataFrame({"floor": [0, 1], "county": ["AITKIN", "nowhere"]})
    pred = radon_fit.predict(new, unseen="population")
    assert pred.shape[0] == 2 and np.all(np.isfinite(pred.select_dtypes("number").to_numpy()))
    assert len(radon_fit.ranks()) == 85
    radon_fit.plot_forest()
    radon_fit.plot_shrinkage()
    assert radon_fit.factor().groups.shape[0] == 85
    assert radon_fit.check(draws=200, seed=1) is not None


def test_eb_is_close_to_laplace_and_warns_of_a_singular_fit(radon_fit):
    df = references.radon_data()
    eb = poolwise.fit("log_radon ~ 1 + floor + (1|county)", data=df, method="eb", seed=1)
    assert eb.method == "eb"
    pop, ref = eb.population, radon_fit.population
    for name in ["Intercept", "floor"]:
        assert abs(pop.loc[name, "mean"] - ref.loc[name, "mean"]) < 0.05 * ref.loc[name, "sd"]
    # the maximum of the marginal likelihood lies below the posterior mean of a group sd
    assert 0.8 < pop.loc["1|county_sigma", "mean"] / ref.loc["1|county_sigma", "mean"] < 1.0
    # a factor whose levels do not differ: its sd runs to zero, and the fit says so
    rng = np.random.default_rng(3)
    flat = pd.DataFrame({"g": np.repeat(list("abcdefgh"), 30), "x": rng.normal(size=240)})
    noise = pd.Series(rng.normal(size=240))
    flat["y"] = 1 + 0.5 * flat["x"] + noise - noise.groupby(flat["g"]).transform("mean")
    with pytest.warns(PoolwiseWarning, match="singular fit"):
        fit = poolwise.fit("y ~ 1 + x + (1|g)", data=flat, method="eb", seed=1)
    assert np.isnan(fit.population.loc["1|g_sigma", "sd"])


def test_auto_uses_laplace_and_says_why():
    df = references.binomial_crossed_data()
    fit = poolwise.fit("p(k, n) ~ 1 + x + (1|a) + (1|b)", data=df, seed=1)
    assert fit.method == "laplace" and fit.method_reason.startswith("auto: Laplace")


def test_auto_goes_to_nuts_for_nuts_options_and_other_priors(monkeypatch):
    from poolwise.glmm import fit as route

    calls = []

    def fake(formula, data, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("NUTS called")

    monkeypatch.setattr(route, "fit_formula", fake)
    df = references.binomial_crossed_data()
    with pytest.raises(RuntimeError, match="NUTS called"):
        poolwise.fit("p(k, n) ~ 1 + x + (1|a)", data=df, chains=2)
    assert calls[-1]["chains"] == 2
    with pytest.raises(RuntimeError, match="NUTS called"):
        poolwise.fit("p(k, n) ~ 1 + x + (1|a)", data=df, priors={"x": Uniform(-5, 5)})
    with pytest.raises(TypeError, match="chains"):
        poolwise.fit("p(k, n) ~ 1 + x + (1|a)", data=df, method="laplace", chains=2)
    with pytest.raises(TypeError, match="tune"):
        poolwise.fit("p(k, n) ~ 1 + x + (1|a)", data=df, method="eb", tune=20)
    with pytest.raises(ValueError, match="Uniform"):
        poolwise.fit(
            "p(k, n) ~ 1 + x + (1|a)", data=df, method="laplace", priors={"x": Uniform(-5, 5)}
        )


def test_more_than_three_variance_parameters_use_a_central_composite_design():
    rng = np.random.default_rng(11)
    n = 600
    df = pd.DataFrame(
        {"a": rng.integers(0, 6, n), "b": rng.integers(0, 5, n), "c": rng.integers(0, 4, n)}
    )
    df["y"] = rng.normal(0, 0.6, 6)[df["a"]] + rng.normal(0, 0.4, 5)[df["b"]] + rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoolwiseWarning)
        fit = poolwise.fit("y ~ 1 + (1|a) + (1|b) + (1|c)", data=df, method="laplace", seed=1)
    assert fit.info["design"] == "central composite" and fit.info["grid_points"] == 25
    assert np.isfinite(fit.population.to_numpy()).all()


# five more models, references by tests/reference/run_laplace_references.py (4 x 2,000 draws)
laplace_refs = reference_script("run_laplace_references")
FEW_PRIORS = {"Intercept": Normal(0, 2), "x": Normal(0, 1), "1|g_sigma": HalfNormal(1)}


def test_seed_model_with_default_priors_agrees_with_reference():
    # the sd sits near zero: information about the data (kept), no warning about computation
    with pytest.warns(PoolwiseWarning, match="lower boundary") as caught:
        fit = poolwise.fit(
            "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
            data=laplace_refs.seed_model_data(),
            seed=1,
        )
    assert len(caught) == 1
    assert fit.method == "laplace"
    # the reference wrote poolwise's default priors out
    assert fit.priors["Intercept"] == Normal(laplace_refs.seed_model_intercept_loc(), 2.5)
    assert fit.priors["trial_control"] == Normal(0, 5.0)
    assert fit.priors["1|distribution_sigma"] == HalfNormal(1.0)
    rows = ["Intercept", "trial_control", "1|distribution_sigma", "1|distribution[0]"]
    _close(fit, "seed_model", rows)


def test_bugs_seeds_agrees_with_reference():
    common = ["Intercept", "x1_seed_type", "x2_root_extract", "x1_seed_type:x2_root_extract"]
    # each plate is one cell of one (x1, x2): the plates' effects can trade with the common
    # ones, which only the sd's prior settles, and poolwise says so
    with pytest.warns(PoolwiseWarning, match="identifiability"):
        fit = poolwise.fit(
            "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
            data=laplace_refs.seeds_data(),
            priors={**dict.fromkeys(common, Normal(0, 10)), "1|plate_sigma": HalfNormal(1)},
            method="laplace",
            seed=1,
        )
    _close(fit, "seeds", [*common, "1|plate_sigma", "1|plate[1]"])


def test_binomial_with_few_trials_agrees_with_reference():
    fit = poolwise.fit(
        "p(k, n) ~ 1 + x + (1|g)",
        data=laplace_refs.binomial_few_data(),
        priors=FEW_PRIORS,
        method="laplace",
        seed=1,
    )
    # one factor: method="laplace" integrates it by adaptive Gauss–Hermite quadrature (exact);
    # measured within 0.08 sd in the means and 2 % in the sds. The Laplace engine itself, with
    # its skewness correction, on this model: tests/glmm/test_skewness.py
    _close(fit, "binomial_few", ["Intercept", "x", "1|g_sigma", "1|g[0]"])


def test_bernoulli_with_small_levels_agrees_with_reference():
    fit = poolwise.fit(
        "y ~ 1 + x + (1|g)",
        data=laplace_refs.bernoulli_small_data(),
        family="bernoulli",
        priors=FEW_PRIORS,
        method="laplace",
        seed=1,
    )
    # one factor: adaptive Gauss–Hermite quadrature, as above; measured within 0.05 sd in the
    # means and 3 % in the sds (the Laplace engine: tests/glmm/test_skewness.py)
    rows = ["Intercept", "x", "1|g_sigma", "1|g[0]"]
    _close(fit, "bernoulli_small", rows)


def test_poisson_with_three_factors_agrees_with_reference():
    sds = {f"1|{f}_sigma": HalfNormal(1) for f in ("a", "b", "a:c")}
    fit = poolwise.fit(
        "y ~ 1 + x + (1|a) + (1|b) + (1|a:c)",
        data=laplace_refs.poisson_three_data(),
        family="poisson",
        priors={"Intercept": Normal(0, 2), "x": Normal(0, 1), **sds},
        method="laplace",
        seed=1,
    )
    assert fit.info["grid_points"] > 100  # three sds: a grid, not a central composite design
    _close(fit, "poisson_three", ["Intercept", "x", *sds])


def test_sd_intervals_hold_on_a_finer_grid(radon_fit, monkeypatch):
    """The sds' rows smooth each point of a grid four times finer than the evaluated one (its
    densities interpolated) over its cell by a fourth-order kernel (error O(spacing^4)); the
    default grid's HDIs agree with those of a grid with twice the points a side to 0.005 sd
    (measured: 5e-4; a normal over each cell of the evaluated grid, O(spacing^2), was 0.05-0.1
    sd off)."""
    from poolwise.glmm import laplace

    monkeypatch.setattr(laplace, "GRID_MOMENT_TOL", 1e-5)
    fine = _radon(5)
    assert fine.info["grid_points"] > 2 * radon_fit.info["grid_points"]
    for row in ("1|county_sigma", "sigma"):
        a, b = radon_fit.population.loc[row], fine.population.loc[row]
        for end in ("hdi_low", "hdi_high", "median"):
            assert abs(a[end] - b[end]) < 0.005 * b["sd"], (row, end, a[end], b[end])


def test_cell_smoothing_is_taken_out_of_the_intervals():
    """A normal's points on an even grid, each smoothed by a normal of its cell's variance: the
    mixture's HDI is too wide by that variance, and pulled in it is the normal's own (to 1e-4
    of its sd)."""
    from poolwise.glmm.laplace import _mixture_rows, _pulled_in

    mu, sd, h = 0.3, 0.5, 0.25
    x = mu + h * np.arange(-40, 41)
    w = np.exp(-0.5 * ((x - mu) / sd) ** 2)
    w /= w.sum()
    var = np.full((x.size, 1), h**2 / 12 * 8)  # wider than the cell: the pull-in is visible
    _, _, _, lo, hi = _mixture_rows(w, x[:, None], var, 0.94)
    assert hi[0] - lo[0] > 2 * 1.8808 * sd * 1.01
    lo, hi = _pulled_in((lo, hi), "identity", w, x[:, None], var)
    np.testing.assert_allclose(
        [lo[0], hi[0]], [mu - 1.880794 * sd, mu + 1.880794 * sd], atol=1e-4 * sd
    )


def test_effects_draws_are_made_once_when_first_read(monkeypatch):
    """The tables need no draws: a Laplace fit of a small factor makes the effects' draws only
    when one is first read, once for all of them, and they follow the tables (Monte Carlo
    error of 4,000 draws)."""
    from poolwise.engines.latent import Conditional

    calls = []
    real = Conditional.sample
    monkeypatch.setattr(Conditional, "sample", lambda self, *a: calls.append(1) or real(self, *a))
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 6)
    x = rng.normal(size=g.size)
    df = pd.DataFrame(
        {"g": g, "x": x, "y": 1 + 0.5 * x + rng.normal(0, 0.7, 12)[g] + rng.normal(size=g.size)}
    )
    fit = poolwise.fit("y ~ x + (1|g)", df, method="laplace", seed=2)
    assert calls == []
    slope = fit.draws["x"].reshape(-1)
    levels = fit.draws["1|g"].reshape(-1, 12)
    assert calls == [1]
    row = fit.population.loc["x"]
    assert abs(slope.mean() - row["mean"]) < 4 * row["sd"] / math.sqrt(slope.size)
    table = fit.groups
    assert levels.shape == (4000, 12) and np.isfinite(levels).all()
    assert len(table) == 12


def test_draws_of_conditionals_too_large_to_hold_are_made_afresh_alike(monkeypatch):
    """Where the conditionals are too large for the fit to hold, the effects' draws are made
    afresh when first read: the same numbers as from the held conditionals (to rounding: the
    points factored in other batches)."""
    import poolwise.glmm.laplace as laplace
    from poolwise.engines.latent import LatentModel

    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(10), 5)
    df = pd.DataFrame({"g": g, "y": rng.normal(0, 0.8, 10)[g] + rng.normal(size=g.size)})
    held = poolwise.fit("y ~ 1 + (1|g)", df, method="laplace", seed=3)
    monkeypatch.setattr(laplace, "BATCH_FLOATS", 0)
    let_go, forget = [], LatentModel.forget
    monkeypatch.setattr(LatentModel, "forget", lambda self: let_go.append(1) or forget(self))
    afresh = poolwise.fit("y ~ 1 + (1|g)", df, method="laplace", seed=3)
    assert let_go == [1]
    pd.testing.assert_frame_equal(afresh.groups, held.groups)
    np.testing.assert_allclose(afresh.draws["1|g"], held.draws["1|g"], rtol=1e-12, atol=1e-14)


def _grid_moments(log_post, axes):
    """Posterior means and sds on a fine uniform product grid whose edges the density never
    reaches."""
    mesh = np.meshgrid(*axes, indexing="ij")
    lp = log_post(*mesh)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    means = [float((w * m).sum()) for m in mesh]
    sds = [math.sqrt(float((w * (m - mu) ** 2).sum())) for m, mu in zip(mesh, means, strict=True)]
    return means, sds


def test_formulas_without_group_terms_agree_with_direct_quadrature():
    """No grouping factor: the common effects alone (a Bayesian GLM, complete pooling), against the
    posterior summed on a fine grid under the fit's own priors."""
    from scipy.special import expit

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=50), "n": 10})
    df["k"] = rng.binomial(10, expit(-0.8 + 0.3 * df["x"]))
    df["y"] = 1 + df["x"] + rng.normal(size=50)
    x, k, n, y = (df[c].to_numpy(float) for c in ("x", "k", "n", "y"))

    fit = poolwise.fit("p(k, n) ~ x", df, method="laplace")
    (a0, b0) = (fit.priors[c] for c in ("Intercept", "x"))

    def binomial(a, b):
        eta = a[..., None] + b[..., None] * x
        loglik = (k * eta - n * np.logaddexp(0, eta)).sum(axis=-1)
        return loglik - 0.5 * ((a - a0.mu) / a0.sigma) ** 2 - 0.5 * ((b - b0.mu) / b0.sigma) ** 2

    axes = [
        np.linspace(m - 7 * s, m + 7 * s, 301) for m, s in fit.population[["mean", "sd"]].values
    ]
    means, sds = _grid_moments(binomial, axes)
    for method in ("laplace", "auto"):
        table = poolwise.fit("p(k, n) ~ x", df, method=method).population
        assert np.abs((table["mean"] - means) / sds).max() < 0.01  # measured 2e-5
        assert np.abs(table["sd"] / sds - 1).max() < 0.01  # measured 0.0034

    fit = poolwise.fit("y ~ x", df, method="laplace")
    a0, b0, s0 = (fit.priors[c] for c in ("Intercept", "x", "sigma"))

    def normal(a, b, s):
        resid = y - a[..., None] - b[..., None] * x
        loglik = -len(y) * np.log(s) - 0.5 * (resid**2).sum(axis=-1) / s**2
        prior = -0.5 * (((a - a0.mu) / a0.sigma) ** 2 + ((b - b0.mu) / b0.sigma) ** 2)
        return loglik + prior - 0.5 * (s / s0.sigma) ** 2

    pop = fit.population
    axes = [np.linspace(m - 7 * s, m + 7 * s, 121) for m, s in pop[["mean", "sd"]].values]
    axes[2] = axes[2][axes[2] > 0]
    means, sds = _grid_moments(normal, axes)
    assert np.abs((pop["mean"] - means) / sds).max() < 1e-3  # measured 2e-5
    assert np.abs(pop["sd"] / sds - 1).max() < 1e-3  # measured 6e-5
    eb = poolwise.fit("y ~ x", df, method="eb").population
    assert np.abs((eb["mean"].iloc[:2] - means[:2]) / sds[:2]).max() < 0.02
