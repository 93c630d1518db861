"""The simplified-Laplace mean correction of a latent Gaussian model's effects, and the check of
the Gaussian approximation (arrays only; LAPLACE.md sections 3 and 7).

Given theta, the effects' log density about the mode ``x*`` is, with ``u = x - x*``,
``eta = A x`` and ``t_i`` the third derivative of cell i's log likelihood in its eta,

    f(x* + u) = f(x*) - u' H u / 2 + sum_i t_i (a_i' u)^3 / 6 + ...

Expanding ``exp`` of the cubic term to first order under ``N(0, Sigma)`` (``Sigma = H^-1``,
restricted to the zero-sum constraints) gives the mean of u, by Isserlis' theorem
``E[u (a_i'u)^3] = 3 Sigma a_i (a_i' Sigma a_i)``:

    delta = 1/2 sum_i Cov(x, eta_i) Var(eta_i) t_i = Sigma A' c,   c_i = t_i Var(eta_i) / 2.

This is the mean shift of Rue, Martino & Chopin's (2009, section 3.2.3) simplified Laplace
marginal (its skew-normal's location moves by the same first-order amount; INLA's and Stan's
adjusted Laplace use it likewise), for every effect at once with one solve per theta point
instead of one per effect. The effects' marginals given theta become Gaussians shifted by delta
(the variance keeps H^-1's: its correction is of the next order). ``Var(eta_i)`` is the
diagonal of ``A Sigma A'``, from the blocked factor: for cell c in level j of the eliminated
term (multiplier v_c) and rest row r_c, ``Var = v_c^2 / D_j + |L^-1 (r_c - v_c C_j / D_j)|^2``.

:func:`importance_check` compares the Gaussian with the exact conditional by importance sampling:
the Pareto k-hat of the weights ``p(x, y | theta) / N(x; x*, Sigma)`` (Vehtari et al. 2024).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .latent import CACHE_CELLS, Conditional, LatentModel, loglik, loglik_change

# floats of the importance draws drawn at once (the chunks fix which normals each draw gets)
CHUNK_FLOATS = 20_000_000
# beyond this many flops (cells x rest^2 x points) the shift is not computed
MAX_FLOPS = 2e10


def third_derivative(kind: str, stats: tuple, eta: np.ndarray) -> np.ndarray:
    """The third derivative of each cell's log likelihood in its eta (K, cells); 0 for a normal
    outcome.

    Example
    -------
    >>> float(third_derivative("poisson", (np.array([3.0]),), np.zeros((1, 1)))[0, 0])
    -1.0
    """
    if kind == "binomial":
        _, n = stats
        # with t = tanh(eta / 2) = 2 p - 1 (the logistic without overflow), p (1 - p) = (1 -
        # t^2) / 4: the third derivative -n p (1 - p) (1 - 2 p) is n t (1 - t^2) / 4
        t = np.tanh(0.5 * eta)
        out = np.square(t)
        np.subtract(1.0, out, out=out)
        out *= t
        out *= 0.25 * n
        return out
    if kind == "poisson":
        return -np.exp(eta)
    return np.zeros_like(eta)


def eta_variances(model: LatentModel, cond: Conditional) -> np.ndarray:
    """``Var(eta_i)`` given theta at each of the conditional's K points (K, cells), the zero-sum
    constraints included.

    The rest's part ``|L^-1 u_c|^2`` with ``u_c = r_c - C_j' y_c`` (``y_c = D_j^-1 v_c``) is the
    quadratic form ``u_c' S^-1 u_c``, expanded so that no (cells x rest) block is formed:
    ``r_c' S^-1 r_c`` (the rest's pair pattern against ``S^-1``), ``- 2 y_c' (C S^-1)_j r_c``
    (the rest's nonzeros against ``C S^-1``) and ``y_c' (C S^-1 C')_jj y_c`` (one k x k block a
    level): O(levels x rest^2) a point, not O(cells x rest^2)."""
    s = model.structure
    f = cond.factor
    Sinv = f.rest_inverse()
    var = s.rest_quadratic(Sinv)  # r_c' S^-1 r_c
    if s.unit:
        # a cell's part in the eliminated unit: its k values v at its level j; D_j^-1 v
        codes = s.terms[s.unit[0]].codes
        V = np.stack([s.terms[i].values.astype(float) for i in s.unit], axis=1)  # (n, k)
        y = np.einsum("pcab,cb->pca", f.Dinv[:, codes], V)  # (K, n, k)
        var += np.einsum("pca,ca->pc", y, V)
        # the points at once where C is dense, else one by one
        parts = (
            [(slice(None), f.C)]
            if s.batched
            else [(slice(p, p + 1), c.toarray()[None]) for p, c in enumerate(f.C)]
        )
        for p, C in parts:
            var[p] += _cross_terms(s, codes, C, Sinv[p], y[p])
    if cond.V is not None:
        av = np.stack([s.eta(cond.V[:, :, r]) for r in range(cond.V.shape[2])], axis=1)
        half = np.linalg.inv(np.linalg.cholesky(cond.M)) @ av
        var = var - (half**2).sum(axis=1)
    return np.maximum(var, 0.0)


def _cross_terms(s, codes: np.ndarray, C: np.ndarray, Sinv: np.ndarray, y: np.ndarray):
    """``y_c' (C S^-1 C')_jj y_c - 2 y_c' (C S^-1)_j r_c`` of every cell c (in level j) at K
    points: C (K, J k, m) dense, S^-1 (K, m, m), y (K, cells, k); a cell's rest row r_c holds
    its covariates and its level of each term left in the rest."""
    K, k, m = len(C), s.k, s.m
    T = C @ Sinv  # (K, J k, m)
    G = np.einsum("pjam,pjbm->pjab", T.reshape(K, -1, k, m), C.reshape(K, -1, k, m))
    out = np.einsum("pca,pcab,pcb->pc", y, G[:, codes], y)
    pos = np.zeros(s.dim, dtype=np.int64)
    pos[s.rest] = np.arange(m)  # where each coefficient sits in the rest
    rest = [(s.X[:, i], pos[i]) for i in range(s.p)]
    rest += [
        (t.values, pos[s.offsets[i] + t.codes]) for i, t in enumerate(s.terms) if i not in s.unit
    ]
    flat = T.reshape(K, -1)
    for a in range(k):
        row = (codes * k + a) * m
        Tr = sum(values * flat[:, row + col] for values, col in rest)  # (C S^-1)_ja r_c
        out -= 2 * y[:, :, a] * Tr
    return out


def covariance_times(cond: Conditional, g: np.ndarray) -> np.ndarray:
    """``Sigma g`` (K, dim): H^-1 g restricted to the constraints (kriging)."""
    out = cond.factor.solve(g)
    if cond.V is not None:
        lam = np.linalg.solve(cond.M, np.swapaxes(cond.V, 1, 2) @ g[:, :, None])
        out = out - (cond.V @ lam)[:, :, 0]
    return out


def affordable(model: LatentModel, points: int) -> bool:
    """Whether :func:`mean_shift` at ``points`` theta points fits ``MAX_FLOPS``."""
    s = model.structure
    return model.likelihood != "normal" and s.n * s.m**2 * points <= MAX_FLOPS


def mean_shift(model: LatentModel, cond: Conditional) -> np.ndarray:
    """The simplified-Laplace shift of every effect's conditional mean (K, dim); zeros for a
    normal outcome (its conditional is Gaussian).

    Example
    -------
    >>> from poolwise.engines.blocks import Structure, Term
    >>> s = Structure(np.ones((3, 1)), [Term(np.arange(3), np.ones(3), 3)])
    >>> m = LatentModel(s, "poisson", (np.array([0.0, 1.0, 5.0]),), np.zeros(3), np.zeros(1),
    ...                 np.full(1, 0.25), (0,), (None,), (False,), None, lambda t: 0 * t[:, 0])
    >>> shift = mean_shift(m, m.conditional(np.zeros((1, 1))))
    >>> bool(shift[0, 1] < 0)  # a zero count: the log rate's posterior leans to the left
    True
    """
    if model.likelihood == "normal":
        return np.zeros_like(cond.x)
    s = model.structure
    eta = model.offset + s.eta(cond.x)
    c = 0.5 * third_derivative(model.likelihood, model.stats, eta) * eta_variances(model, cond)
    return covariance_times(cond, s.gradient(c))


def importance_check(
    model: LatentModel, cond: Conditional, theta: np.ndarray, draws: int, seed: int
) -> tuple[float, float]:
    """Importance sampling of the conditional at one theta point (``cond`` at that point,
    ``theta`` (1, d)) from ``draws`` draws of its Gaussian: the Pareto k-hat of the weights
    ``p(x, y | theta) / N(x; x*, Sigma)`` (below 0.5 the Gaussian is close to the conditional,
    above 0.7 it misses its tails) and the log of their mean, ``log p(y | theta)`` less its
    Laplace approximation. The draws' normals depend on ``seed`` only: the same at every point.

    Example
    -------
    >>> from poolwise.engines.blocks import Structure, Term
    >>> s = Structure(np.ones((3, 1)), [Term(np.arange(3), np.ones(3), 3)])
    >>> m = LatentModel(s, "poisson", (np.array([40.0, 50.0, 60.0]),), np.zeros(3), np.zeros(1),
    ...                 np.full(1, 0.25), (0,), (None,), (False,), None, lambda t: 0 * t[:, 0])
    >>> theta = np.zeros((1, 1))
    >>> khat, error = importance_check(m, m.conditional(theta), theta, 400, 1)
    >>> bool(khat < 0.5 and abs(error) < 0.01)
    True
    """
    from arviz_stats.base import array_stats
    from scipy.special import logsumexp

    rng = np.random.default_rng([seed, 15])
    s = model.structure
    sigma = None if model.sigma_index is None else np.exp(theta[:, model.sigma_index])
    eta = model.offset + s.eta(cond.x)
    w = loglik(model.likelihood, model.stats, eta, sigma)[2][0]
    # the prior's part of the log weight, -(x* - m)' Q u (its quadratic cancels the Gaussian's)
    slope = s.prior_times(model.prior_precision(theta), cond.x - model.prior_mean)[0]
    logw = np.empty(draws)
    step = max(1, CHUNK_FLOATS // max(s.n, s.dim))  # draws whose arrays fit at once
    part = max(1, CACHE_CELLS // max(s.n, s.dim))  # ... and stay in the cache
    for a in range(0, draws, step):
        r = min(step, draws - a)
        # one solve with every draw as a column
        u = cond.factor.sample(rng.standard_normal((1, s.dim, r)))[0].T
        if cond.V is not None:
            lam = np.linalg.solve(cond.M[0], cond.constraints @ u.T)
            u = u - (cond.V[0] @ lam).T
        for b in range(0, r, part):
            ub = u[b : b + part]
            eta_u = s.eta(ub, contiguous=False)
            change = loglik_change(model.likelihood, model.stats, eta, eta_u, sigma)
            logw[a + b : a + b + len(ub)] = change + 0.5 * (eta_u**2 @ w) - ub @ slope
    khat = array_stats.pareto_khat(logw[None], log_weights=True, tail="right")
    return float(khat), float(logsumexp(logw) - np.log(draws))


def shifted(model: LatentModel, cond: Conditional) -> tuple[Conditional, np.ndarray]:
    """The conditional with its modes moved by :func:`mean_shift` (the shifts' means), in
    batches of points whose cells' arrays (some eight alive at once) stay in the cache."""
    K = cond.x.shape[0]
    size = max(1, CACHE_CELLS // (8 * model.structure.n))
    cond.factor.rest_inverse()  # once for every batch (and the variances, where batched)
    shift = np.concatenate(
        [mean_shift(model, cond.take(np.arange(a, min(a + size, K)))) for a in range(0, K, size)]
    )
    return replace(cond, x=cond.x + shift), shift


def separated(model: LatentModel) -> list[int]:
    """Per group term, the levels whose outcomes leave the likelihood no interior maximum: all
    failures or all successes (binomial), only zero counts (Poisson); none for a normal one."""
    s = model.structure
    out = []
    for t in s.terms:
        if model.likelihood == "normal":
            out.append(0)
            continue
        total = np.bincount(t.codes, model.stats[0], t.n_levels)
        edge = total == 0
        if model.likelihood == "binomial":
            edge |= total == np.bincount(t.codes, model.stats[1], t.n_levels)
        out.append(int(edge.sum()))
    return out
