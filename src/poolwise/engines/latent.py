"""Latent Gaussian models: the effects' mode and curvature given the variance parameters, and the
Laplace approximation of the variance parameters' posterior (arrays only; see LAPLACE.md).

The latent field ``x = (beta, b_1, ..., b_T)`` has the prior ``beta ~ N(m, diag(1/q_beta))``
(precision 0: flat) and ``b_t ~ N(0, sd_t^2 I)``, restricted to sum zero where ``zero_sum[t]``
(numpyro's ZeroSumNormal, as the NUTS model has it). A correlated block of terms (one factor's
``(1 + x|g)``) instead gives each level's coefficient vector ``N(0, D R D)`` (D the terms' sds, R
their correlation matrix; its zero-sum terms all sum to zero, the model of NUTS's blocks where
every coefficient or none sums to zero). ``theta`` holds the free log sds, each block's
correlation coordinates (:mod:`poolwise.engines.correlation`) and the log residual sd of a
normal outcome. For K points ``theta`` at once, Newton's method (PIRLS)
finds the mode ``x*`` of ``log p(y | x) + log p(x | theta)`` on the constraint set (projected
steps), batched over the points, from the mode at the nearest point already solved moved along
its derivative in theta (the points in waves outward from the solved ones); a normal outcome's
mode is one step. Then

    log p(theta | y) ~ log p(theta) + log p(y | x*) + log p(x* | theta) - 1/2 log det H_c

with ``H_c`` the curvature restricted to the constraints, ``det H_c = det H det(C H^-1 C') /
det(C C')``: exact for a normal outcome. Given theta, ``x | y ~ N(x*, H^-1 - V M^-1 V')``,
``V = H^-1 C'``, ``M = C V`` (conditioning by kriging).

Interface: :class:`LatentModel` (build once per design; the structure's linear algebra is
:mod:`poolwise.engines.blocks`) with ``log_marginal(theta)`` (K, d) -> (K,), the objective of the
quadrature and empirical-Bayes engines, and ``conditional(theta)`` -> :class:`Conditional`
(modes, marginal variances, draws). Another engine for the same model (adaptive Gauss-Hermite
per level, correlated blocks) plugs in by offering the same two methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .blocks import Factor, Precision, Structure, row_dots
from .correlation import beyond_range, corr_cholesky
from .optimize import hessian

NEWTON_STEPS = 60
# Newton stops when the squared decrement g' H^-1 g (twice the gain still to come) is this
# small (relative to 1 + |f| 1e-3); the gain still to come is added to the log density
DECREMENT = 1e-12
# below this squared decrement Newton's quadratic model holds: the full step is taken unchecked
QUADRATIC = 1e-4
# warm starts kept (modes of the points solved so far)
KEEP_MODES = 4096
# the step in theta of the forward difference that gives the modes' derivatives
SLOPE_STEP = 1e-6
# the modes' derivatives move a start from a solved point at most this far in theta
SLOPE_REACH = 1.0
# Newton's points go in about this many waves, each of at least WAVE_CELLS cells x points (in
# smaller ones the calls' overhead outweighs the arrays' work)
WAVES = 24
WAVE_CELLS = 1 << 18
# cells x points whose log likelihoods are best taken at once (the arrays stay in the cache)
CACHE_CELLS = 1 << 20
# floats of the arrays of one batch of points (larger sets of points go in batches)
BATCH_FLOATS = 20_000_000
# floats of the evaluations held for ``conditional_at``: the 25 points of a central composite
# design in 4 dimensions with a factor of InstEval's size (~1.5e6 floats each)
HOLD_FLOATS = 40_000_000
# floats of a chunk of draws (every array of the draws' linear algebra is of this size: under
# the C library's largest threshold for fresh memory, so that their memory is reused)
DRAW_FLOATS = 2_000_000
# central-difference step of the log prior's gradient in theta (the prior is cheap and smooth)
PRIOR_STEP = 1e-6
# ... and of its Hessian (rounding error ~1e-16 |prior| / step^2, truncation ~step^2)
PRIOR_HESSIAN_STEP = 1e-4


def _swap(a: np.ndarray, block: int = 256) -> np.ndarray:
    """``a`` with its last two axes swapped, contiguous, copied ``block`` rows at a time (a
    transposed view copied whole strides through memory)."""
    out = np.empty((*a.shape[:-2], a.shape[-1], a.shape[-2]))
    for i in range(0, a.shape[-2], block):
        out[..., i : i + block] = np.swapaxes(a[..., i : i + block, :], -1, -2)
    return out


def loglik(
    kind: str, stats: tuple, eta: np.ndarray, sigma: np.ndarray | None, derivatives: bool = True
):
    """Log likelihood (K,), its derivative and minus its second derivative in eta (K, cells);
    the log likelihood alone where not ``derivatives``.

    ``binomial``: stats (successes, trials); ``poisson``: (counts,), the exposure in the offset;
    ``normal``: (n, mean, m2) per cell and ``sigma`` (K,).

    Example
    -------
    >>> ll, d, w = loglik("poisson", (np.array([2.0]),), np.zeros((1, 1)), None)
    >>> float(ll[0]), float(d[0, 0]), float(w[0, 0])
    (-1.0, 1.0, 1.0)
    """
    if kind == "binomial":
        k, n = stats
        e = np.exp(-np.abs(eta))  # one exponential serves softplus(eta) and sigmoid(eta)
        softplus = np.log1p(e)
        softplus += np.maximum(eta, 0.0)
        softplus *= n
        ll = (k * eta - softplus).sum(axis=1)
        if not derivatives:
            return ll
        r = np.add(e, 1.0, out=softplus)
        np.reciprocal(r, out=r)  # 1 / (1 + e)
        e *= r  # the smaller of p and 1 - p
        p = np.where(eta >= 0, r, e)
        e *= r  # p (1 - p)
        p *= n
        return ll, np.subtract(k, p, out=p), np.multiply(n, e, out=e)
    if kind == "poisson":
        (c,) = stats
        mu = np.exp(eta)
        ll = (c * eta - mu).sum(axis=1)
        return (ll, c - mu, mu) if derivatives else ll
    n, mean, m2 = stats
    s2 = (sigma**2)[:, None]
    r = mean - eta
    ll = (-n * np.log(sigma)[:, None] - (m2 + n * r**2) / (2 * s2)).sum(axis=1)
    return (ll, n * r / s2, np.broadcast_to(n / s2, eta.shape)) if derivatives else ll


def loglik_change(
    kind: str, stats: tuple, eta: np.ndarray, step: np.ndarray, sigma: np.ndarray | None = None
) -> np.ndarray:
    """``loglik(eta + step) - loglik(eta)`` (K,) for steps (K, cells) from the cells' linear
    predictors ``eta`` (1 or K, cells): per cell, without the difference of two large sums
    (binomial: ``k step - n log(1 + p (e^step - 1))``, p the logistic of eta; Poisson:
    ``c step - mu (e^step - 1)``).

    Example
    -------
    >>> stats, eta = (np.array([3.0, 1.0]), np.array([10.0, 4.0])), np.array([[0.2, -1.5]])
    >>> step = np.array([[0.3, -0.4], [-1.0, 2.0]])
    >>> whole = loglik("binomial", stats, eta + step, None, False)
    >>> change = loglik_change("binomial", stats, eta, step)
    >>> bool(np.allclose(change, whole - loglik("binomial", stats, eta, None, False)))
    True
    """
    with np.errstate(over="ignore"):
        if kind == "binomial":
            k, n = stats
            e = np.exp(-np.abs(eta))
            p = np.where(eta >= 0, 1.0, e) / (1.0 + e)
            out = np.expm1(step)
            out *= p
            np.log1p(out, out=out)
            return step @ np.asarray(k, dtype=float) - out @ np.asarray(n, dtype=float)
        if kind == "poisson":
            (c,) = stats
            out = np.expm1(step)
            out *= np.exp(eta)
            return step @ np.asarray(c, dtype=float) - out.sum(axis=1)
    return loglik(kind, stats, eta + step, sigma, False) - loglik(kind, stats, eta, sigma, False)


@dataclass
class Conditional:
    """The effects given theta at K points: modes ``x`` (K, dim) and what gives their spread."""

    x: np.ndarray
    factor: Factor
    V: np.ndarray | None  # H^-1 C' (K, dim, r)
    M: np.ndarray | None  # C H^-1 C' (K, r, r)
    constraints: np.ndarray | None  # C (r, dim)
    log_marginal: np.ndarray
    var: np.ndarray | None = None  # the variances, once computed

    def variances(self, single: bool = False) -> np.ndarray:
        """Marginal variances of every effect (K, dim), the constraints' correction included
        (computed once); ``single``: for tables, where a large factor's may take single
        precision (:meth:`Factor.diag_inverse`; not kept: derivatives read them in double)."""
        if self.var is not None:
            return self.var
        var = self.factor.diag_inverse(single)
        if self.V is not None:  # the diagonal of V M^-1 V'
            var = var - row_dots(self.V @ np.linalg.inv(self.M), self.V)
        var = np.maximum(var, 0.0)
        if not single:
            self.var = var
        return var

    @staticmethod
    def concat(parts: list[Conditional]) -> Conditional:
        """The conditionals of several batches of points as one."""
        if len(parts) == 1:
            return parts[0]

        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        factor = Factor.concat([p.factor for p in parts])
        return Conditional(
            cat("x"),
            factor,
            cat("V"),
            cat("M"),
            parts[0].constraints,
            cat("log_marginal"),
            cat("var"),
        )

    def take(self, points: np.ndarray) -> Conditional:
        """The conditional at the ``points`` (indices)."""
        V, M = (None, None) if self.V is None else (self.V[points], self.M[points])
        return Conditional(
            self.x[points],
            self.factor.take(points),
            V,
            M,
            self.constraints,
            self.log_marginal[points],
            None if self.var is None else self.var[points],
        )

    def sample(self, points: np.ndarray, z: np.ndarray) -> np.ndarray:
        """One draw (n, dim) of the effects at each of the ``points`` (indices, n) from standard
        normals z (n, dim). Each point's factor is used once, its draws as columns (in chunks of
        ``DRAW_FLOATS``), batched factors in bands of points by their number of draws; small
        factors are simply taken once per draw."""
        if self.factor.s.factor_size * len(points) <= BATCH_FLOATS // 8:
            return self.x[points] + self._spread(points, z[:, :, None])[:, :, 0]
        x = np.empty_like(z)
        uniq, inv, counts = np.unique(points, return_inverse=True, return_counts=True)
        order = np.argsort(inv, kind="stable")
        column = np.empty(len(points), dtype=np.int64)
        column[order] = np.arange(len(points)) - np.repeat(np.cumsum(counts) - counts, counts)
        # batched factors: the points in bands of their draws' count up to a power of two (the
        # columns padded); else one point at a time, unpadded
        batched = self.factor.s.batched
        width = (1 << np.ceil(np.log2(counts)).astype(np.int64)) if batched else counts
        key = width if batched else np.arange(uniq.size)
        for b in np.unique(key):
            band = np.flatnonzero(key == b)
            w = width[band[0]]
            slot = np.full(uniq.size, -1)
            slot[band] = np.arange(band.size)
            draws = np.flatnonzero(slot[inv] >= 0)
            step = max(1, DRAW_FLOATS // (band.size * z.shape[1]))
            for c in range(0, w, step):
                chunk = (column[draws] >= c) & (column[draws] < c + step)
                if not chunk.any():
                    continue
                at, col = slot[inv[draws[chunk]]], column[draws[chunk]] - c
                zpad = np.zeros((band.size, min(step, w - c), z.shape[1]))
                zpad[at, col] = z[draws[chunk]]
                y = self._spread(uniq[band], _swap(zpad))
                x[draws[chunk]] = self.x[uniq[band]][at] + _swap(y)[at, col]
        return x

    def _spread(self, idx: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Draws with the conditional covariance at the points ``idx`` (K,) from z (K, dim, r)."""
        y = self.factor.take(idx).sample(z)
        if self.V is not None:
            lam = np.linalg.solve(self.M[idx], self.constraints @ y)
            y = y - self.V[idx] @ lam
        return y


