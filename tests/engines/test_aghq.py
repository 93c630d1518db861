"""Adaptive Gauss–Hermite quadrature of one factor's levels, against direct integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from poolwise.engines import aghq
from poolwise.engines.aghq import (
    LevelModel,
    beta_laplace,
    derivatives,
    joint_terms,
    level_modes,
    quadrature,
    sample_levels,
)


def _model(family: str, seed: int = 3, levels: int = 5, cells: int = 13) -> LevelModel:
    """Small levels (1-4 trials or small counts, up to 5 cells): where Laplace is weakest."""
    rng = np.random.default_rng(seed)
    codes = np.r_[np.arange(levels), rng.integers(0, levels, cells - levels)]
    X = np.c_[np.ones(cells), rng.normal(size=cells)]
    if family == "binomial":
        n = rng.integers(1, 5, cells).astype(float)
        y = rng.binomial(n.astype(int), 0.3).astype(float)
        return LevelModel.build("binomial", y, n, X, np.zeros(cells), codes, levels)
    offset = np.log(rng.uniform(0.5, 2.0, cells))
    y = rng.poisson(np.exp(offset) * 0.8).astype(float)
    return LevelModel.build("poisson", y, None, X, offset, codes, levels)


def _log_lik(model: LevelModel, eta: np.ndarray, cells: np.ndarray) -> float:
    """The cells' log likelihood, written out here (constants dropped as the engine does)."""
    y, n, eta = model.y[cells], model.n[cells], eta[cells]
    if model.family == "binomial":
        return float(np.sum(y * eta - n * np.logaddexp(0.0, eta)))
    return float(np.sum(y * eta - np.exp(eta)))


def _direct(model: LevelModel, beta: np.ndarray, sd: float) -> np.ndarray:
    """log m_j by scipy's adaptive quadrature of each level's integrand."""
    eta0 = model.offset + model.X @ beta
    out = []
    for j in range(model.n_levels):
        cells = model.codes == j

        def log_lik(b, cells=cells):
            return _log_lik(model, eta0 + b, cells)

        top = -optimize.minimize_scalar(
            lambda b: -(log_lik(b) + stats.norm.logpdf(b, 0, sd)),
            bounds=(-30, 30),
            method="bounded",
            options={"xatol": 1e-10},
        ).fun
        value, _ = integrate.quad(
            lambda b, top=top, log_lik=log_lik: math.exp(
                log_lik(b) + stats.norm.logpdf(b, 0, sd) - top
            ),
            -40,
            40,
            epsabs=0,
            epsrel=1e-13,
            limit=400,
            points=[0.0],
        )
        out.append(top + math.log(value))
    return np.array(out)


POINTS = [(np.array([-0.5, 0.3]), 0.4), (np.array([0.2, -1.0]), 1.0), (np.array([-1.0, 0.5]), 2.5)]


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_quadrature_matches_direct_integration(family):
    model = _model(family)
    beta = np.array([p[0] for p in POINTS])
    sd = np.array([p[1] for p in POINTS])
    exact = np.array([_direct(model, b, s) for b, s in POINTS])
    fine = quadrature(model, beta, sd, k=61)
    assert np.abs(fine.log_m - exact).max() < 1e-8  # seen 2e-10
    # 15 nodes: exact to 1e-10 at sd 0.4; at sd 2.5 a level of one count has a flat side
    default = quadrature(model, beta, sd)
    assert np.abs(default.log_m[0] - exact[0]).max() < 1e-9  # seen 1.3e-11
    assert np.abs(default.log_m - exact).max() < 2e-4  # seen 7.4e-5
    laplace = quadrature(model, beta, sd, k=1)
    assert np.abs(laplace.log_m - exact).max() > 1e-3  # what the quadrature is for


