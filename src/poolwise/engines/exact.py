"""The exact engine: adaptive quadrature over 1-3 unconstrained hyperparameters.

The grid is laid in coordinates standardised by the mode and curvature, ``u``, through the map
``u = sinh(v)`` with ``v`` evenly spaced: fine near the mode, stretched in long tails (a scale
parameter's log often has one). It is widened on any side whose edge carries non-negligible mass
and refined until the moments from the grid and from its every other point agree. Engines see
arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import LogDensity, Target
from .optimize import covariance, known_derivatives, mode_and_hessian

EDGE_TOL = 1e-7
# a grid is accepted when the grid with every other point left out has the same moments to this
# share of the sd: that difference is the coarse grid's error, and the accepted grid's own error is
# far smaller (the trapezoid's error on a smooth density falls exponentially with the number of
# points: halving the spacing about squares it); a caller may pass another
MOMENT_TOL = 2e-4
START_POINTS = {1: 41, 2: 25, 3: 13}
MAX_POINTS = 400_000
MAX_WIDEN = 12
START_HALF_WIDTH = float(np.arcsinh(6.0))  # six standard deviations
WIDEN_STEP = 0.75  # each widening reaches about twice as far in u
# an improper posterior keeps its density FAR unconstrained units (e^40-fold in a scale) from the mode
FAR = 40.0
FAR_DROP = 8.0
# a mode this far out on the unconstrained scale (a scale of e^100) is a search that ran away
# along a density that keeps rising: the posterior is improper
RUNAWAY = 100.0
# a finer grid for theta's intervals is at most this many times finer than the accepted one
FINE_FACTOR = 4


@dataclass
class GridPosterior:
    """Weighted points of the hyperparameter posterior on the unconstrained scale."""

    points: np.ndarray  # (K, d) in z
    weights: np.ndarray  # (K,), sum to one
    grid: np.ndarray  # (K, d) the same points in v, where the grid is even
    spacing: np.ndarray  # (d,) grid spacing in v
    chol: np.ndarray  # (d, d): z = mode + chol @ sinh(v), the inverse curvature's factor
    mode: np.ndarray
    # (K,) the points of the grid with every other point left out (the grid before its last
    # refinement, whose moments agree with the full grid's): a cheap first pass for root-finding
    coarse: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    boundary: tuple[int, ...] = ()
    # the grid is even in v with z = mode + chol sinh(v); False: even in z = mode + chol v
    stretched: bool = True
    # the stretch's length: u = stretch sinh(v / stretch)
    stretch: float = 1.0
    # the same posterior on a grid some times finer, its log densities interpolated (for
    # intervals of theta itself; see :func:`fit`'s ``fine_points``)
    fine: GridPosterior | None = None

    def to_u(self, v: np.ndarray) -> np.ndarray:
        """Grid coordinates ``v`` to standardised ones ``u`` (z = mode + chol u)."""
        return self.stretch * np.sinh(v / self.stretch) if self.stretched else v

    def du_dv(self, v: np.ndarray) -> np.ndarray:
        """The derivative of :meth:`to_u` at ``v``, coordinate by coordinate."""
        return np.cosh(v / self.stretch) if self.stretched else np.ones_like(v)

    @property
    def point(self) -> bool:
        """A grid is the whole posterior, not a point estimate."""
        return False

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` points: a grid cell by its weight, then uniformly inside the cell (in v)."""
        d = self.points.shape[1]
        idx = rng.choice(self.weights.size, size=size, p=self.weights)
        v = self.grid[idx] + (rng.random((size, d)) - 0.5) * self.spacing
        return self.mode + self.to_u(v) @ self.chol.T


def _grid(lo: np.ndarray, hi: np.ndarray, n: np.ndarray):
    """Points in v (K, d), spacing (d,) and integer indices (K, d) of a grid of n[i] points from
    lo[i] to hi[i] in each dimension."""
    mesh = np.meshgrid(*[np.arange(k) for k in n], indexing="ij")
    idx = np.stack([m.ravel() for m in mesh], axis=1)
    h = (hi - lo) / (n - 1)
    return lo + idx * h, h, idx