@dataclass(frozen=True)
class CorrBlock:
    """A correlated block of a latent model: its ``terms`` (indices, the structure's block)
    and the columns of theta holding its correlation coordinates (``corr_index``)."""

    terms: tuple[int, ...]
    corr_index: tuple[int, ...]


@dataclass
class LatentModel:
    """A latent Gaussian model on cells (see the module docstring).

    ``sd_index[t]`` is the column of theta holding term t's log sd, or None where ``sd_fixed[t]``
    gives it; ``sigma_index`` likewise the log residual sd of a normal outcome;
    ``log_prior(theta)`` is the log density of theta (K, d) -> (K,), Jacobians included;
    ``blocks`` the correlated blocks (the structure's, in its order).

    Example
    -------
    >>> from poolwise.engines.blocks import Structure, Term
    >>> s = Structure(np.ones((2, 1)), [Term(np.array([0, 1]), np.ones(2), 2)])
    >>> m = LatentModel(s, "poisson", (np.array([1.0, 3.0]),), np.zeros(2), np.zeros(1),
    ...                 np.zeros(1), (0,), (None,), (True,), None, lambda t: -t[:, 0] ** 2)
    >>> cond = m.conditional(np.zeros((1, 1)))
    >>> bool(abs(cond.x[0, 1:].sum()) < 1e-12)
    True
    """

    structure: Structure
    likelihood: str
    stats: tuple
    offset: np.ndarray
    beta_mean: np.ndarray
    beta_precision: np.ndarray
    sd_index: tuple[int | None, ...]
    sd_fixed: tuple[float | None, ...]
    zero_sum: tuple[bool, ...]
    sigma_index: int | None
    log_prior: Callable[[np.ndarray], np.ndarray]
    blocks: tuple[CorrBlock, ...] = ()

    def __post_init__(self) -> None:
        s = self.structure
        if tuple(b.terms for b in self.blocks) != s.blocks:
            raise ValueError("LatentModel: the blocks must be the structure's")
        for b in self.blocks:
            zs = {self.zero_sum[t] for t in b.terms}
            if len(zs) > 1:
                raise ValueError("LatentModel: a block's terms all sum to zero, or none")
        rows = []
        for t, off, zs in zip(s.terms, s.offsets, self.zero_sum, strict=True):
            if zs:
                row = np.zeros(s.dim)
                row[off : off + t.n_levels] = 1.0
                rows.append(row)
        self.constraints = np.array(rows) if rows else None
        self.prior_mean = np.zeros(s.dim)
        self.prior_mean[: s.p] = self.beta_mean
        self._seen: list[np.ndarray] = []
        # the latest evaluations of log_marginal, oldest first, by number: their points and
        # conditionals; where each point is among them (its bytes: (number, row))
        self._held: dict[int, tuple[np.ndarray, Conditional]] = {}
        self._where: dict[bytes, tuple[int, int]] = {}
        self._number = 0
        self._modes: list[np.ndarray] = []
        self._slopes: list[np.ndarray] = []

    def sds(self, theta: np.ndarray) -> np.ndarray:
        """Each term's sd at each point (K, T)."""
        cols = [
            np.exp(theta[:, i]) if i is not None else np.full(len(theta), fixed)
            for i, fixed in zip(self.sd_index, self.sd_fixed, strict=True)
        ]
        return np.stack(cols, axis=1) if cols else np.zeros((len(theta), 0))

    def correlation_factors(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each block's Cholesky factor of its correlation matrix at each point (K, k, k)."""
        return [corr_cholesky(theta[:, list(b.corr_index)], len(b.terms))[0] for b in self.blocks]

    def _precision(self, sds: np.ndarray, factors: list[np.ndarray]) -> Precision:
        """The prior precision: 1 / sd^2 per independent term; per block and level the inverse
        of D R D = (D L)(D L)'."""
        s = self.structure
        q = np.empty((sds.shape[0], s.dim))
        q[:, : s.p] = self.beta_precision
        for j, (t, off) in enumerate(zip(s.terms, s.offsets, strict=True)):
            q[:, off : off + t.n_levels] = (1.0 / sds[:, j] ** 2)[:, None]
        coupled = []
        for b, L in zip(self.blocks, factors, strict=True):
            k = len(b.terms)
            A = sds[:, list(b.terms), None] * L
            Ainv = np.linalg.solve(A, np.broadcast_to(np.eye(k), A.shape))
            P = np.swapaxes(Ainv, 1, 2) @ Ainv
            for a, t in enumerate(b.terms):
                off = s.offsets[t]
                q[:, off : off + s.terms[t].n_levels] = P[:, a, a][:, None]
            P[:, np.arange(k), np.arange(k)] = 0.0
            coupled.append(P)
        return Precision(q, tuple(coupled))

    def _start(self, theta: np.ndarray) -> np.ndarray:
        """Each point's start: the mode at the nearest point solved so far, moved to first
        order along its derivative in theta where that point is within ``SLOPE_REACH`` (else
        the prior mean)."""
        if not self._seen:
            return np.tile(self.prior_mean, (len(theta), 1))
        from scipy.spatial import cKDTree

        seen = np.concatenate(self._seen)
        if theta.shape[1] == 0:
            return np.tile(self._modes[-1][-1], (len(theta), 1))
        _, nearest = cKDTree(seen).query(theta)
        delta = theta - seen[nearest]
        delta[np.abs(delta).max(axis=1) > SLOPE_REACH] = 0.0  # far: the mode itself
        moved = (np.concatenate(self._slopes)[nearest] @ delta[:, :, None])[:, :, 0]
        return np.concatenate(self._modes)[nearest] + moved

    def _remember(self, theta: np.ndarray, x: np.ndarray, slopes: np.ndarray) -> None:
        ok = np.all(np.isfinite(x), axis=1) & np.all(np.isfinite(slopes), axis=(1, 2))
        self._seen.append(theta[ok])
        self._modes.append(x[ok])
        self._slopes.append(slopes[ok])
        if sum(len(s) for s in self._seen) > KEEP_MODES:
            self._seen, self._modes = self._seen[-1:], self._modes[-1:]
            self._slopes = self._slopes[-1:]

    def _slopes_at(self, theta, x, q: Precision, fac: Factor, V, M) -> np.ndarray:
        """The modes' derivatives in theta (K, dim, d): ``H^-1 dg/dtheta_i`` on the constraints,
        the gradient's derivative ``-(dQ/dtheta_i) (x - m)`` by a forward difference of the
        prior precision (the implicit function theorem at the mode, where g = 0)."""
        s = self.structure
        dev = x - self.prior_mean
        base = s.prior_times(q, dev)
        dg = np.empty((*x.shape, theta.shape[1]))
        for i in range(theta.shape[1]):
            moved = theta.copy()
            moved[:, i] += SLOPE_STEP
            dg[:, :, i] = (base - s.prior_times(self.prior_precision(moved), dev)) / SLOPE_STEP
        return self._covariance_times(fac, V, M, dg)

    def _objective(self, x, Q: Precision, sigma, eta=None, derivatives=True):
        """The log density at ``x`` (K,), the likelihood's derivative and weights in eta, and
        the prior's gradient's negative ``Q (x - m)`` (the log density alone where not
        ``derivatives``); ``eta``: the cells' linear predictors at ``x`` where known."""
        if eta is None:
            eta = self.offset + self.structure.eta(x)
        dev = x - self.prior_mean
        Qdev = self.structure.prior_times(Q, dev)
        prior = -0.5 * (dev * Qdev).sum(axis=1)
        if not derivatives:
            return loglik(self.likelihood, self.stats, eta, sigma, False) + prior
        ll, d, w = loglik(self.likelihood, self.stats, eta, sigma)
        return ll + prior, d, w, Qdev

    def _constrain(self, fac: Factor, K: int, g: np.ndarray | None = None):
        """V = H^-1 C' and M = C V at each point (None without constraints), and ``H^-1 g``
        where ``g`` (K, dim) is given, in the same solve."""
        C = self.constraints
        rhs = [] if C is None else [np.broadcast_to(C.T, (K, *C.T.shape))]
        if g is not None:
            rhs.append(g[:, :, None])
        if not rhs:
            return None, None
        sol = fac.solve(np.concatenate(rhs, axis=2))
        V = None if C is None else np.ascontiguousarray(sol[:, :, : len(C)])
        M = None if C is None else C @ V
        return (V, M) if g is None else (V, M, sol[:, :, -1])

    def _project(self, step: np.ndarray, V, M) -> np.ndarray:
        """The Newton step restricted to the constraints (C step = 0)."""
        if V is None:
            return step
        lagrange = np.linalg.solve(M, (step @ self.constraints.T)[:, :, None])
        return step - (V @ lagrange)[:, :, 0]

    def _newton(self, theta, q, sigma):
        """The mode by damped, projected Newton steps (binomial, Poisson), each point stepping
        until its own decrement is small (the points still moving form the batch), its factor
        the one at its mode (where it stopped)."""
        s = self.structure
        x = self._start(theta)
        f_end = np.empty(len(theta))
        moving = np.arange(len(theta))
        parts = []  # the points that stopped at each step, and their factors
        for it in range(NEWTON_STEPS):
            Qa = q.take(moving)
            f, d, w, Qdev = self._objective(x[moving], Qa, sigma)
            fac = s.factor(w, Qa)
            g = s.gradient(d) - Qdev
            V, M, step = self._constrain(fac, len(moving), g)
            step = self._project(step, V, M)
            decrement = (g * step).sum(axis=1)
            # the gain still to come added: the mode's log density to O(decrement^2)
            f_end[moving] = f + 0.5 * decrement
            # at least one step: the factor then sits at a mode exact to O(decrement^2), not
            # O(decrement) (its log determinant smooth in theta, for the differences of the
            # modes' searches)
            small = decrement < DECREMENT * (1 + np.abs(f) * 1e-3)
            done = (small & (it > 0)) | (it == NEWTON_STEPS - 1)
            if done.all():
                parts.append((moving, fac, V, M))
                break
            if done.any():
                at = np.flatnonzero(done)
                kept = [None if a is None else a[at] for a in (V, M)]
                parts.append((moving[at], fac.take(at), *kept))
            keep = ~done
            moving, f, step, Qa = moving[keep], f[keep], step[keep], Qa.take(keep)
            xa = x[moving]
            if np.all(decrement[keep] < QUADRATIC):  # a full step surely gains
                x[moving] = xa + step
                continue
            t = np.ones(len(moving))
            for _ in range(40):  # halve the step where the objective falls
                new = xa + t[:, None] * step
                f_new = self._objective(new, Qa, sigma, derivatives=False)
                worse = ~(f_new >= f - 1e-12 * np.abs(f))
                if not worse.any():
                    break
                t[worse] /= 2
            x[moving] = new
        stopped, fac, V, M = parts[0]
        if len(parts) > 1:
            stopped = np.concatenate([p[0] for p in parts])
            back = np.argsort(stopped)
            fac = Factor.concat([p[1] for p in parts]).take(back)
            if V is not None:
                V = np.concatenate([p[2] for p in parts])[back]
                M = np.concatenate([p[3] for p in parts])[back]
        self._remember(theta, x, self._slopes_at(theta, x, q, fac, V, M))
        return x, f_end, fac, V, M

    def _gaussian(self, q, sigma):
        """The mode of a normal outcome in closed form: the cells' weights n / sigma^2 are one
        set scaled per point, so the design's blocks and ``b0 = A' N r0`` (r0: the residuals at
        the prior mean) are formed once; then ``x = m + H^-1 s b0`` (projected) and
        ``f = -N log sigma - s (M2 + r0' N r0 - step' b0) / 2`` with ``s = 1 / sigma^2``."""
        s = self.structure
        if not hasattr(self, "_normal_stats"):
            n, mean, m2 = self.stats
            r0 = mean - self.offset - s.eta(self.prior_mean[None])[0]
            b0 = s.gradient((n * r0)[None])[0]
            self._normal_stats = (n, b0, float(m2.sum() + (n * r0**2).sum()), float(n.sum()))
        n, b0, rr, total = self._normal_stats
        scale = sigma**-2
        fac = s.factor_scaled(scale, n, q)
        V, M, step = self._constrain(fac, len(q.q), scale[:, None] * b0)
        step = self._project(step, V, M)
        f = -total * np.log(sigma) - 0.5 * scale * (rr - step @ b0)
        return self.prior_mean + step, f, fac, V, M

    def conditional(self, theta: np.ndarray) -> Conditional:
        """The mode and curvature of the effects at each point of ``theta`` (K, d), in batches
        of points whose arrays fit ``BATCH_FLOATS``."""
        parts = self._batches(theta)
        cond = Conditional.concat([c for _, c in parts])
        order = np.concatenate([i for i, _ in parts])
        return cond if np.all(order[1:] > order[:-1]) else cond.take(np.argsort(order))

    def _batches(self, theta: np.ndarray) -> list[tuple[np.ndarray, Conditional]]:
        """:meth:`conditional` batch by batch, each with its points' indices (not joined: a
        large factor is not copied). Newton's points go in waves of ``1 / WAVES`` of them (at
        least ``WAVE_CELLS`` cells x points), those nearest the points solved so far first, so
        that each starts from a near neighbour's mode."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        size = max(1, BATCH_FLOATS // self.structure.point_size)
        if self.likelihood != "normal" and theta.shape[1]:
            size = min(size, max(WAVE_CELLS // self.structure.n, -(-len(theta) // WAVES)))
        left, out = np.arange(len(theta)), []
        while left.size or not out:
            if self._seen and left.size > size:
                from scipy.spatial import cKDTree

                far = cKDTree(np.concatenate(self._seen)).query(theta[left])[0]
                left = left[np.argsort(far, kind="stable")]
            # nothing solved yet: one point from the prior mean, the rest from its mode
            take = size if self._seen or self.likelihood == "normal" else 1
            out.append((left[:take], self._conditional(theta[left[:take]])))
            left = left[take:]
        return out

    def conditional_at(self, theta: np.ndarray) -> Conditional:
        """:meth:`conditional` at points of ``theta`` (K, d), taken from the evaluations of
        :meth:`log_marginal` still held (up to ``HOLD_FLOATS`` floats) where they are among
        their points (exactly those values), computed afresh where not."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        found = self._found(theta)
        missing = [i for i, f in enumerate(found) if f is None]
        if len(missing) == len(theta):
            return self.conditional(theta)
        conds = {number: cond for number, (_, cond) in self._held.items()}
        if missing:
            conds[-1] = self.conditional(theta[missing])
            for k, i in enumerate(missing):
                found[i] = (-1, k)
        part, k = np.array(found).T
        used = np.unique(part)  # the evaluations joined whole, the points taken once
        start = dict(zip(used, np.cumsum([0] + [len(conds[p].x) for p in used[:-1]]), strict=True))
        at = np.array([start[p] for p in part]) + k
        joined = Conditional.concat([conds[p] for p in used])
        return joined if np.array_equal(at, np.arange(len(joined.x))) else joined.take(at)

    def _found(self, theta: np.ndarray) -> list[tuple[int, int] | None]:
        """Where each row of ``theta`` is among the evaluations held ((number, row), or
        None)."""
        return [self._where.get(row.tobytes()) for row in theta]

    def forget(self) -> None:
        """Let go of the evaluations held for :meth:`conditional_at` (their factors)."""
        self._held, self._where = {}, {}

    def _hold(self, theta: np.ndarray, cond: Conditional) -> None:
        """Hold an evaluation for :meth:`conditional_at`, the oldest let go beyond the budget."""
        number, self._number = self._number, self._number + 1
        self._held[number] = (theta.copy(), cond)
        self._where.update((row.tobytes(), (number, k)) for k, row in enumerate(theta))
        r = 0 if self.constraints is None else len(self.constraints)
        size = self.structure.factor_size + self.structure.dim * (1 + r) + r * r
        while self._held and sum(len(t) for t, _ in self._held.values()) * size > HOLD_FLOATS:
            oldest = next(iter(self._held))
            for row in self._held.pop(oldest)[0]:
                if self._where[row.tobytes()][0] == oldest:  # (not held again since)
                    del self._where[row.tobytes()]

    def _conditional(self, theta: np.ndarray) -> Conditional:
        s = self.structure
        sds = self.sds(theta)
        factors = self.correlation_factors(theta)
        q = self._precision(sds, factors)
        if self.likelihood == "normal":
            x, f, fac, V, M = self._gaussian(q, np.exp(theta[:, self.sigma_index]))
        else:
            x, f, fac, V, M = self._newton(theta, q, None)
        logdet = fac.logdet()
        if V is not None:
            logdet = logdet + np.linalg.slogdet(M)[1]
        n_free = np.array([t.n_levels - zs for t, zs in zip(s.terms, self.zero_sum, strict=True)])
        norm = -(np.log(sds) * n_free).sum(axis=1)
        for b, L in zip(self.blocks, factors, strict=True):  # det R^(-1/2) a free level
            logdet_half = np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
            norm -= n_free[b.terms[0]] * logdet_half
        lm = f + norm - 0.5 * logdet + self.log_prior(theta)
        return Conditional(x, fac, V, M, self.constraints, np.where(np.isfinite(lm), lm, -np.inf))

    def _correlations_outside(self, theta: np.ndarray) -> np.ndarray:
        """Points whose correlation coordinates are beyond their range (K,)."""
        cols = [c for b in self.blocks for c in b.corr_index]
        return beyond_range(theta[:, cols]) if cols else np.zeros(len(theta), dtype=bool)

    def prior_precision(self, theta: np.ndarray) -> Precision:
        """The effects' prior precision at each point of ``theta`` (K, d)."""
        return self._precision(self.sds(theta), self.correlation_factors(theta))

    def log_joint(self, x: np.ndarray, theta: np.ndarray, eta: np.ndarray | None = None):
        """``log p(y | x) + log p(x | theta)`` up to a constant in x, at rows of ``x`` (K, dim)
        and ``theta`` (K, d); ``eta``: the cells' linear predictors at ``x`` where known."""
        sigma = None if self.sigma_index is None else np.exp(theta[:, self.sigma_index])
        return self._objective(x, self.prior_precision(theta), sigma, eta, derivatives=False)

    def log_marginal(self, theta: np.ndarray) -> np.ndarray:
        """log p(theta | y) up to a constant, at each row of ``theta`` (K, d); -inf where the
        effects' curvature cannot be factored (theta far out in a tail) or a correlation is
        within ~1e-8 of +-1 (:func:`poolwise.engines.correlation.beyond_range`). Where the rest is
        factored point by point (an evaluation costs more than looking it up), points among the
        evaluations held (:meth:`conditional_at`) take their values."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        found = [None] if self.structure.batched else self._found(theta)
        if any(f is not None for f in found):
            held = [None if f is None else self._held[f[0]][1].log_marginal[f[1]] for f in found]
            out = np.array([np.nan if v is None else v for v in held])
            missing = np.isnan(out)
            if missing.any():
                out[missing] = self.log_marginal(theta[missing])
            return out
        outside = self._correlations_outside(theta)
        if outside.any():
            out = np.full(len(theta), -np.inf)
            if not outside.all():
                out[~outside] = self.log_marginal(theta[~outside])
            return out
        with np.errstate(all="ignore"):
            try:
                parts = self._batches(theta)
            except np.linalg.LinAlgError:
                out = np.full(len(theta), -np.inf)
                for k in range(len(theta)):
                    with contextlib.suppress(np.linalg.LinAlgError):
                        out[k] = self.conditional(theta[k : k + 1]).log_marginal[0]
                return out
        out = np.empty(len(theta))
        for at, cond in parts:
            self._hold(theta[at], cond)
            out[at] = cond.log_marginal
        return out

    @property
    def differentiable(self) -> bool:
        """Whether :meth:`derivatives` applies: a normal outcome without correlated blocks."""
        return self.likelihood == "normal" and not self.blocks

    def derivatives(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`log_marginal` at each row of ``theta`` (K, d), its gradient (K, d) and the
        average information (K, d, d), a positive semi-definite stand-in for minus its Hessian
        (Gilmour, Thompson & Cullis 1995), for a normal outcome without correlated blocks
        (:attr:`differentiable`; LAPLACE.md section 6). The evaluations are held, with their
        variances, for :meth:`conditional_at`.

        With ``delta = x* - m``, ``q_t = 1 / sd_t^2``, ``Sigma`` the effects' conditional
        covariance (the constraints' correction included) and ``N`` the rows: the gradient in
        ``log sd_t`` is ``q_t (|delta_t|^2 + tr_t Sigma) - (free levels of t)``; in
        ``log sigma`` it is ``-N + RSS / sigma^2 + dim - r - sum_j Q_jj Sigma_jj`` (r
        constraints), the log prior's added. The information is ``u_i' V^-1 u_j / 2`` with
        ``u_t = 2 Z_t delta_t``, ``u_sigma = 2 (y - A x*)`` and ``V^-1 = (I - A Sigma A' /
        sigma^2) / sigma^2``.

        Example
        -------
        >>> from poolwise.engines.blocks import Structure, Term
        >>> s = Structure(np.ones((3, 1)), [Term(np.arange(3), np.ones(3), 3)])
        >>> stats = (np.full(3, 2.0), np.array([0.0, 1.0, 3.0]), np.ones(3))
        >>> m = LatentModel(s, "normal", stats, np.zeros(3), np.zeros(1), np.zeros(1), (0,),
        ...                 (None,), (False,), 1, lambda t: 0 * t[:, 0])
        >>> value, grad, info = m.derivatives(np.zeros((1, 2)))
        >>> h = 1e-6
        >>> fd = (m.log_marginal(np.array([[h, 0.0]])) - m.log_marginal(np.array([[-h, 0.0]])))
        >>> bool(abs(fd[0] / (2 * h) - grad[0, 0]) < 1e-6)
        True
        """
        if not self.differentiable:
            raise ValueError("derivatives: a normal outcome without correlated blocks only")
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        K, d = theta.shape
        value, grad = np.full(K, -np.inf), np.full((K, d), np.nan)
        info = np.tile(np.eye(d), (K, 1, 1))
        size = max(1, BATCH_FLOATS // self.structure.point_size)
        for i in range(0, K, size):
            part = theta[i : i + size]
            with np.errstate(all="ignore"):
                try:
                    cond = self._conditional(part)
                    g, a = self._gradient(part, cond)
                except np.linalg.LinAlgError:  # theta far out in a tail
                    continue
            self._hold(part, cond)
            value[i : i + size], grad[i : i + size], info[i : i + size] = cond.log_marginal, g, a
        return value, grad, info

    def moment_start(self) -> np.ndarray:
        """A rough theta (d,) to start searches from, for a normal outcome without correlated
        blocks (:attr:`differentiable`): each term's sd from the spread of its levels' least
        squares effects on the residuals of beta's least squares fit beyond their noise, then
        one step of expectation-maximisation with the effects shrunk (each term fitted to what
        the others leave, twice in turn) and their conditional variances taken per level (the
        coupling of crossed factors left out). On InstEval within 0.25 of the maximum in each
        log sd (scoring then takes three steps, from the prior scales five).

        Example
        -------
        >>> from poolwise.engines.blocks import Structure, Term
        >>> rng = np.random.default_rng(1)
        >>> g = np.repeat(np.arange(200), 10)
        >>> y = rng.normal(0, 0.5, 200)[g] + rng.normal(0, 1.0, g.size)
        >>> s = Structure(np.ones((g.size, 1)), [Term(g, np.ones(g.size), 200)])
        >>> stats = (np.ones(g.size), y, np.zeros(g.size))
        >>> m = LatentModel(s, "normal", stats, np.zeros(g.size), np.zeros(1), np.zeros(1),
        ...                 (0,), (None,), (False,), 1, lambda t: 0 * t[:, 0])
        >>> from poolwise.engines.optimize import find_mode
        >>> start, top = m.moment_start(), find_mode(m.log_marginal, np.zeros(2))[0]
        >>> np.exp(start).round(2).tolist(), bool(np.all(np.abs(start - top) < 0.01))
        ([0.41, 1.01], True)
        """
        if not self.differentiable:
            raise ValueError("moment_start: a normal outcome without correlated blocks only")
        s, (n, mean, m2) = self.structure, self.stats
        y = mean - self.offset
        root = np.sqrt(n)[:, None]
        beta = np.linalg.lstsq(s.X * root, y * root[:, 0], rcond=None)[0]
        r = y - s.X @ beta
        total = n.sum()
        noise = max((m2.sum() + (n * r**2).sum()) / total, np.finfo(float).tiny)
        weight = [np.bincount(t.codes, n * t.values**2, t.n_levels) for t in s.terms]
        sums = [np.bincount(t.codes, n * t.values * r, t.n_levels) for t in s.terms]
        terms = list(zip(weight, sums, self.sd_fixed, strict=True))
        var, sigma2 = np.empty(len(s.terms)), noise
        for _ in range(2):  # the noise in the levels' effects: sigma^2 once estimated
            for k, (w, b, fixed) in enumerate(terms):
                ok = w > 0
                spread = np.mean((b[ok] / w[ok]) ** 2 - sigma2 / w[ok]) if ok.any() else noise
                var[k] = fixed**2 if fixed is not None else max(spread, 0.01 * noise)
            sigma2 = max(noise - var.sum(), 0.05 * noise)
        fitted, effects = np.zeros((len(s.terms), s.n)), [None] * len(s.terms)
        for _ in range(2):  # the shrunk effects, each term fitted to what the others leave
            for k, (t, w) in enumerate(zip(s.terms, weight, strict=True)):
                left = r - fitted.sum(axis=0) + fitted[k]
                shrunk = w + sigma2 / var[k]
                effects[k] = np.bincount(t.codes, n * t.values * left, t.n_levels) / shrunk
                fitted[k] = t.values * effects[k][t.codes]
        spread = 0.0  # the effects' conditional variances, summed over the cells
        for k, ((w, _, fixed), b) in enumerate(zip(terms, effects, strict=True)):
            cond = sigma2 / (w + sigma2 / var[k])
            spread += (w * cond).sum()
            if fixed is None and (w > 0).any():
                var[k] = np.mean(b[w > 0] ** 2 + cond[w > 0])
        e = r - fitted.sum(axis=0)
        sigma2 = (m2.sum() + (n * e**2).sum() + spread) / total
        index = [*self.sd_index, self.sigma_index]
        theta = np.empty(1 + max(i for i in index if i is not None))
        for i, v in zip(index, [*var, sigma2], strict=True):
            if i is not None:
                theta[i] = 0.5 * np.log(v)
        return theta

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`log_marginal` at each row of ``theta`` (K, d) for a normal
        outcome without correlated blocks (:attr:`differentiable`), exact (the log prior's by
        central differences), from the evaluations held where they are at these points.

        With ``Sigma`` the effects' conditional covariance (the constraints' included), ``H_i``
        the derivatives of the curvature ``H = s A'NA + Q`` (``s = 1 / sigma^2``) and ``J`` the
        log joint: ``f_ij = J_ij + J_xi' Sigma J_xj`` for its maximum ``f`` (the implicit
        function theorem) and ``tr(Sigma H_ij) - tr(Sigma H_i Sigma H_j)`` for ``log det``
        (restricted to the constraints). In ``log sd_t``, ``H_t = -2 q_t P_t`` (P_t: term t's
        coordinates); in ``log sigma``, ``H_sigma = -2 (H - Q)`` with ``Sigma H Sigma =
        Sigma``: every trace of two is a sum of Sigma's squared entries weighted by the terms
        and by Q (:meth:`_squares`).

        Example
        -------
        >>> from poolwise.engines.blocks import Structure, Term
        >>> s = Structure(np.ones((4, 1)), [Term(np.array([0, 1, 2, 2]), np.ones(4), 3)])
        >>> stats = (np.full(4, 2.0), np.array([0.0, 1.0, 3.0, 2.0]), np.ones(4))
        >>> m = LatentModel(s, "normal", stats, np.zeros(4), np.zeros(1), np.zeros(1), (0,),
        ...                 (None,), (True,), 1, lambda t: -0.5 * (t**2).sum(axis=1))
        >>> z, h = np.array([[0.1, -0.2]]), 1e-5
        >>> fd = (m.derivatives(z + [h, 0])[1] - m.derivatives(z - [h, 0])[1]) / (2 * h)
        >>> bool(np.allclose(m.hessian(z)[0, 0], fd[0], rtol=1e-6))
        True
        """
        if not self.differentiable:
            raise ValueError("hessian: a normal outcome without correlated blocks only")
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        s, (n, mean, m2) = self.structure, self.stats
        cond = self.conditional_at(theta)
        K, d = theta.shape
        var, sds, i_s = cond.variances(), self.sds(theta), self.sigma_index
        scale = np.exp(-2 * theta[:, i_s])
        q = self._precision(sds, []).q
        dev = cond.x - self.prior_mean
        resid = mean - self.offset - s.eta(cond.x)
        free = [(t, i) for t, i in enumerate(self.sd_index) if i is not None]
        JX = np.zeros((K, s.dim, d))  # J's gradient in x, differentiated in theta
        weights = np.zeros((K, s.dim, len(free) + 1))  # the terms' coordinates, then Q
        spans = [slice(s.offsets[t], s.offsets[t] + s.terms[t].n_levels) for t, _ in free]
        for c, ((_, i), cols) in enumerate(zip(free, spans, strict=True)):
            JX[:, cols, i] = 2 * q[:, cols] * dev[:, cols]
            weights[:, cols, c] = 1.0
        weights[:, :, -1] = q
        JX[:, :, i_s] = -2 * scale[:, None] * s.gradient(n * resid)
        h = np.swapaxes(JX, 1, 2) @ self._covariance_times(cond.factor, cond.V, cond.M, JX)
        phi = self._squares(cond, weights)
        rss = m2.sum() + (n * resid**2).sum(axis=1)
        h[:, i_s, i_s] += 2 * (phi[:, -1, -1] - scale * rss - (q * var).sum(axis=1))
        for c, ((t, i), cols) in enumerate(zip(free, spans, strict=True)):
            qt = sds[:, t] ** -2
            tr = var[:, cols].sum(axis=1)
            h[:, i, i] -= 2 * qt * ((dev[:, cols] ** 2).sum(axis=1) + tr)
            for c2, (u, j) in enumerate(free):
                h[:, i, j] += 2 * qt * sds[:, u] ** -2 * phi[:, c, c2]
            mixed = 2 * qt * (tr - phi[:, c, -1])
            h[:, i, i_s] += mixed
            h[:, i_s, i] += mixed
        for k in range(K):
            h[k] += hessian(self.log_prior, theta[k], PRIOR_HESSIAN_STEP)
        return 0.5 * (h + np.swapaxes(h, 1, 2))

    def _covariance_times(self, fac: Factor, V, M, b: np.ndarray) -> np.ndarray:
        """``Sigma b`` for b (K, dim, r): ``H^-1 b`` (``fac``'s) restricted to the constraints
        (``V = H^-1 C'``, ``M = C V``; None without constraints), the effects' conditional
        covariance's product."""
        out = fac.solve(b)
        if V is None:
            return out
        return out - V @ np.linalg.solve(M, self.constraints @ out)

    def _squares(self, cond: Conditional, weights: np.ndarray) -> np.ndarray:
        """``w_i' (Sigma o Sigma) w_j`` (K, r, r) for the columns of ``weights`` (K, dim, r):
        H^-1's (:meth:`Factor.inverse_squares`), less the constraints' ``U U' = V M^-1 V'``
        (``Sigma = H^-1 - U U'``): ``- 2 sum_k (U_k w_i)' H^-1 (U_k w_j) + sum((U' w_i U) o
        (U' w_j U))``."""
        out = cond.factor.inverse_squares(weights)
        if cond.V is None:
            return out
        half = np.linalg.solve(np.linalg.cholesky(cond.M), np.swapaxes(cond.V, 1, 2))
        U = np.swapaxes(half, 1, 2)  # (K, dim, constraints)
        Uw = U[:, :, :, None] * weights[:, :, None, :]  # (K, dim, k, i): U_k w_i
        solved = cond.factor.solve(Uw.reshape(*Uw.shape[:2], -1)).reshape(Uw.shape)
        out -= 2 * np.einsum("pakj,paki->pij", solved, Uw)
        W = np.einsum("pak,pai,pal->pikl", U, weights, U)
        return out + np.einsum("pikl,pjkl->pij", W, W)

    def _gradient(self, theta: np.ndarray, cond: Conditional) -> tuple[np.ndarray, np.ndarray]:
        """The gradient and the average information of :meth:`derivatives` at ``cond``."""
        s = self.structure
        n, mean, m2 = self.stats
        var = cond.variances()
        sds = self.sds(theta)
        sigma2 = np.exp(2 * theta[:, self.sigma_index])
        dev = cond.x - self.prior_mean
        resid = mean - self.offset - s.eta(cond.x)  # cells' mean residuals (K, cells)
        K, d = theta.shape
        grad = np.zeros((K, d))
        u = np.zeros((K, d, s.n))  # the cells' u_i, but u_sigma's spread within cells
        for t, (term, off, i) in enumerate(zip(s.terms, s.offsets, self.sd_index, strict=True)):
            if i is None:
                continue
            cols = slice(off, off + term.n_levels)
            tr = (dev[:, cols] ** 2 + var[:, cols]).sum(axis=1)
            grad[:, i] = tr / sds[:, t] ** 2 - (term.n_levels - self.zero_sum[t])
            u[:, i] = 2 * (s.Z[t] @ dev[:, cols].T).T
        i = self.sigma_index
        r = 0 if self.constraints is None else len(self.constraints)
        q = self._precision(sds, []).q
        grad[:, i] = (m2.sum() + (n * resid**2).sum(axis=1)) / sigma2 - n.sum() + s.dim - r
        grad[:, i] -= (q * var).sum(axis=1)
        u[:, i] = 2 * resid
        for j in range(d):
            step = np.zeros(d)
            step[j] = PRIOR_STEP
            ahead, behind = self.log_prior(theta + step), self.log_prior(theta - step)
            grad[:, j] += (ahead - behind) / (2 * PRIOR_STEP)
        # u' V^-1 u = u' u / sigma^2 - b' Sigma b with b = A' u / sigma^2
        nu = n * u
        info = (u @ np.swapaxes(nu, 1, 2)) / sigma2[:, None, None]
        info[:, i, i] += 4 * m2.sum() / sigma2
        b = np.stack([s.gradient(nu[:, j]) for j in range(d)], axis=2) / sigma2[:, None, None]
        sb = self._covariance_times(cond.factor, cond.V, cond.M, b)
        info = 0.5 * (info - np.swapaxes(b, 1, 2) @ sb)
        return grad, 0.5 * (info + np.swapaxes(info, 1, 2))
