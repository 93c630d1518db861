"""Latent Gaussian models: the effects' mode and curvature given the variance parameters, and the
Laplace approximation of the variance parameters' posterior (arrays only; see LAPLACE.md).

The latent field ``x = (beta, b_1, ..., b_T)`` has the prior ``beta ~ N(m, diag(1/q_beta))``
(precision 0: flat) and ``b_t ~ N(0, sd_t^2 I)``, restricted to sum zero where ``zero_sum[t]``
(numpyro's ZeroSumNormal, as the NUTS model has it). ``theta`` holds the free log sds (and the
log residual sd of a normal outcome). For K points ``theta`` at once, Newton's method (PIRLS)
finds the mode ``x*`` of ``log p(y | x) + log p(x | theta)`` on the constraint set (projected
steps), batched over the points, from the mode at the nearest point already solved; a normal
outcome's mode is one step. Then

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

from .blocks import Factor, Structure

NEWTON_STEPS = 60
# Newton stops when the squared decrement g' H^-1 g (twice the gain still to come) is this
# small: the log density is then exact to ~1e-13
DECREMENT = 1e-12
# warm starts kept (modes of the points solved so far)
KEEP_MODES = 4096


def loglik(kind: str, stats: tuple, eta: np.ndarray, sigma: np.ndarray | None):
    """Log likelihood (K,), its derivative and minus its second derivative in eta (K, cells).

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
        p = 0.5 * (1.0 + np.tanh(0.5 * eta))
        ll = (k * eta - n * np.logaddexp(0.0, eta)).sum(axis=1)
        return ll, k - n * p, n * p * (1.0 - p)
    if kind == "poisson":
        (c,) = stats
        mu = np.exp(eta)
        return (c * eta - mu).sum(axis=1), c - mu, mu
    n, mean, m2 = stats
    s2 = (sigma**2)[:, None]
    r = mean - eta
    ll = (-n * np.log(sigma)[:, None] - (m2 + n * r**2) / (2 * s2)).sum(axis=1)
    return ll, n * r / s2, np.broadcast_to(n / s2, eta.shape)


@dataclass
class Conditional:
    """The effects given theta at K points: modes ``x`` (K, dim) and what gives their spread."""

    x: np.ndarray
    factor: Factor
    V: np.ndarray | None  # H^-1 C' (K, dim, r)
    M: np.ndarray | None  # C H^-1 C' (K, r, r)
    constraints: np.ndarray | None  # C (r, dim)
    log_marginal: np.ndarray

    def variances(self) -> np.ndarray:
        """Marginal variances of every effect (K, dim), the constraints' correction included."""
        var = self.factor.diag_inverse()
        if self.V is not None:
            half = np.linalg.solve(np.linalg.cholesky(self.M), np.swapaxes(self.V, 1, 2))
            var = var - (half**2).sum(axis=1)
        return np.maximum(var, 0.0)

    def sample(self, points: np.ndarray, z: np.ndarray) -> np.ndarray:
        """One draw (n, dim) of the effects at each of the ``points`` (indices, n) from standard
        normals z (n, dim)."""
        x = np.empty_like(z)
        if self.factor.s.batched:
            groups = [(np.arange(len(points)), points)]
        else:
            groups = [
                (at, np.full(at.size, k))
                for k in np.unique(points)
                for at in [np.flatnonzero(points == k)]
            ]
        for at, idx in groups:
            f = self.factor.take(idx)
            y = f.sample(z[at][:, :, None])[:, :, 0]
            if self.V is not None:
                lam = np.linalg.solve(self.M[idx], (y @ self.constraints.T)[:, :, None])
                y = y - (self.V[idx] @ lam)[:, :, 0]
            x[at] = self.x[idx] + y
        return x


