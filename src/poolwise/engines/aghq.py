"""Adaptive Gauss–Hermite quadrature for one scalar grouping factor (glmer's nAGQ), on arrays.

The model: cells i with a logit (binomial) or log (poisson) link, eta_i = x_i'beta + offset_i +
b_j(i), the level effects b_j independent N(0, sd^2). Given (beta, sd) the likelihood is a product
of one-dimensional integrals, one per level,

    m_j = integral N(b | 0, sd^2) prod_{i in j} p(y_i | eta_i) db,

each computed by Gauss–Hermite quadrature centred at the integrand's mode b_j* with its curvature
h_j: nodes b_j* + sqrt(2 / h_j) t_k. Every level, and every (beta, sd) point of a batch, is done
at once. The derivatives of sum_j log m_j in beta are posterior expectations over the same
nodes, which gives beta's conditional mode and curvature (:func:`beta_laplace`). The level
effects are drawn exactly from their conditionals (:func:`sample_levels`: rejection from an
envelope of tangents, which bounds a log-concave density from above). Arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

FAMILIES = ("binomial", "poisson")
NODES = 15
# a level's mode: Newton stops after a step this small (relative to the scale), which leaves it
# ~1e-14 from the mode (quadratic convergence; the quadrature is as exact with any centre near
# the mode, so this serves only the modes returned)
LEVEL_TOL = 1e-7
NEWTON_STEPS = 60
# beta's Newton stops where the next step's decrement g' H^-1 g (twice the gain still to come in
# the log density) is this small: beta within ~1e-7 of its posterior sd of the mode, its log
# density 5e-15 below the top, and the Hessian there the mode's to ~1e-7 (a tighter bound made
# most of a grid's batches take one more pass for two or three points just above it)
BETA_TOL = 1e-14
# cells x nodes of one chunk of levels in joint_terms (a few megabytes an array)
JOINT_CHUNK = 1 << 16
# Newton steps whose decrement is below this are taken whole (the quadratic model holds there)
SAFE_DECREMENT = 1e-4
# Newton on a concave function: a step longer than this many units of the link scale is cut
MAX_STEP = 4.0
# up to this many cells a level, a level's sums add its cells' slices (numpy's reduction over a
# middle axis costs several times as much)
SLICE_BLOCK = 4
# the tangent envelope's side tangents, in sds of the level's conditional from its mode (with
# the mode's own: 87 % of the draws accepted for a normal conditional)
TANGENT = 1.2


@dataclass(frozen=True)
class LevelModel:
    """The cells of a one-factor model, sorted by level.

    ``y``: successes (binomial) or counts (poisson); ``n``: trials (binomial; ones for
    poisson, unused); ``X`` (cells, p) the common design; ``offset`` (cells,); ``codes`` each
    cell's level in 0..J-1, every level present.
    """

    family: str
    y: np.ndarray
    n: np.ndarray
    X: np.ndarray
    offset: np.ndarray
    codes: np.ndarray
    n_levels: int
    starts: np.ndarray
    # cells per level where every level has as many (a reshape sums them), else 0
    block: int = 0

    @classmethod
    def build(cls, family, y, n, X, offset, codes, n_levels: int) -> LevelModel:
        """The model with its cells sorted by level (the order every array here uses).

        Example
        -------
        >>> m = LevelModel.build("binomial", [3, 1], [9, 9], np.ones((2, 1)), np.zeros(2),
        ...                      [1, 0], 2)
        >>> m.y.tolist(), m.starts.tolist()
        ([1.0, 3.0], [0, 1])
        """
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        codes = np.asarray(codes, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        starts = np.searchsorted(codes, np.arange(n_levels))
        if np.any(np.bincount(codes, minlength=n_levels) == 0):
            raise ValueError("codes: every level needs at least one cell")
        n = np.ones(len(codes)) if n is None else np.asarray(n, dtype=float)[order]
        return cls(
            family,
            np.asarray(y, dtype=float)[order],
            n,
            np.asarray(X, dtype=float).reshape(len(codes), -1)[order],
            np.asarray(offset, dtype=float)[order],
            codes,
            int(n_levels),
            starts,
            int(len(codes) // n_levels)
            if np.all(np.diff(np.r_[starts, len(codes)]) == len(codes) // n_levels)
            else 0,
        )

    def cell_terms(self, eta: np.ndarray, value: bool = True) -> tuple[np.ndarray, ...]:
        """Log likelihood (where ``value``), its first derivative and minus its second in eta
        (constants dropped), for eta of shape (B, cells) or (B, cells, K)."""
        y, n = self._counts(eta)
        t = _exp_term(self.family, eta)
        if self.family == "poisson":
            return ((_log_lik(self.family, y, n, eta, t),) if value else ()) + (y - t, t)
        p = np.where(eta >= 0, 1.0, t) / (1.0 + t)
        np_ = n * p
        derivs = (y - np_, np_ * (1.0 - p))
        if not value:
            return derivs
        return (_log_lik(self.family, y, n, eta, t), *derivs)

    def cell_log_lik(self, eta: np.ndarray) -> np.ndarray:
        """The log likelihood alone of :meth:`cell_terms` (no derivatives)."""
        y, n = self._counts(eta)
        return _log_lik(self.family, y, n, eta, _exp_term(self.family, eta))

    def _counts(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y and n shaped to broadcast against ``eta`` (the cells' axis is its second)."""
        shape = (-1,) + (1,) * (eta.ndim - 2)
        return self.y.reshape(shape), self.n.reshape(shape)

    def level_log_lik(
        self, eta0: np.ndarray, rows: np.ndarray, levels: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        """Entry e's log likelihood: the cells of level ``levels[e]`` at row ``rows[e]`` of
        ``eta0`` (B, cells) moved by ``b[e]`` (only those cells are computed).

        Example
        -------
        >>> m = LevelModel.build("poisson", [1.0, 2.0], None, np.ones((2, 1)), np.zeros(2),
        ...                      [0, 1], 2)
        >>> m.level_log_lik(np.zeros((1, 2)), np.array([0]), np.array([1]), np.array([0.0]))
        array([-1.])
        """
        counts = np.diff(np.r_[self.starts, len(self.codes)])[levels]
        entry = np.repeat(np.arange(levels.size), counts)
        first = np.cumsum(counts) - counts
        cells = self.starts[levels][entry] + np.arange(counts.sum()) - first[entry]
        eta = eta0[rows[entry], cells] + b[entry]
        ll = _log_lik(self.family, self.y[cells], self.n[cells], eta, _exp_term(self.family, eta))
        return np.bincount(entry, weights=ll, minlength=levels.size)

    def subset(self, lo: int, hi: int) -> LevelModel:
        """The model of levels ``lo`` to ``hi`` - 1 alone (their cells; codes from 0).

        Example
        -------
        >>> m = LevelModel.build("poisson", [1.0, 2.0, 3.0], None, np.ones((3, 1)), np.zeros(3),
        ...                      [0, 1, 2], 3)
        >>> m.subset(1, 3).y.tolist()
        [2.0, 3.0]
        """
        ends = np.r_[self.starts, len(self.codes)]
        cells = slice(ends[lo], ends[hi])
        return replace(
            self,
            y=self.y[cells],
            n=self.n[cells],
            X=self.X[cells],
            offset=self.offset[cells],
            codes=self.codes[cells] - lo,
            n_levels=hi - lo,
            starts=self.starts[lo:hi] - ends[lo],
        )

    def level_products(self, r: np.ndarray, X: np.ndarray) -> np.ndarray:
        """sum_{i in j} r_ik X_i for every level j: ``r`` (cells, K), ``X`` (cells, p) -> (J, K, p)
        (a product of small matrices a level where every level has as many cells)."""
        if self.block:
            shape = (self.n_levels, self.block)
            return np.matmul(r.reshape(shape + (-1,)).transpose(0, 2, 1), X.reshape(shape + (-1,)))
        return np.stack([self.by_level(r * x[:, None], 0) for x in X.T], axis=-1)

    def by_level(self, a: np.ndarray, axis: int) -> np.ndarray:
        """Sums over each level's cells along ``axis`` (the cells' axis)."""
        if self.block == 1:
            return a
        if self.block:
            shape = a.shape[:axis] + (self.n_levels, self.block) + a.shape[axis + 1 :]
            v = a.reshape(shape)
            if self.block > SLICE_BLOCK:
                return v.sum(axis=axis + 1)
            at = (slice(None),) * (axis + 1)
            out = v[at + (0,)] + v[at + (1,)]
            for i in range(2, self.block):
                out += v[at + (i,)]
            return out
        return np.add.reduceat(a, self.starts, axis=axis)


def _exp_term(family: str, eta: np.ndarray) -> np.ndarray:
    """exp(eta) (poisson) or exp(-|eta|) (binomial): the exponential the cells' terms share."""
    if family == "poisson":
        return np.exp(eta)
    t = np.abs(eta)
    np.negative(t, out=t)
    return np.exp(t, out=t)


def _log_lik(family: str, y, n, eta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The cells' log likelihood (constants dropped), ``t`` their :func:`_exp_term`."""
    out = y * eta
    if family == "poisson":
        out -= t
        return out
    # (in place: the arrays of a grid's nodes run to megabytes)
    soft = np.log1p(t)
    soft += np.maximum(eta, 0.0)
    soft *= n
    out -= soft
    return out


def level_modes(
    model: LevelModel, eta0: np.ndarray, sd: np.ndarray, b: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each level's mode b* and curvature h of log N(b | 0, sd^2) + sum_i log p(y_i | eta0_i + b)
    (h at the point before Newton's last step, within ~1e-7 of the mode).

    ``eta0`` (B, cells), ``sd`` (B,), ``b`` a start (B, J); returns b* and h, both (B, J).
    Newton's method on the derivative (decreasing: the function is concave), kept inside the
    bracket of points where the derivative's sign is known (a step that leaves it bisects).

    Example
    -------
    >>> m = LevelModel.build("poisson", [4.0], None, np.ones((1, 1)), np.zeros(1), [0], 1)
    >>> b, h = level_modes(m, np.zeros((1, 1)), np.array([1e6]))
    >>> round(float(b[0, 0]), 6), round(float(h[0, 0]), 6)  # log 4, curvature 4
    (1.386294, 4.0)
    """
    prec = 1.0 / np.asarray(sd, dtype=float)[:, None] ** 2
    b = np.zeros((eta0.shape[0], model.n_levels)) if b is None else b.copy()
    h = np.empty_like(b)
    lo, hi = np.full(b.shape, -np.inf), np.full(b.shape, np.inf)
    rows = np.arange(b.shape[0])  # the rows still moving: only they are computed
    # while every row moves, the arrays are used whole (no copies in and out)
    state = (b, h, lo, hi, eta0, prec)
    for _ in range(NEWTON_STEPS):
        br, hr, low, high, eta_r, prec_r = (
            state if rows.size == b.shape[0] else (a[rows] for a in state)
        )
        r, w = model.cell_terms(eta_r + br[:, model.codes], value=False)
        grad = model.by_level(r, 1)
        grad -= prec_r * br
        np.add(model.by_level(w, 1), prec_r, out=hr)
        np.copyto(low, br, where=grad > 0)
        np.copyto(high, br, where=grad <= 0)
        step = np.divide(grad, hr, out=grad)
        np.minimum(np.maximum(step, -MAX_STEP, out=step), MAX_STEP, out=step)
        new = br + step
        small = ~(np.abs(step) > LEVEL_TOL * (1.0 + np.abs(br)))  # (NaN: no mode)
        # (a step this small is trusted: at the mode the gradient's rounding can carry it a few
        # ulps past the bracket's end, and a bisection would then leave the mode)
        bisect = ((new <= low) | (new >= high)) & ~small
        if bisect.any():
            bisect &= np.isfinite(low + high)
            new = np.where(bisect, 0.5 * (low + high), new)
        # (a bisection converges only linearly: Newton's step decides; a bisected level moves)
        moving = ~np.all(small, axis=1)
        np.copyto(new, br, where=~np.isfinite(new))  # (NaN: no mode)
        if rows.size < b.shape[0]:
            b[rows], h[rows], lo[rows], hi[rows] = new, hr, low, high
        else:
            b[...] = new
        if not moving.any():
            break
        rows = rows[moving]
    return b, h


@cache
def gauss_hermite(k: int = NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t and log(weights) + t^2 of k-point Gauss–Hermite quadrature (weight e^{-t^2})."""
    t, w = np.polynomial.hermite.hermgauss(k)
    return t, np.log(w) + t**2


@dataclass(frozen=True)
class Quadrature:
    """One batch of (beta, sd) points: each level's log integral and its nodes' posterior
    weights. ``log_m`` (B, J); ``nodes`` and ``weights`` (B, J, K), the weights summing to one
    over K; ``modes`` (B, J), the levels' modes (a warm start for the next batch)."""

    log_m: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    modes: np.ndarray
    eta0: np.ndarray
    # the cells' first and minus second derivatives at the nodes (B, cells, K), where asked for
    scores: tuple[np.ndarray, np.ndarray] | None = None


def quadrature(
    model: LevelModel,
    beta: np.ndarray,
    sd: np.ndarray,
    k: int = NODES,
    start: np.ndarray | None = None,
    scores: bool = False,
) -> Quadrature:
    """Adaptive Gauss–Hermite quadrature of every level's integral m_j at each (beta, sd) row.

    Example
    -------
    >>> m = LevelModel.build("poisson", [4.0], None, np.ones((1, 1)), np.zeros(1), [0], 1)
    >>> q = quadrature(m, np.zeros((1, 1)), np.array([0.5]))
    >>> from scipy import integrate, stats
    >>> f = lambda b: stats.norm.pdf(b, 0, 0.5) * np.exp(4 * b - np.exp(b))
    >>> bool(np.isclose(np.exp(q.log_m[0, 0]), integrate.quad(f, -10, 10)[0], rtol=1e-9))
    True
    """
    beta = np.atleast_2d(np.asarray(beta, dtype=float))
    sd = np.asarray(sd, dtype=float).reshape(-1)
    eta0 = model.offset + beta @ model.X.T
    b, h = level_modes(model, eta0, sd, start)
    t, logw = gauss_hermite(k)
    scale = np.sqrt(2.0 / h)
    nodes = b[..., None] + scale[..., None] * t
    eta = eta0[..., None] + nodes[:, model.codes, :]
    if scores:  # (one pass for the three)
        ll, *derivs = model.cell_terms(eta)
    else:
        ll, derivs = model.cell_log_lik(eta), None
    # log w + t^2 + the level's log integrand at its nodes (in place: arrays of megabytes)
    terms = nodes * nodes
    terms *= (-0.5 / sd**2)[:, None, None]
    terms += model.by_level(ll, 1)
    terms += logw
    top = terms.max(axis=2, keepdims=True)
    terms -= top
    weights = np.exp(terms, out=terms)
    total = weights.sum(axis=2, keepdims=True)
    log_m = (
        np.log(scale)
        + top[..., 0]
        + np.log(total[..., 0])
        - np.log(sd)[:, None]
        - 0.5 * np.log(2.0 * np.pi)
    )
    weights /= total
    return Quadrature(log_m, nodes, weights, b, eta0, derivs and tuple(derivs))


def derivatives(model: LevelModel, q: Quadrature) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient (B, p) and Hessian (B, p, p) in beta of sum_j log m_j, as posterior moments over
    the nodes: sum_i x_i E[r_i] and -sum_i x_i x_i' E[w_i] + sum_j Cov_j(sum_{i in j} x_i r_i);
    and the levels' slopes in beta (B, J, p), Cov_j(b, sum_{i in j} x_i r_i), how their means
    (and, near enough, their modes) move with beta (the cells' scores from ``q`` where it holds
    them)."""
    if q.scores is None:
        r, w = model.cell_terms(q.eta0[..., None] + q.nodes[:, model.codes, :], value=False)
    else:
        r, w = q.scores
    pi = q.weights[:, model.codes, :]
    X = model.X
    B, J, K = q.weights.shape
    p = X.shape[1]
    grad = (pi * r).sum(axis=2) @ X
    s = model.by_level(r[..., None] * X[None, :, None, :], 1)  # (B, J, K, p)
    # (sums over the nodes by products: numpy's reduction over a middle axis costs more)
    mean = (q.weights[:, :, None, :] @ s)[:, :, 0]  # (B, J, p)
    flat = s.reshape(B, J * K, p)
    ws = flat * q.weights.reshape(B, J * K, 1)
    cov = ws.transpose(0, 2, 1) @ flat - mean.transpose(0, 2, 1) @ mean
    xx = (X[:, :, None] * X[:, None, :]).reshape(-1, p * p)
    info = ((pi * w).sum(axis=2) @ xx).reshape(B, p, p)
    wb = q.weights * q.nodes
    slopes = (wb[:, :, None, :] @ s)[:, :, 0] - wb.sum(axis=2)[..., None] * mean
    return grad, cov - info, slopes


@dataclass(frozen=True)
class JointTerms:
    """The levels at one point theta = (beta, log sd): ``log_m`` sum_j log m_j, its gradient
    ``grad`` (p + 1,) and Hessian ``hess`` (p + 1, p + 1) in theta; each level's conditional
    mean ``mean`` (J,) and variance ``var`` (J,), the mean's slopes in theta ``slopes``
    (J, p + 1), and the third derivative of sum_j log m_j in log sd, ``third``."""

    log_m: float
    grad: np.ndarray
    hess: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    slopes: np.ndarray
    third: float


def joint_terms(
    model: LevelModel,
    beta: np.ndarray,
    sd: float,
    k: int = NODES,
    start: np.ndarray | None = None,
) -> JointTerms:
    """:class:`JointTerms` at (``beta`` (p,), ``sd``), ``start`` (J,) near the levels' modes.
    With f_j(b) the log of level j's integrand and u = df/dtheta (x's scores in beta, b^2/sd^2
    in log sd), every derivative is a moment over the level's nodes (Louis):
    d log m_j = E[u] (less 1 in log sd), d^2 log m_j = E[d^2 f] + Cov(u), the levels' slopes
    Cov(b, u). Linear in cells x nodes.

    Levels are taken in chunks of about ``JOINT_CHUNK`` cells x nodes (arrays that stay in
    cache, not fresh memory at every step).

    Example
    -------
    >>> m = LevelModel.build("poisson", [3.0, 5.0], None, np.ones((2, 1)), np.zeros(2), [0, 1], 2)
    >>> t = joint_terms(m, np.zeros(1), 0.5)
    >>> h = 1e-6
    >>> up = quadrature(m, np.array([[0.0]]), np.array([0.5 * np.exp(h)])).log_m.sum()
    >>> down = quadrature(m, np.array([[0.0]]), np.array([0.5 * np.exp(-h)])).log_m.sum()
    >>> bool(np.isclose(t.grad[1], (up - down) / (2 * h), rtol=1e-6))
    True
    """
    J = model.n_levels
    step = max(1, JOINT_CHUNK * J // (k * len(model.y)))
    if step >= J:
        return _joint_part(model, beta, sd, k, start)
    parts = [
        _joint_part(
            model.subset(lo, min(lo + step, J)),
            beta,
            sd,
            k,
            None if start is None else start[lo : lo + step],
        )
        for lo in range(0, J, step)
    ]
    return JointTerms(
        sum(t.log_m for t in parts),
        sum(t.grad for t in parts),
        sum(t.hess for t in parts),
        np.concatenate([t.mean for t in parts]),
        np.concatenate([t.var for t in parts]),
        np.concatenate([t.slopes for t in parts]),
        sum(t.third for t in parts),
    )


def _joint_part(model, beta, sd, k, start) -> JointTerms:
    """:func:`joint_terms` of one chunk of levels."""
    start = None if start is None else start[None]
    q = quadrature(model, beta[None], np.array([float(sd)]), k, start, scores=True)
    b, pi = q.nodes[0], q.weights[0]  # (J, K)
    r, w = q.scores
    r, w = r[0], w[0]
    p = model.X.shape[1]
    u = np.empty(b.shape + (p + 1,))
    u[..., :p] = model.level_products(r, model.X)
    t = b**2 / sd**2
    u[..., p] = t
    ubar = np.einsum("jk,jkq->jq", pi, u)
    du = u - ubar[:, None, :]
    mean = (pi * b).sum(axis=1)
    db = b - mean[:, None]
    slopes = np.einsum("jk,jkq->jq", pi * db, du)
    flat = du.reshape(-1, p + 1)
    hess = (flat * pi.reshape(-1, 1)).T @ flat
    info = (pi[model.codes] * w).sum(axis=1)
    hess[:p, :p] -= (model.X * info[:, None]).T @ model.X
    hess[p, p] -= 2.0 * ubar[:, p].sum()
    grad = ubar.sum(axis=0)
    grad[p] -= model.n_levels
    dt = du[..., p]
    # d^3 log m / dz^3 = E[d^3 f] + 3 Cov(d^2 f, d f) + the third cumulant of d f; in log sd
    # d f = t, d^2 f = -2 t, d^3 f = 4 t
    third = float(4.0 * ubar[:, p].sum() - 6.0 * (pi * dt**2).sum() + (pi * dt**3).sum())
    return JointTerms(
        float(q.log_m.sum()), grad, hess, mean, (pi * db**2).sum(axis=1), slopes, third
    )


@dataclass(frozen=True)
class BetaLaplace:
    """Beta's conditional posterior at each sd of a batch, as a Gaussian around its mode.

    ``mode`` (B, p), ``hessian`` (B, p, p) minus the log posterior's second derivative there,
    ``log_marginal`` (B,) the Laplace approximation of log integral p(beta) prod_j m_j dbeta
    (improper flat components count as density 1), ``levels`` (B, J) the levels' modes there.
    """

    mode: np.ndarray
    hessian: np.ndarray
    log_marginal: np.ndarray
    levels: np.ndarray


def beta_laplace(
    model: LevelModel,
    sd: np.ndarray,
    prior_mean: np.ndarray,
    prior_precision: np.ndarray,
    start: np.ndarray | None = None,
    k: int = NODES,
    levels: np.ndarray | None = None,
    tol: float = BETA_TOL,
) -> BetaLaplace:
    """Beta's conditional mode and curvature at every sd by Newton's method on the exact (AGHQ)
    log marginal likelihood plus independent normal priors (``prior_precision`` (B, p) or (p,),
    0 for a flat prior), from ``start`` (B, p) with the levels' modes near ``levels`` (B, J);
    each point's Newton stops where its decrement is below ``tol`` (``BETA_TOL``; a rough look
    may take a larger one: the log marginal is then within about half of it), the points still
    moving alone computed on.

    Example
    -------
    >>> m = LevelModel.build("poisson", [3.0, 5.0], None, np.ones((2, 1)), np.zeros(2), [0, 1], 2)
    >>> fit = beta_laplace(m, np.array([0.3]), np.zeros(1), np.zeros(1))
    >>> fit.mode.shape, bool(fit.hessian[0, 0, 0] > 0)
    ((1, 1), True)
    """
    sd = np.asarray(sd, dtype=float).reshape(-1)
    B, p = sd.size, model.X.shape[1]
    prec = np.broadcast_to(np.asarray(prior_precision, dtype=float), (B, p))
    mean = np.asarray(prior_mean, dtype=float)
    beta = np.zeros((B, p)) + (mean if start is None else start)

    def evaluate(rows, beta_r, levels_r):
        q = quadrature(model, beta_r, sd[rows], k, levels_r, scores=True)
        lp = q.log_m.sum(axis=1) - 0.5 * (prec[rows] * (beta_r - mean) ** 2).sum(axis=1)
        return q, lp

    rows = np.arange(B)  # the points still moving: only they are computed
    q, lp = evaluate(rows, beta, levels)
    modes = q.modes.copy()
    H = np.empty((B, p, p))
    for it in range(NEWTON_STEPS + 1):
        grad, hess, slopes = derivatives(model, q)
        H[rows] = -hess + prec[rows][:, :, None] * np.eye(p)
        if it == NEWTON_STEPS:
            break
        grad = grad - prec[rows] * (beta[rows] - mean)
        step = np.linalg.solve(H[rows], grad[..., None])[..., 0]
        step *= np.minimum(1.0, MAX_STEP / np.maximum(np.abs(step).max(axis=1), 1e-300))[:, None]
        decrement = (grad * step).sum(axis=1)
        moving = decrement > tol  # (a NaN: a point whose density overflows)
        if not moving.any():
            break
        rows, step, decrement, slopes = (
            rows[moving],
            step[moving],
            decrement[moving],
            slopes[moving],
        )
        for _ in range(40):
            # the levels start at their modes moved along their slopes
            start_levels = modes[rows] + np.einsum("bjp,bp->bj", slopes, step)
            q, lp1 = evaluate(rows, beta[rows] + step, start_levels)
            # a step that lowers the log density is halved, away from the mode only: near it
            # the fall can be the quadrature's error rather than the step's
            worse = ~(lp1 >= lp[rows]) & (decrement > SAFE_DECREMENT)
            if not worse.any():
                break
            step = np.where(worse[:, None], step / 2, step)
            decrement = np.where(worse, decrement / 2, decrement)
        beta[rows] += step
        lp[rows], modes[rows] = lp1, q.modes
    proper = prec > 0
    norm = 0.5 * np.where(proper, np.log(np.where(proper, prec, 1.0) / (2 * np.pi)), 0.0).sum(1)
    _, logdet = np.linalg.slogdet(H)
    log_marginal = lp + norm + 0.5 * p * np.log(2 * np.pi) - 0.5 * logdet
    return BetaLaplace(beta, H, log_marginal, modes)


def pooled_mode(
    model: LevelModel, prior_mean: np.ndarray, prior_precision: np.ndarray, steps: int = 8
) -> np.ndarray:
    """Beta's mode with every level's effect at zero (the limit of a small sd), by at most
    ``steps`` Newton steps, to a decrement of 1e-6: a start for beta's Newton, (p,); the prior
    mean where the steps do not get there (no mode: separated data under a flat prior).

    Example
    -------
    >>> m = LevelModel.build("poisson", [3.0, 5.0], None, np.ones((2, 1)), np.zeros(2), [0, 1], 2)
    >>> round(float(pooled_mode(m, np.zeros(1), np.zeros(1))[0]), 4)  # log of the mean count
    1.3863
    """
    mean = np.asarray(prior_mean, dtype=float)
    prec = np.asarray(prior_precision, dtype=float)
    beta = mean.copy()
    with np.errstate(all="ignore"):
        for _ in range(steps):
            r, w = model.cell_terms(model.offset + model.X @ beta, value=False)
            grad = model.X.T @ r - prec * (beta - mean)
            try:
                step = np.linalg.solve((model.X.T * w) @ model.X + np.diag(prec), grad)
            except np.linalg.LinAlgError:
                break
            step *= min(1.0, MAX_STEP / max(float(np.abs(step).max()), 1e-300))
            beta = beta + step
            if grad @ step <= 1e-6:
                return beta
    return mean.copy()


def mode_slopes(
    model: LevelModel, beta: np.ndarray, modes: np.ndarray, sd: np.ndarray
) -> np.ndarray:
    """How each level's mode (``modes`` (B, J) at the rows of ``beta`` (B, p) and ``sd``
    (B,)) moves with beta: d b_j* / d beta = -sum_{i in j} w_i x_i / h_j (the score equation
    differentiated), (B, J, p).

    Example
    -------
    >>> m = LevelModel.build("poisson", [4.0], None, np.ones((1, 1)), np.zeros(1), [0], 1)
    >>> b, _ = level_modes(m, np.zeros((1, 1)), np.array([1e6]))
    >>> round(float(mode_slopes(m, np.zeros((1, 1)), b, np.array([1e6]))[0, 0, 0]), 6)
    -1.0
    """
    eta0 = model.offset + np.atleast_2d(beta) @ model.X.T
    _, w = model.cell_terms(eta0 + modes[:, model.codes], value=False)
    h = model.by_level(w, 1) + 1.0 / np.asarray(sd, dtype=float).reshape(-1, 1) ** 2
    return -model.by_level(w[..., None] * model.X, 1) / h[..., None]


def _log_f(model, eta0, prec, b, curvature=False):
    """A level's log density (up to a constant) and its derivative at b (S, J, A), and minus
    its second derivative where ``curvature``."""
    ll, r, w = model.cell_terms(eta0[..., None] + b[:, model.codes, :])
    out = (
        model.by_level(ll, 1) - 0.5 * prec[:, None, None] * b**2,
        model.by_level(r, 1) - prec[:, None, None] * b,
    )
    return out + (model.by_level(w, 1) + prec[:, None, None],) if curvature else out


def _envelope(model, eta0, prec, centre, h, middle=None):
    """Tangents of each level's log density at ``centre`` +- TANGENT sds (of curvature ``h``)
    and in the middle: at the centre, or at the point of ``middle`` (x, its value, its slope,
    each (S, J)). Points (S, J, 3), values and slopes; ``valid`` where the points are in order
    and the side slopes point inwards (the envelope then has finite mass)."""
    d = TANGENT / np.sqrt(h)
    if middle is None:
        x = centre[..., None] + np.stack([-d, np.zeros_like(d), d], -1)
        f, g = _log_f(model, eta0, prec, x)
    else:
        sides = centre[..., None] + np.stack([-d, d], -1)
        fs, gs = _log_f(model, eta0, prec, sides)
        x, f, g = (
            np.stack([a[..., 0], m, a[..., 1]], -1)
            for a, m in zip((sides, fs, gs), middle, strict=True)
        )
    valid = (g[..., 0] > 0) & (g[..., 2] < 0) & (x[..., 0] < x[..., 1]) & (x[..., 1] < x[..., 2])
    return x, f, g, valid & np.isfinite(f).all(-1) & np.isfinite(d)


def sample_levels(
    model: LevelModel,
    beta: np.ndarray,
    sd: np.ndarray,
    rng: np.random.Generator,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """One exact draw of every level's effect from its conditional given each (beta, sd) row:
    (S, J). Rejection sampling from the envelope of three tangents (the log density is
    concave, so its tangents lie above it): at ``start`` (roughly the levels' modes, (S, J)),
    and 1.2 sds (of the curvature there) either side of the point one Newton step on; where
    those do not enclose the mode, the mode is found first. Rejected draws are drawn again.

    Example
    -------
    >>> m = LevelModel.build("poisson", [30.0], None, np.ones((1, 1)), np.zeros(1), [0], 1)
    >>> x = sample_levels(m, np.zeros((4000, 1)), np.full(4000, 1e3), np.random.default_rng(0))
    >>> bool(abs(np.exp(x).mean() - 30.0) < 0.5)  # the Gamma(31, 1) conditional of exp(b)
    True
    """
    sd = np.asarray(sd, dtype=float).reshape(-1)
    prec = 1.0 / sd**2
    eta0 = model.offset + np.atleast_2d(beta) @ model.X.T
    start = np.zeros((eta0.shape[0], model.n_levels)) if start is None else start
    f, g, h = (a[..., 0] for a in _log_f(model, eta0, prec, start[..., None], curvature=True))
    centre = start + np.clip(g / h, -MAX_STEP, MAX_STEP)
    x, f, g, valid = _envelope(model, eta0, prec, centre, h, (start, f, g))
    if not valid.all():
        rows = np.flatnonzero(~valid.all(axis=1))
        mode, h = level_modes(model, eta0[rows], sd[rows], centre[rows])
        x[rows], f[rows], g[rows], _ = _envelope(model, eta0[rows], prec[rows], mode, h)
    # the tangents k = 0, 1, 2 (values relative to the centre's) cross at z01 and z12: the
    # envelope is tangent 0 up to z01, tangent 1 to z12, tangent 2 beyond
    centre_f = f[..., 1].copy()
    f = f - centre_f[..., None]
    z01 = (f[..., 1] - f[..., 0] + g[..., 0] * x[..., 0] - g[..., 1] * x[..., 1]) / (
        g[..., 0] - g[..., 1]
    )
    z12 = (f[..., 2] - f[..., 1] + g[..., 1] * x[..., 1] - g[..., 2] * x[..., 2]) / (
        g[..., 1] - g[..., 2]
    )
    at01, at12 = g[..., 1] * (z01 - x[..., 1]), g[..., 1] * (z12 - x[..., 1])
    width = z12 - z01
    flat = np.abs(g[..., 1] * width) < 1e-8
    g1 = np.where(flat, 1.0, g[..., 1])
    growth = np.where(flat, g[..., 1] * width, np.expm1(g1 * width))  # e^{g1 width} - 1
    middle = np.where(flat, width, growth / g1)
    masses = np.stack(
        [np.exp(at01) / g[..., 0], np.exp(at01) * middle, -np.exp(at12) / g[..., 2]], -1
    )
    cum = np.cumsum(masses, -1)
    out = np.empty_like(centre)
    rows, levels = np.nonzero(np.ones(centre.shape, dtype=bool))  # the entries to draw
    while rows.size:
        u = rng.random((rows.size, 3))
        c = cum[rows, levels]
        seg = (c < u[:, :1] * c[:, -1:]).sum(-1)
        r = u[:, 1]
        a, b, gr = z01[rows, levels], z12[rows, levels], g[rows, levels]
        with np.errstate(divide="ignore", invalid="ignore"):
            mid = np.where(
                flat[rows, levels],
                a + r * width[rows, levels],
                a + np.log1p(r * growth[rows, levels]) / g1[rows, levels],
            )
            draw = np.where(
                seg == 0,
                a + np.log(r) / gr[:, 0],
                np.where(seg == 1, mid, b + np.log(r) / gr[:, 2]),
            )
        xk, fk, gk = (
            np.take_along_axis(a_[rows, levels], seg[:, None], -1)[:, 0] for a_ in (x, f, g)
        )
        envelope = fk + gk * (draw - xk)
        fd = model.level_log_lik(eta0, rows, levels, draw) - 0.5 * prec[rows] * draw**2
        accept = np.log(u[:, 2]) <= fd - centre_f[rows, levels] - envelope
        out[rows[accept], levels[accept]] = draw[accept]
        rows, levels = rows[~accept], levels[~accept]
    return out
