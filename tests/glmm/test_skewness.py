"""The simplified-Laplace mean shift and the Laplace engine's accuracy check: against direct
sums, dense linear algebra and long NUTS runs (one-factor models through the Laplace engine
itself, which ``auto`` and ``laplace`` leave to adaptive Gauss–Hermite quadrature)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise import HalfNormal, Normal, PoolwiseWarning
from poolwise.engines import blocks, skewness
from poolwise.engines.blocks import Structure, Term
from poolwise.engines.latent import LatentModel, loglik
from poolwise.engines.skewness import (
    eta_variances,
    importance_check,
    mean_shift,
    shifted,
    third_derivative,
)
from poolwise.glmm.laplace import fit_laplace
from poolwise.glmm.setup import prepare

from . import REFERENCES, reference_script

laplace_refs = reference_script("run_laplace_references")
glmm_refs = reference_script("run_glmm_references")
FEW = {"Intercept": Normal(0, 2), "x": Normal(0, 1), "1|g_sigma": HalfNormal(1)}


def _one_level(kind, stats):
    """One level's effect b ~ N(0, 1) and an intercept pinned at 0 by its prior."""
    s = Structure(np.ones((1, 1)), [Term(np.zeros(1, int), np.ones(1), 1)])
    return LatentModel(
        s,
        kind,
        stats,
        np.zeros(1),
        np.zeros(1),
        np.full(1, 1e8),
        (0,),
        (None,),
        (False,),
        None,
        lambda t: 0 * t[:, 0],
    )


def _exact(kind, stats):
    """The posterior mean of b and log p(y) by a direct sum on a fine grid."""
    b = np.linspace(-12, 12, 200_001)
    ll = loglik(kind, tuple(a[:, None] for a in stats), b[:, None], None)[0] - b**2 / 2
    top = ll.max()
    w = np.exp(ll - top)
    return (w * b).sum() / w.sum(), top + np.log(w.sum() * (b[1] - b[0]) / np.sqrt(2 * np.pi))


CASES = [
    ("poisson", (np.array([0.0]),)),
    ("binomial", (np.array([1.0]), np.array([3.0]))),
    ("binomial", (np.array([0.0]), np.array([2.0]))),
]


@pytest.mark.parametrize("kind", ["binomial", "poisson"])
def test_third_derivative_is_the_derivative_of_the_weights(kind):
    # the likelihood's weights are minus its second derivative in eta: the third derivative is
    # minus theirs (central differences, error ~h^2), over the logistic's whole range
    eta = np.linspace(-30, 30, 241)[None] if kind == "binomial" else np.linspace(-5, 3, 81)[None]
    n = eta.shape[1]
    stats = (np.full(n, 3.0), np.full(n, 7.0)) if kind == "binomial" else (np.full(n, 3.0),)
    h = 1e-4
    w_up = loglik(kind, stats, eta + h, None)[2]
    w_down = loglik(kind, stats, eta - h, None)[2]
    np.testing.assert_allclose(
        third_derivative(kind, stats, eta), -(w_up - w_down) / (2 * h), rtol=1e-6, atol=1e-12
    )


@pytest.mark.parametrize(("kind", "stats"), CASES)
def test_the_shift_corrects_most_of_the_gap_between_mode_and_mean(kind, stats):
    # the first-order shift leaves a fifth of the mode's error or less (measured: 4-14 %)
    m = _one_level(kind, stats)
    cond = m.conditional(np.zeros((1, 1)))
    mean, _ = _exact(kind, stats)
    mode = cond.x[0, 1]
    assert abs(mode + mean_shift(m, cond)[0, 1] - mean) < 0.2 * abs(mode - mean)


