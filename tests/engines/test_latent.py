"""The latent Gaussian engine against dense linear algebra: modes, curvature, Laplace marginal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import minimize

from poolwise.engines import blocks
from poolwise.engines.blocks import Structure, Term
from poolwise.engines.latent import CorrBlock, LatentModel, loglik, loglik_change


def _problem(kind: str, seed: int = 3):
    """Cells with two crossed factors (5 and 4 levels) and one nested in the first (10 levels)."""
    rng = np.random.default_rng(seed)
    n = 60
    a, b = rng.integers(0, 5, n), rng.integers(0, 4, n)
    c = a * 2 + rng.integers(0, 2, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    terms = [Term(a, np.ones(n), 5), Term(b, rng.normal(1, 0.2, n), 4), Term(c, np.ones(n), 10)]
    eta = 0.3 + 0.5 * X[:, 1] + rng.normal(0, 0.5, 5)[a]
    if kind == "binomial":
        trials = rng.integers(1, 6, n).astype(float)
        stats = (rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float), trials)
        offset = np.zeros(n)
    elif kind == "poisson":
        offset = np.log(rng.uniform(0.5, 2, n))
        stats = (rng.poisson(np.exp(eta + offset)).astype(float),)
    else:
        size = rng.integers(1, 4, n).astype(float)
        stats = (size, eta + rng.normal(0, 1, n) / np.sqrt(size), rng.uniform(0, 2, n) * (size - 1))
        offset = np.zeros(n)
    return X, terms, stats, offset


def _model(kind: str):
    X, terms, stats, offset = _problem(kind)
    return LatentModel(
        Structure(X, terms),
        kind,
        stats,
        offset,
        np.array([0.2, 0.0]),
        np.array([1 / 4.0, 1.0]),
        (0, 1, None),
        (None, None, 0.4),
        (True, True, False),
        2 if kind == "normal" else None,
        lambda t: -0.5 * (t**2).sum(axis=1),
    ), (X, terms, stats, offset)


def _dense(kind: str, theta: np.ndarray):
    """The same log marginal from a dense design, a zero-sum basis and a generic optimiser."""
    model, (X, terms, stats, offset) = _model(kind)
    A = np.hstack([X] + [np.eye(t.n_levels)[t.codes] * t.values[:, None] for t in terms])
    sds = [np.exp(theta[0]), np.exp(theta[1]), 0.4]
    q = np.r_[
        1 / 4.0,
        1.0,
        np.concatenate([np.full(t.n_levels, s**-2) for t, s in zip(terms, sds, strict=True)]),
    ]
    mean = np.r_[0.2, 0.0, np.zeros(A.shape[1] - 2)]
    C = np.zeros((2, A.shape[1]))
    C[0, 2:7], C[1, 7:11] = 1, 1
    U = null_space(C)
    sigma = np.exp(theta[2:3]) if kind == "normal" else None

    def f(u):
        x = U @ u
        ll, d, _ = loglik(kind, stats, (offset + A @ x)[None], sigma)
        return -(ll[0] - 0.5 * (q * (x - mean) ** 2).sum()), -(U.T @ (A.T @ d[0] - q * (x - mean)))

    res = minimize(f, np.zeros(U.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10})
    x = U @ res.x
    _, _, w = loglik(kind, stats, (offset + A @ x)[None], sigma)
    H = A.T @ (w[0][:, None] * A) + np.diag(q)
    logdet = np.linalg.slogdet(U.T @ H @ U)[1]
    norm = -4 * theta[0] - 3 * theta[1] - 10 * np.log(0.4)
    return (
        -res.fun + norm - 0.5 * logdet - 0.5 * (theta**2).sum(),
        x,
        np.diag(U @ np.linalg.inv(U.T @ H @ U) @ U.T),
    )


@pytest.mark.parametrize("kind", ["binomial", "poisson", "normal"])
@pytest.mark.parametrize("batch", [64, 0])
def test_laplace_marginal_matches_dense(kind, batch, monkeypatch):
    monkeypatch.setattr(blocks, "BATCH_REST", batch)
    d = 3 if kind == "normal" else 2
    thetas = np.array([[-0.5, 0.2, 0.1], [0.3, -1.0, -0.2], [-2.0, 0.5, 0.0]])[:, :d]
    model, _ = _model(kind)
    cond = model.conditional(thetas)
    var = cond.variances()
    lm0 = _dense(kind, thetas[0])[0]
    for k, theta in enumerate(thetas):
        lm, x, v = _dense(kind, theta)
        np.testing.assert_allclose(cond.x[k], x, atol=1e-6)
        np.testing.assert_allclose(var[k], v, rtol=1e-8, atol=1e-12)
        # log marginals agree up to one constant across the points
        np.testing.assert_allclose(cond.log_marginal[k] - cond.log_marginal[0], lm - lm0, atol=1e-7)


@pytest.mark.parametrize("batch", [64, 0])
def test_draws_have_the_conditional_covariance(batch, monkeypatch):
    monkeypatch.setattr(blocks, "BATCH_REST", batch)
    model, _ = _model("binomial")
    cond = model.conditional(np.array([[-0.5, 0.2]]))
    z = np.random.default_rng(1).normal(size=(40_000, cond.x.shape[1]))
    x = cond.sample(np.zeros(40_000, dtype=int), z)
    np.testing.assert_allclose(x[:, 2:7].sum(axis=1), 0, atol=1e-10)  # zero-sum kept
    np.testing.assert_allclose(x.var(axis=0), cond.variances()[0], rtol=0.04)
    np.testing.assert_allclose(x.mean(axis=0), cond.x[0], atol=0.02 * np.sqrt(x.var(axis=0).max()))


@pytest.mark.parametrize("batch", [64, 0])
def test_draws_by_point_equal_draws_one_by_one(batch, monkeypatch):
    # a large factor is used once per point, its draws as padded columns in bands by their
    # count; the draws must be exactly those of taking the factor once per draw
    from poolwise.engines import latent

    monkeypatch.setattr(blocks, "BATCH_REST", batch)
    model, _ = _model("poisson")
    cond = model.conditional(np.array([[-0.5, 0.2], [0.3, -1.0], [-2.0, 0.5], [0.1, 0.1]]))
    rng = np.random.default_rng(2)
    points = rng.choice(4, size=300, p=[0.7, 0.2, 0.09, 0.01])
    z = rng.normal(size=(300, cond.x.shape[1]))
    one_by_one = cond.sample(points, z)
    monkeypatch.setattr(latent, "BATCH_FLOATS", 0)  # every factor counts as large
    np.testing.assert_allclose(cond.sample(points, z), one_by_one, rtol=1e-10, atol=1e-12)


def test_points_in_batches_give_the_same_answers(monkeypatch):
    from poolwise.engines import latent

    thetas = np.array([[-0.5, 0.2], [0.3, -1.0], [-2.0, 0.5]])
    whole = _model("binomial")[0].conditional(thetas)
    monkeypatch.setattr(latent, "BATCH_FLOATS", 1)  # one point a batch
    parts = _model("binomial")[0].conditional(thetas)
    np.testing.assert_allclose(parts.log_marginal, whole.log_marginal, atol=1e-9)
    # the modes from other warm starts, to Newton's tolerance: their curvature to ~1e-8
    np.testing.assert_allclose(parts.variances(), whole.variances(), rtol=1e-7)


@pytest.mark.parametrize("kind", ["binomial", "normal"])
def test_conditional_at_reuses_the_evaluated_points(kind):
    d = 3 if kind == "normal" else 2
    thetas = np.array([[-0.5, 0.2, 0.1], [0.3, -1.0, -0.2], [-2.0, 0.5, 0.0]])[:, :d]
    model, _ = _model(kind)
    model.log_marginal(thetas[:1])
    model.log_marginal(thetas[1:])
    calls = []
    fresh = model.conditional
    model.conditional = lambda t: calls.append(len(t)) or fresh(t)
    # evaluated points, out of order and repeated, come from the evaluations: no solve
    order = np.array([2, 0, 2])
    cond = model.conditional_at(thetas[order])
    assert calls == []
    # a point not evaluated is solved afresh, alone; the others come from the evaluations
    unseen = np.array([[0.1, 0.1, 0.1]])[:, :d]
    mixed = model.conditional_at(np.vstack([thetas[:1], unseen]))
    assert calls == [1]
    var, var_mixed = cond.variances(), mixed.variances()
    lm0 = _dense(kind, thetas[0])[0]
    for k, theta in enumerate([*thetas[order], *np.vstack([thetas[:1], unseen])]):
        lm, x, v = _dense(kind, theta)
        c, j, vv = (cond, k, var) if k < 3 else (mixed, k - 3, var_mixed)
        np.testing.assert_allclose(c.x[j], x, atol=1e-6)
        # the modes from warm starts, to Newton's tolerance: their curvature to ~1e-7
        np.testing.assert_allclose(vv[j], v, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(c.log_marginal[j] - cond.log_marginal[1], lm - lm0, atol=1e-7)


# ------------------------------------------------------------------ a normal outcome's gradient
@pytest.mark.parametrize("batch", [64, 0])
def test_normal_derivatives_match_finite_differences(batch, monkeypatch):
    # the exact gradient (zero-sum terms, a fixed sd, the log prior) against central differences
    # of the log marginal's values (their error ~1e-9 here)
    monkeypatch.setattr(blocks, "BATCH_REST", batch)
    model, _ = _model("normal")
    thetas = np.array([[-0.5, 0.2, 0.1], [0.3, -1.0, -0.2], [-2.0, 0.5, 0.0]])
    value, grad, info = model.derivatives(thetas)
    np.testing.assert_allclose(value, model.log_marginal(thetas), rtol=1e-12)
    h = 1e-5
    fd = [
        (model.log_marginal(thetas + h * e) - model.log_marginal(thetas - h * e)) / (2 * h)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(grad, np.column_stack(fd), atol=1e-6)
    assert np.all(np.linalg.eigvalsh(info) > 0)


def test_average_information_is_its_dense_definition():
    # rows of 1-3 in a cell: V = sigma^2 I + X S_beta X' + sum_t sd_t^2 Z_t K_t Z_t' over the
    # rows (K_t = I - 11'/J where the term sums to zero), u_t = 2 Z_t b_t and u_sigma = 2 (y -
    # A x*) at the mode x*: the information is u' V^-1 u / 2
    X, terms, _, _ = _problem("normal")
    rng = np.random.default_rng(4)
    size = rng.integers(1, 4, X.shape[0])
    cell = np.repeat(np.arange(X.shape[0]), size)
    y = rng.normal(0.3, 1.0, cell.size)
    mean = np.bincount(cell, y) / size
    stats = (size.astype(float), mean, np.bincount(cell, (y - mean[cell]) ** 2))
    model = LatentModel(
        Structure(X, terms),
        "normal",
        stats,
        np.zeros(X.shape[0]),
        np.array([0.2, 0.0]),
        np.array([1 / 4.0, 1.0]),
        (0, 1, None),
        (None, None, 0.4),
        (True, True, False),
        2,
        lambda t: -0.5 * (t**2).sum(axis=1),
    )
    theta = np.array([-0.5, 0.2, 0.1])
    info = model.derivatives(theta[None])[2][0]
    x = model.conditional(theta[None]).x[0]
    Z = [(np.eye(t.n_levels)[t.codes] * t.values[:, None])[cell] for t in terms]
    A = np.hstack([X[cell], *Z])
    sds = [np.exp(theta[0]), np.exp(theta[1]), 0.4]
    V = np.exp(2 * theta[2]) * np.eye(cell.size) + X[cell] @ np.diag([4.0, 1.0]) @ X[cell].T
    for z, sd, zero_sum in zip(Z, sds, (True, True, False), strict=True):
        J = z.shape[1]
        V += sd**2 * z @ (np.eye(J) - zero_sum * np.full((J, J), 1.0 / J)) @ z.T
    U = np.column_stack([2 * Z[0] @ x[2:7], 2 * Z[1] @ x[7:11], 2 * (y - A @ x)])
    np.testing.assert_allclose(info, 0.5 * U.T @ np.linalg.solve(V, U), rtol=1e-9)


def test_scoring_gives_the_mode_and_curvature_of_the_values():
    # scoring on the exact gradient and the Hessian from its differences, against Newton's
    # method and the Hessian on the log marginal's values alone
    from poolwise.engines.optimize import find_mode, hessian, mode_and_hessian

    model, _ = _model("normal")
    z0 = np.zeros(3)
    mode, h, ok = mode_and_hessian(model.log_marginal, z0, model.derivatives)
    ref, ref_ok = find_mode(model.log_marginal, z0)
    ref_h = hessian(model.log_marginal, ref)
    assert ok and ref_ok
    assert np.all(np.abs(mode - ref) < 1e-5 * np.sqrt(np.diag(np.linalg.inv(-ref_h))))
    np.testing.assert_allclose(h, ref_h, atol=1e-3 * np.abs(ref_h).max())
    exact = mode_and_hessian(model.log_marginal, z0, model.derivatives, model.hessian)
    np.testing.assert_allclose(exact[0], mode)
    np.testing.assert_allclose(exact[1], ref_h, atol=1e-3 * np.abs(ref_h).max())


@pytest.mark.parametrize("batched", [True, False])
def test_exact_hessian_is_the_gradients_derivative(monkeypatch, batched):
    # the Hessian from sums of Sigma's squared entries (the zero-sum constraints' correction, a
    # fixed sd, beta's prior) against central differences of the exact gradient, the points
    # batched and one at a time (the large factor's pair pattern)
    if not batched:
        monkeypatch.setattr(blocks, "BATCH_REST", 0)
    model, _ = _model("normal")
    assert model.structure.batched == batched
    z, step = np.array([[0.3, -0.4, 0.2]]), 1e-5
    grads = [
        model.derivatives(z + step * e)[1] - model.derivatives(z - step * e)[1] for e in np.eye(3)
    ]
    fd = np.concatenate(grads) / (2 * step)
    np.testing.assert_allclose(model.hessian(z)[0], fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_moment_start_is_near_the_maximum():
    # two crossed factors (80 and 50 levels, 3,000 rows): the moments' theta within a quarter of
    # a posterior sd of the maximum in each coordinate (measured: 0.10, 0.08, 0.03)
    from poolwise.engines.optimize import mode_and_hessian

    rng = np.random.default_rng(7)
    n = 3000
    a, b, x = rng.integers(0, 80, n), rng.integers(0, 50, n), rng.normal(size=n)
    y = 1 + 0.4 * x + rng.normal(0, 0.6, 80)[a] + rng.normal(0, 0.3, 50)[b] + rng.normal(size=n)
    terms = [Term(a, np.ones(n), 80), Term(b, np.ones(n), 50)]
    model = LatentModel(
        Structure(np.column_stack([np.ones(n), x]), terms),
        *("normal", (np.ones(n), y, np.zeros(n)), np.zeros(n), np.zeros(2), np.zeros(2)),
        *((0, 1), (None, None), (True, False), 2, lambda t: 0 * t[:, 0]),
    )
    start = model.moment_start()
    mode, h, ok = mode_and_hessian(model.log_marginal, np.zeros(3), model.derivatives)
    assert ok and np.all(np.abs(start - mode) < 0.25 * np.sqrt(np.diag(np.linalg.inv(-h))))


def test_log_marginal_takes_the_evaluations_held(monkeypatch):
    # a point evaluated before (held for conditional_at) is not evaluated again, where the rest
    # is factored point by point
    monkeypatch.setattr(blocks, "BATCH_REST", 0)
    model, _ = _model("normal")
    theta = np.array([[0.3, -0.4, 0.2], [0.1, 0.0, 0.0]])
    first = model.log_marginal(theta[:1])
    calls, original = [], model._conditional
    monkeypatch.setattr(model, "_conditional", lambda t: calls.append(len(t)) or original(t))
    both = model.log_marginal(theta)
    assert calls == [1] and both[0] == first[0]


def test_single_precision_variances_hold_to_tables_and_give_way_to_collinearity(monkeypatch):
    # a large factor's variances from S^-1 in single precision: within 1e-5 of double's; a
    # near-collinear rest (a covariate repeated to 1e-4) keeps double precision
    monkeypatch.setattr(blocks, "BATCH_REST", 0)
    model, (X, terms, stats, offset) = _model("normal")
    theta = np.array([[0.3, -0.4, 0.2]])
    double = model.conditional(theta).variances()
    single = model.conditional(theta).variances(single=True)
    assert not np.array_equal(single, double)
    np.testing.assert_allclose(single, double, rtol=1e-5)
    rng = np.random.default_rng(0)
    near = np.column_stack([X, X[:, 1] + 1e-4 * rng.normal(size=len(X))])
    collinear = LatentModel(
        Structure(near, terms),
        "normal",
        stats,
        offset,
        np.zeros(3),
        np.zeros(3),
        *(model.sd_index, model.sd_fixed, model.zero_sum, 2, model.log_prior),
    )
    cond = collinear.conditional(theta)
    np.testing.assert_array_equal(cond.factor.diag_inverse(single=True), cond.factor.diag_inverse())


# ------------------------------------------------------------------------ correlated blocks
def _block_model(kind: str, n_other: int, zero_sum: bool, k: int = 2):
    """A block (1 + x|a) (k = 2) or (1 + x + w|a) (k = 3) of 6 levels and a factor b of
    ``n_other`` levels (3: the block is eliminated first; 9: b is, and the block's coupling sits
    in the dense rest); theta = (the block's log sds, its correlation coordinates, b's log sd,
    a normal outcome's log sigma)."""
    rng = np.random.default_rng(5)
    n = 80
    a, b = rng.integers(0, 6, n), rng.integers(0, n_other, n)
    x, w = rng.normal(size=n), rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    values = [np.ones(n), x, w][:k]
    terms = [Term(a, v, 6) for v in values] + [Term(b, np.ones(n), n_other)]
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.5, 6)[a] + rng.normal(0, 0.4, 6)[a] * x
    if kind == "binomial":
        trials = rng.integers(1, 6, n).astype(float)
        stats = (rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float), trials)
    else:
        size = rng.integers(1, 4, n).astype(float)
        stats = (size, eta + rng.normal(0, 1, n) / np.sqrt(size), rng.uniform(0, 2, n) * (size - 1))
    n_corr = k * (k - 1) // 2
    model = LatentModel(
        Structure(X, terms, (tuple(range(k)),)),
        kind,
        stats,
        np.zeros(n),
        np.array([0.2, 0.0]),
        np.array([1 / 4.0, 1.0]),
        (*range(k), k + n_corr),
        (None,) * (k + 1),
        (zero_sum,) * k + (True,),
        k + n_corr + 1 if kind == "normal" else None,
        lambda t: -0.5 * (t**2).sum(axis=1),
        (CorrBlock(tuple(range(k)), tuple(range(k, k + n_corr))),),
    )
    return model, (X, terms, stats)