def _weights(lp: np.ndarray) -> np.ndarray:
    top = np.max(lp)
    if not np.isfinite(top):
        return np.full(lp.shape, np.nan)
    w = np.exp(lp - top)
    return w / w.sum()


def _moments(u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = w @ u
    sd = np.sqrt(np.maximum(w @ (u - mean) ** 2, 0))
    return mean, sd


def _tail_points(mode: np.ndarray) -> np.ndarray:
    """The points of :func:`_check_tails`: FAR from the mode along each axis, both ways, and
    the mode itself."""
    d = mode.size
    return mode + np.vstack([np.eye(d), -np.eye(d), np.zeros(d)]) * FAR


def _check_tails(at_tails: np.ndarray, mode: np.ndarray, names: tuple[str, ...]) -> None:
    """Raise when the density does not decay far from the mode (its log at
    :func:`_tail_points`, ``at_tails``): an improper posterior."""
    d = mode.size
    *values, top = at_tails
    values = np.array(values)
    # the density rising without end overflows before the far points: the mode ran away
    values[:d] = np.where(mode > RUNAWAY, np.inf, values[:d])
    values[d:] = np.where(mode < -RUNAWAY, np.inf, values[d:])
    for k, value in enumerate(values):
        if value > top - FAR_DROP:
            side = "upper" if k < d else "lower"
            raise ValueError(
                f"the posterior of {names[k % d]} is improper: its density does not fall off towards "
                f"the {side} end of its range, so no answer can be trusted; use a proper prior "
                f"for {names[k % d]} (or more groups)"
            )


def _cubic_weights(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The (len(at), len(nodes)) matrix of local cubic interpolation: each point from the four
    nodes around it (Lagrange's polynomial through them; one-sided at the ends), so that a
    value far off (a density's cliff in a tail) moves no point beyond its neighbours' cells."""
    k = nodes.size
    first = np.clip(np.searchsorted(nodes, at, side="right") - 2, 0, k - 4)
    stencil = first[:, None] + np.arange(4)  # (points, 4)
    x = nodes[stencil]
    out = np.zeros((at.size, k))
    for j in range(4):
        others = [m for m in range(4) if m != j]
        w = np.prod([(at - x[:, m]) / (x[:, j] - x[:, m]) for m in others], axis=0)
        out[np.arange(at.size), stencil[:, j]] = w
    return out


def _finer(
    lp: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    n: np.ndarray,
    factor: int,
    part: LogDensity,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid ``factor`` times finer than the one from ``lo`` to ``hi`` with ``n`` points a
    dimension (even in v, ``u = sinh(v)``), and log densities there from ``lp`` (its log
    densities, the sinh map's Jacobian included): less ``part`` (a function of points in v,
    known everywhere) they are smooth and small near the mode, and are interpolated by local
    cubics in u, one axis at a time. Points (K, d) in v, their spacing (d,) and log densities
    (K,)."""
    rest = lp - part(_grid(lo, hi, n)[0])
    # points without a density (far out in a tail: there ``part`` alone is far below the top)
    rest = np.where(np.isfinite(rest), rest, np.min(rest[np.isfinite(rest)])).reshape(n)
    for i, k in enumerate(n):
        nodes = np.sinh(np.linspace(lo[i], hi[i], k))
        weights = _cubic_weights(nodes, np.sinh(np.linspace(lo[i], hi[i], factor * (k - 1) + 1)))
        rest = np.moveaxis(np.tensordot(weights, rest, axes=([1], [i])), 0, i)
    v, h, _ = _grid(lo, hi, factor * (n - 1) + 1)
    return v, h, rest.reshape(-1) + part(v)


def fit(
    model: Target,
    moment_tol: float = MOMENT_TOL,
    widen_by_rows: bool = False,
    start_points: int | None = None,
    fine_points: int = 0,
) -> GridPosterior:
    """Quadrature of the model's posterior density, ``exp(log_posterior)``, over R^d (d <= 3),
    refined until the moments of the grid and of its every other point agree to ``moment_tol``
    of the sd. ``widen_by_rows``: an edge with mass gains rows at the grid's spacing, its points
    so far kept (for a costly density), instead of the grid stretching over the wider range.
    ``start_points``: the first grid's points a dimension (``START_POINTS`` by default).
    ``fine_points``: up to this many points on a grid an integer factor (up to ``FINE_FACTOR``)
    finer, their log densities interpolated, in the posterior's ``fine`` (None where even a
    factor of 2 exceeds it): the trapezoid rule's moments are exact to far beyond the
    accepted grid's agreement already, but intervals of theta itself, which smooth each point
    over its cell, gain from smaller cells.

    Example
    -------
    >>> from poolwise.engines.base import Density
    >>> post = fit(Density(lambda z: -0.5 * ((z - 1.0) ** 2).sum(axis=1), np.zeros(1)))
    >>> round(float(post.weights @ post.points[:, 0]), 6)
    1.0
    """
    log_density: LogDensity = model.log_posterior
    z0 = model.initial_point()
    d = z0.size
    names = tuple(model.names) or tuple(f"z{i}" for i in range(d))
    if d == 0:
        none = np.zeros((1, 0))
        return GridPosterior(none, np.ones(1), none, np.zeros(0), np.zeros((0, 0)), np.zeros(0))
    if d > 3:
        raise ValueError(f"the exact engine handles at most 3 hyperparameters, got {d}")
    warnings: list[str] = []
    mode, h, ok = mode_and_hessian(log_density, z0, *known_derivatives(model))
    if not ok:
        raise ValueError(
            "the posterior density of the hyperparameters is zero or undefined everywhere tried: "
            "check the priors against the data"
        )
    cov, concave = covariance(h)
    chol = np.linalg.cholesky(cov)
    n = np.full(d, start_points or START_POINTS[d])
    lo, hi = np.full(d, -START_HALF_WIDTH), np.full(d, START_HALF_WIDTH)

    def evaluate(lo, hi, n, known=None, extra=None):
        """The grid, its points in z and their log densities; the points of ``known`` (indices
        on this grid, points in z, log densities: the points of a grid before refinement or
        before rows were added) are not evaluated again, and keep their z exactly as evaluated
        (a caller that holds what it computed at each point finds it again). The points
        ``extra`` are evaluated in the same call: their log densities come last."""
        v, h, idx = _grid(lo, hi, n)
        u = np.sinh(v)
        z = mode + u @ chol.T
        lp = np.full(len(v), np.nan)
        if known is not None:
            at = np.ravel_multi_index(tuple(known[0].T), n)
            z[at], lp[at] = known[1], known[2]
        new = np.isnan(lp)
        points = z[new] if extra is None else np.vstack([z[new], extra])
        values = log_density(points)
        k = int(new.sum())
        lp[new] = values[:k] + np.log(np.cosh(v[new])).sum(axis=1)
        return v, u, h, idx, z, lp, values[k:]

    # (the tails' check in the first grid's call: one batch for a costly density)
    v, u, h, idx, z, lp, at_tails = evaluate(lo, hi, n, extra=_tail_points(mode))
    _check_tails(at_tails, mode, names)
    w = _weights(lp)
    edge = {}
    for _ in range(MAX_WIDEN):
        if not np.all(np.isfinite(w)):
            break
        widened = False
        edge = {}
        known = idx.copy() if widen_by_rows else None
        top = n - 1
        for i in range(d):
            low_mass, high_mass = w[idx[:, i] == 0].sum(), w[idx[:, i] == top[i]].sum()
            edge[(names[i], "low")], edge[(names[i], "high")] = low_mass, high_mass
            # by rows: an even number at the spacing (the points so far kept, the nesting too)
            rows = 2 * int(np.ceil(WIDEN_STEP / (2 * h[i])))
            if low_mass > EDGE_TOL:
                lo[i] -= rows * h[i] if widen_by_rows else WIDEN_STEP
                widened = True
                if widen_by_rows:
                    n[i] += rows
                    known[:, i] += rows
            if high_mass > EDGE_TOL:
                hi[i] += rows * h[i] if widen_by_rows else WIDEN_STEP
                widened = True
                n[i] += rows if widen_by_rows else 0
        if not widened:
            break
        v, u, h, idx, z, lp, _ = evaluate(lo, hi, n, None if known is None else (known, z, lp))
        w = _weights(lp)
    if not np.all(np.isfinite(w)):
        raise ValueError("the hyperparameter posterior could not be evaluated on the grid")
    heavy = [f"{name} ({side})" for (name, side), m in edge.items() if m > EDGE_TOL]
    if heavy:
        warnings.append(
            "posterior mass reaches the edge of the quadrature grid in "
            + ", ".join(heavy)
            + ": the hyperparameter posterior may be improper (too flat a prior with too few "
            "groups); use proper priors or more groups"
        )
    while True:
        coarse = np.all(idx % 2 == 0, axis=1)
        m_f, s_f = _moments(u, w)
        m_c, s_c = _moments(u[coarse], w[coarse] / w[coarse].sum())
        agree = np.all(np.abs(m_f - m_c) <= moment_tol * s_f) and np.all(
            np.abs(s_f - s_c) <= moment_tol * s_f
        )
        if agree or np.prod(2 * n - 1) > MAX_POINTS:
            if not agree:
                warnings.append("the quadrature grid could not be refined to full accuracy")
            break
        n = 2 * n - 1
        v, u, h, idx, z, lp, _ = evaluate(lo, hi, n, (2 * idx, z, lp))
        w = _weights(lp)
    keep = w > 1e-14 * w.max()
    info = {
        "grid_points": int(u.shape[0]),
        "points_per_dim": int(n.max()),
        "range_sd": {
            name: (float(np.sinh(lo[i])), float(np.sinh(hi[i]))) for i, name in enumerate(names)
        },
        "edge_mass": float(max(edge.values(), default=0.0)),
        "concave_mode": concave,
    }
    if not concave:
        warnings.append("the hyperparameter posterior is not concave at its mode: check the priors")
    factor = min(FINE_FACTOR, int((fine_points / np.prod(n)) ** (1 / d) + 1e-9))
    known = getattr(model, "known", None)

    def part(v):
        """What the finer grid's interpolation leaves out: the standard normal in u (as a
        density in v) and the model's known part of its density."""
        out = (np.log(np.cosh(v)) - 0.5 * np.sinh(v) ** 2).sum(axis=1)
        return out if known is None else out + known(mode + np.sinh(v) @ chol.T)

    fine = None
    if factor > 1 and n.min() >= 4:  # (four points a dimension for a local cubic)
        v_f, h_f, lp_f = _finer(lp, lo, hi, n, factor, part)
        w_f = _weights(lp_f)
        kept = w_f > 1e-14 * w_f.max()
        fine = GridPosterior(
            points=mode + np.sinh(v_f[kept]) @ chol.T,
            weights=w_f[kept] / w_f[kept].sum(),
            grid=v_f[kept],
            spacing=h_f,
            chol=chol,
            mode=mode,
        )
    return GridPosterior(
        points=z[keep],
        weights=w[keep] / w[keep].sum(),
        grid=v[keep],
        spacing=h,
        chol=chol,
        mode=mode,
        coarse=np.all(idx[keep] % 2 == 0, axis=1),
        info=info,
        warnings=warnings,
        fine=fine,
    )