@pytest.mark.parametrize(("kind", "stats"), CASES)
def test_importance_sampling_finds_the_laplace_error_of_the_marginal(kind, stats):
    m = _one_level(kind, stats)
    theta = np.zeros((1, 1))
    cond = m.conditional(theta)
    _, log_py = _exact(kind, stats)
    h = 1 / cond.variances()[0, 1]
    b = cond.x[0, 1]
    f = loglik(kind, stats[:1] if kind == "poisson" else stats, np.array([[b]]), None)[0][0]
    laplace = f - b**2 / 2 - 0.5 * np.log(h)
    khat, error = importance_check(m, cond, theta, 40_000, 1)
    assert khat < 0.5
    # the Laplace error is 0.009-0.013 here; 40,000 draws estimate it to ~5e-4 (measured
    # spread over seeds)
    assert abs(laplace + error - log_py) < 2e-3
    assert abs(laplace - log_py) > 4e-3


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("block", [False, True])
def test_eta_variances_and_shift_match_dense_algebra(monkeypatch, batched, block):
    # crossed factors, one of them zero-sum, a covariate: every path of the blocked algebra;
    # with ``block`` the first factor's intercept and slope are a correlated block (eliminated
    # first, each level's 2 x 2 block together)
    from poolwise.engines.latent import CorrBlock

    if not batched:
        monkeypatch.setattr(blocks, "BATCH_REST", 0)
    rng = np.random.default_rng(4)
    n, J, L = 40, 7, 3
    a, c = rng.integers(0, J, n), rng.integers(0, L, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    terms = [Term(a, np.ones(n), J), Term(c, rng.uniform(0.5, 2, n), L)]
    if block:
        terms.insert(1, Term(a, X[:, 1], J))
    s = Structure(X, terms, ((0, 1),) if block else ())
    assert s.batched == batched
    k = rng.integers(0, 4, n).astype(float)
    stats = (k, np.full(n, 4.0))
    m = LatentModel(
        s,
        "binomial",
        stats,
        np.zeros(n),
        np.zeros(2),
        np.full(2, 0.5),
        (0, 1, 3) if block else (0, 1),
        (None,) * len(terms),
        (True, True, False) if block else (True, False),
        None,
        lambda t: 0 * t[:, 0],
        (CorrBlock((0, 1), (2,)),) if block else (),
    )
    theta = np.array([[0.3, -0.2, 0.7, 0.1], [-0.5, 0.1, -0.4, 0.0]])[:, : 4 if block else 2]
    cond = m.conditional(theta)
    A = np.column_stack([X] + [np.eye(t.n_levels)[t.codes] * t.values[:, None] for t in terms])
    dim = A.shape[1]
    C = np.array(
        [
            np.r_[np.zeros(2 + J * i), np.ones(J), np.zeros(dim - 2 - J * (i + 1))]
            for i in range(2 if block else 1)  # the zero-sum terms: the first factor's
        ]
    )
    shifts, variances = [], []
    for kk in range(2):
        eta = A @ cond.x[kk]
        _, _, w = loglik("binomial", stats, eta[None], None)
        Q = s.prior_times(m.prior_precision(theta[kk : kk + 1]), np.eye(dim))
        Hinv = np.linalg.inv(A.T @ (w[0][:, None] * A) + Q)
        Sigma = Hinv - Hinv @ C.T @ np.linalg.solve(C @ Hinv @ C.T, C @ Hinv)
        var = np.einsum("ij,jk,ik->i", A, Sigma, A)
        assert np.allclose(eta_variances(m, cond)[kk], var, rtol=1e-8, atol=1e-12)
        t3 = third_derivative("binomial", stats, eta[None])[0]
        shifts.append(Sigma @ A.T @ (0.5 * t3 * var))
        variances.append(np.diag(Sigma))
        assert np.allclose(mean_shift(m, cond)[kk], shifts[-1], rtol=1e-7, atol=1e-12)
    # one point a batch: each batch's S^-1 taken from the one computed for all points, which
    # the variances read again
    monkeypatch.setattr(skewness, "CACHE_CELLS", 8 * n)
    moved, shift = shifted(m, cond)
    assert np.allclose(shift, shifts, rtol=1e-7, atol=1e-12)
    assert np.allclose(moved.variances(), variances, rtol=1e-8, atol=1e-12)


def _deviations(fit, reference):
    """The largest |mean - reference mean| in reference sds, and |sd / reference sd - 1|, over
    the common effects, the group sds and the levels."""
    stored = json.loads((REFERENCES / f"glmm_{reference}.json").read_text())["parameters"]
    out = {}
    for name, value in stored.items():
        kind = "levels" if isinstance(value, list) else "sds" if "_sigma" in name else "common"
        rows = fit.groups.loc[name] if kind == "levels" else fit.population.loc[[name]]
        values = value if kind == "levels" else [value]
        mean = np.array([v["mean"] for v in values])
        sd = np.array([v["sd"] for v in values])
        dm = np.abs(rows["mean"].to_numpy() - mean) / sd
        ds = np.abs(rows["sd"].to_numpy() / sd - 1)
        old = out.get(kind, (0.0, 0.0))
        out[kind] = (max(old[0], dm.max()), max(old[1], ds.max()))
    return out


# (model, reference, measured without the corrections -> with them: the largest mean error in
# posterior sds over common effects, group sd, levels): the tolerances sit above the latter
# with the references' Monte Carlo error (4 x 2,000 draws: up to 0.03 sd in the mean)
FEW_TOL = {"common": (0.1, 0.1), "sds": (0.15, 0.1), "levels": (0.12, 0.1)}
BERNOULLI_TOL = {"common": (0.1, 0.12), "sds": (0.05, 0.05), "levels": (0.1, 0.15)}


def test_binomial_with_few_trials_is_corrected():
    # without the corrections: slope 0.30 sd off, group sd 0.14, levels 0.12; with: 0.04,
    # 0.10, 0.08 (sds within 7 %)
    prep = prepare("p(k, n) ~ 1 + x + (1|g)", laplace_refs.binomial_few_data(), priors=FEW)
    fit = fit_laplace(prep, seed=1)
    assert fit.info["laplace_check"]["flags"] == []
    for kind, (dm, ds) in _deviations(fit, "binomial_few").items():
        assert dm < FEW_TOL[kind][0] and ds < FEW_TOL[kind][1], kind


def test_bernoulli_with_small_levels_is_corrected_and_flagged():
    # without the corrections: slope 0.36 sd off, group sd 0.35, levels 0.31; with: 0.03,
    # 0.002, 0.05. The Laplace marginal's error moved the group sd by 0.36 of its sd before its
    # linear correction: more than the check's limit, so it warns
    prep = prepare(
        "y ~ 1 + x + (1|g)", laplace_refs.bernoulli_small_data(), family="bernoulli", priors=FEW
    )
    with pytest.warns(PoolwiseWarning, match="Laplace marginal's error moves 1|g_sigma"):
        fit = fit_laplace(prep, seed=1)
    for kind, (dm, ds) in _deviations(fit, "bernoulli_small").items():
        assert dm < BERNOULLI_TOL[kind][0] and ds < BERNOULLI_TOL[kind][1], kind


def test_poisson_intercept_is_corrected():
    # few counts a level: without the corrections the intercept is 0.60 sd off, the levels 0.20;
    # with: 0.004 and 0.010 (sds within 4 %; the reference, 4 x 10,000 draws, is good to 0.01)
    prep = prepare(
        "c ~ 1 + x + (1|g)",
        glmm_refs.poisson_one_data(),
        family="poisson",
        exposure="t",
        priors=FEW,
    )
    fit = fit_laplace(prep, seed=1)
    assert fit.info["laplace_check"]["max_shift_sd"] > 0.5  # large, and corrected
    for kind, (dm, ds) in _deviations(fit, "aghq_poisson_one").items():
        assert dm < 0.05 and ds < 0.06, kind


def test_seeds_are_not_flagged():
    common = ["Intercept", "x1_seed_type", "x2_root_extract", "x1_seed_type:x2_root_extract"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PoolwiseWarning)  # identifiability, expected
        prep = prepare(
            "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
            laplace_refs.seeds_data(),
            priors={**dict.fromkeys(common, Normal(0, 10)), "1|plate_sigma": HalfNormal(1)},
        )
        fit = fit_laplace(prep, seed=1)
    check = fit.info["laplace_check"]
    assert check["flags"] == [] and check["separated"] == {"1|plate": 1}
    assert check["khat"] < 0.5 and check["max_shift_sd"] < 0.1


def _tiny_levels():
    """Bernoulli, 60 levels of 2-3 rows with a wide sd (half of them separated), and a
    crossed factor of 4 levels."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(60), rng.integers(2, 4, 60))
    h = rng.integers(0, 4, g.size)
    x = rng.normal(size=g.size)
    eta = -0.5 + 0.5 * x + rng.normal(0, 2.0, 60)[g] + rng.normal(0, 0.5, 4)[h]
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"g": g, "h": h, "x": x, "y": y})


def test_auto_goes_to_nuts_where_the_check_flags(monkeypatch):
    from poolwise.glmm import fit as route

    def fake(formula, data, **kwargs):
        raise RuntimeError("NUTS called")

    monkeypatch.setattr(route, "fit_formula", fake)
    df = _tiny_levels()
    with pytest.raises(RuntimeError, match="NUTS called"):
        poolwise.fit(
            "y ~ 1 + x + (1|g) + (1|h)",
            data=df,
            family="bernoulli",
            priors={"1|g_sigma": HalfNormal(2.5)},
            seed=1,
        )
    # asked for by name, Laplace it is, with a warning that says what flagged
    with pytest.warns(PoolwiseWarning, match=r"separated.*Laplace marginal's error moves 1\|g"):
        fit = poolwise.fit(
            "y ~ 1 + x + (1|g) + (1|h)",
            data=df,
            family="bernoulli",
            priors={"1|g_sigma": HalfNormal(2.5)},
            method="laplace",
            seed=1,
            draws=200,
        )
    assert fit.method == "laplace"
    assert fit.info["laplace_check"]["separated"]["1|g"] > 30


def test_auto_stays_on_laplace_where_the_check_passes():
    df = laplace_refs.binomial_few_data()
    df["h"] = np.arange(len(df)) % 3
    fit = poolwise.fit("p(k, n) ~ 1 + x + (1|g) + (1|h)", data=df, priors=FEW, seed=1, draws=200)
    assert fit.method == "laplace" and "accuracy check passed" in fit.method_reason
    assert fit.info["laplace_check"]["flags"] == []