def _dense_block(kind: str, n_other: int, zero_sum: bool, theta: np.ndarray, k: int = 2):
    """The block model's log marginal, mode and covariance from dense matrices: the prior
    precision with each level's k x k inverse covariance, the constraints by a basis U, the
    prior's normaliser as 1/2 log det(U' Q U)."""
    from poolwise.engines.correlation import corr_cholesky

    _, (X, terms, stats) = _block_model(kind, n_other, zero_sum, k)
    A = np.hstack([X] + [np.eye(t.n_levels)[t.codes] * t.values[:, None] for t in terms])
    n_corr = k * (k - 1) // 2
    sds, sb = np.exp(theta[:k]), np.exp(theta[k + n_corr])
    L = corr_cholesky(theta[None, k : k + n_corr], k)[0][0]
    P = np.linalg.inv(np.outer(sds, sds) * (L @ L.T))
    dim = A.shape[1]
    Q = np.zeros((dim, dim))
    Q[0, 0], Q[1, 1] = 1 / 4.0, 1.0
    for j in range(6):
        idx = [2 + 6 * t + j for t in range(k)]
        Q[np.ix_(idx, idx)] = P
    Q[2 + 6 * k :, 2 + 6 * k :] = np.eye(n_other) / sb**2
    mean = np.r_[0.2, 0.0, np.zeros(dim - 2)]
    rows = [np.r_[np.zeros(2 + 6 * t), np.ones(6), np.zeros(dim - 8 - 6 * t)] for t in range(k)]
    C = np.array([*(rows if zero_sum else []), np.r_[np.zeros(2 + 6 * k), np.ones(n_other)]])
    U = null_space(C)
    sigma = np.exp(theta[-1:]) if kind == "normal" else None

    def f(u):
        x = U @ u
        ll, d, _ = loglik(kind, stats, (A @ x)[None], sigma)
        dev = x - mean
        return -(ll[0] - 0.5 * dev @ Q @ dev), -(U.T @ (A.T @ d[0] - Q @ dev))

    res = minimize(f, np.zeros(U.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10})
    x = U @ res.x
    _, _, w = loglik(kind, stats, (A @ x)[None], sigma)
    H = A.T @ (w[0][:, None] * A) + Q
    Hu = U.T @ H @ U
    norm = 0.5 * np.linalg.slogdet(U.T @ Q @ U)[1]
    lm = -res.fun + norm - 0.5 * np.linalg.slogdet(Hu)[1] - 0.5 * (theta**2).sum()
    return lm, x, U @ np.linalg.inv(Hu) @ U.T