def test_poisson_closed_form_under_a_wide_prior():
    """integral exp(y b - e^b) db = Gamma(y): with sd 1e6 the prior is flat there to 1e-11."""
    y = np.array([4.0, 17.0, 60.0])
    model = LevelModel.build("poisson", y, None, np.zeros((3, 1)), np.zeros(3), [0, 1, 2], 3)
    sd = 1e6
    q = quadrature(model, np.zeros((1, 1)), np.array([sd]), k=61)
    closed = special.gammaln(y) - math.log(sd * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(q.log_m[0], closed, rtol=0, atol=1e-8)  # seen 9e-9


def test_level_modes_solve_the_score_equation():
    model = _model("binomial")
    eta0 = np.tile(model.X @ np.array([-0.9, 0.05]), (3, 1))
    sd = np.array([0.5, 1.0, 3.0])
    b, h = level_modes(model, eta0, sd)
    r, w = model.cell_terms(eta0 + b[:, model.codes], value=False)
    np.testing.assert_allclose(model.by_level(r, 1) - b / sd[:, None] ** 2, 0, atol=1e-10)
    np.testing.assert_allclose(h, model.by_level(w, 1) + 1 / sd[:, None] ** 2, rtol=1e-8)


def test_level_modes_stay_at_the_mode_of_many_levels(monkeypatch):
    """With many levels some Newton steps round a few ulps past their bracket at the mode: such
    a step is no reason to bisect away from it (every mode solves its score equation within a
    dozen steps; bisecting there had some levels halfway to their bracket's far end)."""
    monkeypatch.setattr(aghq, "NEWTON_STEPS", 12)
    rng = np.random.default_rng(5)
    levels, per = 20_000, 5
    codes = np.repeat(np.arange(levels), per)
    X = np.c_[np.ones(codes.size), rng.normal(size=(codes.size, 3))]
    eta = X @ np.array([-0.5, 0.4, -0.3, 0.2]) + rng.normal(0, 0.7, levels)[codes]
    n = np.full(codes.size, 10.0)
    y = rng.binomial(10, special.expit(eta)).astype(float)
    model = LevelModel.build("binomial", y, n, X, np.zeros(codes.size), codes, levels)
    eta0 = (X @ np.array([-0.5, 0.4, -0.3, 0.2]))[None]
    sd = np.array([0.7])
    b, _ = level_modes(model, eta0, sd)
    r, _ = model.cell_terms(eta0 + b[:, model.codes], value=False)
    np.testing.assert_allclose(model.by_level(r, 1) - b / sd[:, None] ** 2, 0, atol=1e-10)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_joint_terms_match_finite_differences(family):
    """The derivatives of sum_j log m_j in (beta, log sd), the levels' means' slopes and the
    third derivative in log sd, all from the nodes, against differences of the quadrature."""
    model = _model(family)
    theta = np.array([-0.4, 0.3, math.log(1.2)])

    def terms(th):
        return joint_terms(model, th[:2], math.exp(th[2]), k=31)

    def total(th):
        return quadrature(model, th[None, :2], np.exp(th[2:]), k=31).log_m.sum()

    t, step, eye = terms(theta), 1e-4, np.eye(3)
    fd_grad = [(total(theta + step * e) - total(theta - step * e)) / (2 * step) for e in eye]
    up, down = [terms(theta + step * e) for e in eye], [terms(theta - step * e) for e in eye]
    fd_hess = [(u.grad - d.grad) / (2 * step) for u, d in zip(up, down, strict=True)]
    fd_slopes = np.array([(u.mean - d.mean) / (2 * step) for u, d in zip(up, down, strict=True)])
    np.testing.assert_allclose(t.log_m, total(theta), rtol=1e-12)
    np.testing.assert_allclose(t.grad, fd_grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t.hess, fd_hess, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.slopes, fd_slopes.T, rtol=1e-5, atol=1e-7)
    fd_third = (up[2].hess[2, 2] - down[2].hess[2, 2]) / (2 * step)
    np.testing.assert_allclose(t.third, fd_third, rtol=1e-5, atol=1e-6)
    direct = quadrature(model, theta[None, :2], np.exp(theta[2:]), k=31)
    np.testing.assert_allclose(t.mean, (direct.weights * direct.nodes).sum(axis=2)[0], rtol=1e-12)


@pytest.mark.parametrize("cells", [13, 15])  # (uneven, and three cells a level)
def test_joint_terms_by_chunks_of_levels_are_the_whole(monkeypatch, cells):
    model = _model("binomial", levels=5, cells=cells)
    if cells == 15:
        model = LevelModel.build(
            "binomial", model.y, model.n, model.X, model.offset, np.arange(15) // 3, 5
        )
        assert model.block == 3
    whole = joint_terms(model, np.array([-0.4, 0.3]), 1.2)
    monkeypatch.setattr(aghq, "JOINT_CHUNK", 40)  # one level a chunk
    parts = joint_terms(model, np.array([-0.4, 0.3]), 1.2)
    for a, b in zip(whole.__dict__.values(), parts.__dict__.values(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_subset_is_the_levels_alone():
    model = _model("poisson", levels=6, cells=20)
    beta, sd = np.array([[0.1, -0.2]]), np.array([0.8])
    whole = quadrature(model, beta, sd).log_m[0]
    part = model.subset(2, 5)
    np.testing.assert_allclose(quadrature(part, beta, sd).log_m[0], whole[2:5], rtol=1e-12)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_derivatives_match_finite_differences(family):
    model = _model(family)
    beta, sd = np.array([[-0.4, 0.3]]), np.array([1.2])
    grad, hess, _ = derivatives(model, quadrature(model, beta, sd, k=31))

    def total(b):
        return quadrature(model, b.reshape(1, -1), sd, k=31).log_m.sum()

    step = 1e-4
    eye = np.eye(2) * step
    fd_grad = np.array([(total(beta[0] + e) - total(beta[0] - e)) / (2 * step) for e in eye])
    fd_hess = np.array(
        [
            [
                (
                    total(beta[0] + a + b)
                    - total(beta[0] + a - b)
                    - total(beta[0] - a + b)
                    + total(beta[0] - a - b)
                )
                / (4 * step**2)
                for b in eye
            ]
            for a in eye
        ]
    )
    np.testing.assert_allclose(grad[0], fd_grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hess[0], fd_hess, rtol=1e-4, atol=1e-5)


def test_beta_laplace_finds_the_mode_of_the_exact_marginal():
    """At the engine's mode, the direct integrals' log posterior has a zero gradient and the
    engine's curvature (central differences)."""
    model = _model("poisson")
    mean, precision = np.array([0.0, 0.0]), np.array([0.25, 1.0])
    fit = beta_laplace(model, np.array([0.7]), mean, precision, k=61)

    def log_post(b):
        return _direct(model, b, 0.7).sum() - 0.5 * (precision * (b - mean) ** 2).sum()

    mode = fit.mode[0]
    grad = [(log_post(mode + e) - log_post(mode - e)) / 2e-4 for e in np.eye(2) * 1e-4]
    np.testing.assert_allclose(grad, 0, atol=1e-6)  # the differences' own error ~1e-7
    step, eye = 1e-3, np.eye(2) * 1e-3
    hess = [
        [
            (
                log_post(mode + a + b)
                - log_post(mode + a - b)
                - log_post(mode - a + b)
                + log_post(mode - a - b)
            )
            / (4 * step**2)
            for b in eye
        ]
        for a in eye
    ]
    np.testing.assert_allclose(-fit.hessian[0], hess, rtol=1e-4)


@pytest.mark.parametrize("start", [None, 6.0, -9.0])
@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_level_draws_follow_the_exact_conditional(family, start):
    """Each level's draws against its distribution function by direct integration (KS test at
    a fixed seed), the posterior of levels with 1-4 trials or counts: skewed. The envelope is
    laid around a start moved by one Newton step; starts far from the modes (where that step
    does not reach them) must give the same distribution."""
    model = _model(family)
    beta, sd, S = np.array([-0.5, 0.3]), 1.5, 4000
    begin = None if start is None else np.full((S, model.n_levels), start)
    draws = sample_levels(
        model, np.tile(beta, (S, 1)), np.full(S, sd), np.random.default_rng(5), start=begin
    )
    eta0 = model.offset + model.X @ beta
    for j in range(model.n_levels):
        cells = model.codes == j

        def density(b, cells=cells):
            return math.exp(_log_lik(model, eta0 + b, cells) + stats.norm.logpdf(b, 0, sd))

        # the distribution function on a fine grid (cumulative Gauss–Legendre panels)
        grid = np.linspace(draws[:, j].min() - 1, draws[:, j].max() + 1, 801)
        panels = [
            integrate.fixed_quad(np.vectorize(density), a, b, n=8)[0]
            for a, b in zip(grid[:-1], grid[1:], strict=True)
        ]
        total = integrate.quad(density, -40, 40, epsrel=1e-12, points=[0.0])[0]
        below = integrate.quad(density, -40, grid[0], epsrel=1e-12)[0]
        values = (below + np.r_[0.0, np.cumsum(panels)]) / total

        def cdf(x, grid=grid, values=values):
            return np.interp(x, grid, values)

        assert stats.kstest(draws[:, j], cdf).pvalue > 1e-3