@dataclass
class LatentModel:
    """A latent Gaussian model on cells (see the module docstring).

    ``sd_index[t]`` is the column of theta holding term t's log sd, or None where ``sd_fixed[t]``
    gives it; ``sigma_index`` likewise the log residual sd of a normal outcome;
    ``log_prior(theta)`` is the log density of theta (K, d) -> (K,), Jacobians included.

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

    def __post_init__(self) -> None:
        s = self.structure
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
        self._modes: list[np.ndarray] = []

    def sds(self, theta: np.ndarray) -> np.ndarray:
        """Each term's sd at each point (K, T)."""
        cols = [
            np.exp(theta[:, i]) if i is not None else np.full(len(theta), fixed)
            for i, fixed in zip(self.sd_index, self.sd_fixed, strict=True)
        ]
        return np.stack(cols, axis=1) if cols else np.zeros((len(theta), 0))

    def _precision(self, sds: np.ndarray) -> np.ndarray:
        s = self.structure
        q = np.empty((sds.shape[0], s.dim))
        q[:, : s.p] = self.beta_precision
        for j, (t, off) in enumerate(zip(s.terms, s.offsets, strict=True)):
            q[:, off : off + t.n_levels] = (1.0 / sds[:, j] ** 2)[:, None]
        return q

    def _start(self, theta: np.ndarray) -> np.ndarray:
        """Each point's start: the mode at the nearest point solved so far (else the prior mean;
        always for a normal outcome, whose mode is one step from anywhere)."""
        if not self._seen or self.likelihood == "normal":
            return np.tile(self.prior_mean, (len(theta), 1))
        from scipy.spatial import cKDTree

        seen = np.concatenate(self._seen)
        if theta.shape[1] == 0:
            return np.tile(self._modes[-1][-1], (len(theta), 1))
        _, nearest = cKDTree(seen).query(theta)
        return np.concatenate(self._modes)[nearest]

    def _remember(self, theta: np.ndarray, x: np.ndarray) -> None:
        if self.likelihood == "normal":
            return
        ok = np.all(np.isfinite(x), axis=1)
        self._seen.append(theta[ok])
        self._modes.append(x[ok])
        if sum(len(s) for s in self._seen) > KEEP_MODES:
            self._seen, self._modes = self._seen[-1:], self._modes[-1:]

    def _objective(self, x, q, sigma):
        eta = self.offset + self.structure.eta(x)
        ll, d, w = loglik(self.likelihood, self.stats, eta, sigma)
        dev = x - self.prior_mean
        return ll - 0.5 * (q * dev**2).sum(axis=1), d, w, dev

    def conditional(self, theta: np.ndarray) -> Conditional:
        """The mode and curvature of the effects at each point of ``theta`` (K, d)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        s, C = self.structure, self.constraints
        sds = self.sds(theta)
        q = self._precision(sds)
        sigma = None if self.sigma_index is None else np.exp(theta[:, self.sigma_index])
        x = self._start(theta)
        gaussian = self.likelihood == "normal"
        fac = V = M = None
        for _ in range(NEWTON_STEPS):
            f, d, w, dev = self._objective(x, q, sigma)
            fac = s.factor(w, q)
            if C is not None:
                V = fac.solve(np.broadcast_to(C.T, (len(theta), *C.T.shape)).copy())
                M = np.einsum("rd,kds->krs", C, V)
            g = s.gradient(d) - q * dev
            step = fac.solve(g)
            if C is not None:
                lagrange = np.linalg.solve(M, (step @ C.T)[:, :, None])[:, :, 0]
                step -= np.einsum("kdr,kr->kd", V, lagrange)
            dec = (g * step).sum(axis=1)
            if gaussian:  # the exact mode, one step from anywhere
                x = x + step
                f = self._objective(x, q, sigma)[0]
                break
            if np.all(dec < DECREMENT * (1 + np.abs(f) * 1e-3)):
                break
            t = np.ones(len(theta))
            for _ in range(40):  # halve the step where the objective falls
                new = x + t[:, None] * step
                f_new = self._objective(new, q, sigma)[0]
                worse = ~(f_new >= f - 1e-12 * np.abs(f))
                if not worse.any():
                    break
                t[worse] /= 2
            x = new
        logdet = fac.logdet()
        if C is not None:
            logdet = logdet + np.linalg.slogdet(M)[1]
        n_free = np.array([t.n_levels - zs for t, zs in zip(s.terms, self.zero_sum, strict=True)])
        norm = -(np.log(sds) * n_free).sum(axis=1)
        lm = f + norm - 0.5 * logdet + self.log_prior(theta)
        self._remember(theta, x)
        return Conditional(x, fac, V, M, C, np.where(np.isfinite(lm), lm, -np.inf))

    def log_marginal(self, theta: np.ndarray) -> np.ndarray:
        """log p(theta | y) up to a constant, at each row of ``theta`` (K, d); -inf where the
        effects' curvature cannot be factored (theta far out in a tail)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        with np.errstate(all="ignore"):
            try:
                return self.conditional(theta).log_marginal
            except np.linalg.LinAlgError:
                out = np.full(len(theta), -np.inf)
                for k in range(len(theta)):
                    with contextlib.suppress(np.linalg.LinAlgError):
                        out[k] = self.conditional(theta[k : k + 1]).log_marginal[0]
                return out