def _block_thetas(kind: str, k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    n_corr = k * (k - 1) // 2
    thetas = np.column_stack(
        [
            rng.uniform(-1, 0.3, (3, k)),
            rng.uniform(-1.5, 1.5, (3, n_corr)),
            rng.uniform(-0.3, 0.2, (3, 1 + (kind == "normal"))),
        ]
    )
    return thetas


@pytest.mark.parametrize("kind", ["binomial", "normal"])
@pytest.mark.parametrize("n_other", [3, 9])
@pytest.mark.parametrize("zero_sum", [True, False])
@pytest.mark.parametrize("batch", [64, 0])
@pytest.mark.parametrize("k", [2, 3])
def test_correlated_block_matches_dense(kind, n_other, zero_sum, batch, k, monkeypatch):
    monkeypatch.setattr(blocks, "BATCH_REST", batch)
    thetas = _block_thetas(kind, k)
    model, _ = _block_model(kind, n_other, zero_sum, k)
    assert model.structure.unit == (tuple(range(k)) if n_other == 3 else (k,))
    cond = model.conditional(thetas)
    var = cond.variances()
    lm0 = _dense_block(kind, n_other, zero_sum, thetas[0], k)[0]
    for i, theta in enumerate(thetas):
        lm, x, cov = _dense_block(kind, n_other, zero_sum, theta, k)
        np.testing.assert_allclose(cond.x[i], x, atol=1e-6)
        # the dense mode is BFGS's, to ~1e-7: the curvature at it (and its log det) to ~1e-6
        np.testing.assert_allclose(var[i], np.diag(cov), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(cond.log_marginal[i] - cond.log_marginal[0], lm - lm0, atol=1e-6)
    # draws: the conditional covariance, each level's coefficients together; a covariance's
    # sampling sd from N draws is sqrt((S_aa S_bb + S_ab^2) / N)
    cov = _dense_block(kind, n_other, zero_sum, thetas[0], k)[2]
    z = np.random.default_rng(2).normal(size=(40_000, cond.x.shape[1]))
    draws = cond.sample(np.zeros(40_000, dtype=int), z)
    got = np.cov(draws.T)
    sd = np.sqrt(np.diag(cov))
    se = np.sqrt((np.outer(sd, sd) ** 2 + cov**2) / len(draws))
    assert np.all(np.abs(got - cov) < 5 * se + 1e-12)


@pytest.mark.parametrize("block", [False, True])
def test_the_modes_derivatives_in_theta_match_central_differences(block):
    # the warm starts' slopes (implicit function theorem at the mode, on the zero-sum
    # constraints): against modes solved afresh at theta +- h, for log sds and a correlation
    # coordinate alike (error ~h^2 plus Newton's tolerance)
    model = _block_model("binomial", 3, True)[0] if block else _model("binomial")[0]
    theta = np.array([[0.1, -0.3, 0.4, -0.2]]) if block else np.array([[-0.5, 0.2]])
    cond = model.conditional(theta)
    q = model.prior_precision(theta)
    slopes = model._slopes_at(theta, cond.x, q, cond.factor, cond.V, cond.M)[0]
    h = 1e-4
    for i in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[0, i] = h
        fresh = [
            LatentModel(**{f: getattr(model, f) for f in model.__dataclass_fields__})
            .conditional(theta + sign * step)
            .x[0]
            for sign in (1, -1)
        ]
        np.testing.assert_allclose(slopes[:, i], (fresh[0] - fresh[1]) / (2 * h), atol=1e-6)
    assert np.abs(slopes).max() > 0.01


def test_points_in_waves_come_back_in_their_order(monkeypatch):
    from poolwise.engines import latent

    rng = np.random.default_rng(2)
    thetas = rng.normal(0, 0.5, (9, 2))
    alone = [_model("binomial")[0].conditional(t[None]) for t in thetas]
    monkeypatch.setattr(latent, "WAVES", 3)
    monkeypatch.setattr(latent, "WAVE_CELLS", 1)
    model = _model("binomial")[0]
    model.log_marginal(np.zeros((1, 2)))  # a solved point: the waves go outward from it
    lm = model.log_marginal(thetas)
    cond = model.conditional(thetas)
    np.testing.assert_allclose(lm, [c.log_marginal[0] for c in alone], atol=1e-9)
    np.testing.assert_allclose(cond.x, np.concatenate([c.x for c in alone]), atol=1e-6)
    np.testing.assert_allclose(cond.log_marginal, lm, atol=1e-9)


@pytest.mark.parametrize("kind", ["binomial", "poisson", "normal"])
def test_loglik_change_is_the_difference_of_the_log_likelihoods(kind):
    """Per cell, without the difference of two large sums: the difference to a few 1e-10 of
    the sums' size, from linear predictors far out on both sides too."""
    _, _, stats, _ = _problem(kind)
    rng = np.random.default_rng(5)
    n = len(stats[0])
    eta = rng.normal(0, 8 if kind == "binomial" else 2, (1, n))
    step = rng.normal(0, 1, (7, n))
    sigma = np.array([1.3]) if kind == "normal" else None
    before = loglik(kind, stats, eta, sigma, False)
    after = loglik(kind, stats, eta + step, sigma, False)
    change = loglik_change(kind, stats, eta, step, sigma)
    np.testing.assert_allclose(change, after - before, rtol=0, atol=1e-10 * np.abs(before).max())
