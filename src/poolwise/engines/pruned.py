"""A pruned grid over more than 3 unconstrained hyperparameters (R-INLA's ``grid`` strategy).

Around the mode, in coordinates standardised by the curvature (``z = mode + chol u``), the
points of a lattice are explored outward from the mode, layer by layer (each layer one batched
evaluation): a point's neighbours are evaluated while its mass is within ``DROP`` of the
heaviest. Unlike a central composite design it follows a skewed or long-tailed posterior (a
group sd near zero, a correlation that the data barely tell); unlike a full product grid its
cost grows with the posterior's volume, not with the box around it.

The lattice is body-centred, ``v in s (Z^d u (Z^d + 1/2))`` with ``s = sqrt(2) SPACING``: its
dual's shortest vectors are as long as those of the square lattice of step ``SPACING``, so the
trapezoid rule's error on a smooth density (the aliasing of its Fourier transform at those
vectors) is about the same, with half the points in 4 dimensions. It is stretched,
``u = STRETCH sinh(v / STRETCH)``: even near the mode, wider and wider in a long tail (a log sd
whose density falls exponentially towards minus infinity), whose points are then few. Each
point's weight is its density times the stretch's Jacobian; its cell is a cube of the lattice's
volume per point.
"""

from __future__ import annotations

import itertools

import numpy as np

from .base import Target
from .exact import GridPosterior
from .optimize import gaussian_at_mode, known_derivatives

# the lattice's equivalent square spacing in v (standardised units near the mode)
SPACING = 1.5
# the stretch's length: u = STRETCH sinh(v / STRETCH) (steps about twice as long 4 sds out)
STRETCH = 3.0
# points whose log mass is within this of the heaviest have their neighbours explored
DROP = 4.0
# the most points explored (the posterior is then far wider than its curvature at the mode says)
MAX_POINTS = 20_000


def _to_u(v: np.ndarray) -> np.ndarray:
    """Lattice coordinates to standardised ones (the stretch)."""
    return STRETCH * np.sinh(v / STRETCH)


def fit(model: Target, spacing: float = SPACING, drop: float = DROP) -> GridPosterior:
    """Integrate the model's posterior density, ``exp(log_posterior)``, over R^d on a lattice
    explored from the mode.

    Example
    -------
    >>> from poolwise.engines.base import Density
    >>> post = fit(Density(lambda z: -0.5 * ((z - 1.0) ** 2).sum(axis=1), np.zeros(4)))
    >>> m = post.weights @ post.points[:, 0]
    >>> round(float(m), 4), round(float(post.weights @ (post.points[:, 0] - m) ** 2), 2)
    (1.0, 1.0)
    """
    log_density, z0 = model.log_posterior, model.initial_point()
    d = z0.size
    mode, chol, concave = gaussian_at_mode(log_density, z0, *known_derivatives(model))
    # integer coordinates k, all even or all odd: v = k s / 2
    half = np.sqrt(2.0) * spacing / 2

    def evaluate(idx: np.ndarray) -> np.ndarray:
        v = idx * half
        lp = log_density(mode + _to_u(v) @ chol.T)
        return np.where(np.isfinite(lp), lp, -np.inf) + np.log(np.cosh(v / STRETCH)).sum(axis=1)

    steps = np.vstack(
        [2 * np.eye(d, dtype=int), -2 * np.eye(d, dtype=int)]
        + [np.array(list(itertools.product([-1, 1], repeat=d)), dtype=int)]
    )
    seen = {(0,) * d}
    idx = [np.zeros((1, d), dtype=int)]
    lps = [evaluate(idx[0])]
    top = lps[0][0]
    frontier = idx[0]
    warnings = []
    while frontier.size:
        candidates = (frontier[:, None, :] + steps[None]).reshape(-1, d)
        new = []
        for row in map(tuple, candidates):
            if row not in seen:
                seen.add(row)
                new.append(row)
        if not new:
            break
        if len(seen) > MAX_POINTS:
            warnings.append(
                "the hyperparameter posterior reaches far beyond its curvature at the mode: the "
                "grid stopped at its budget of points"
            )
            break
        layer = np.array(new, dtype=int)
        lp = evaluate(layer)
        idx.append(layer)
        lps.append(lp)
        top = max(top, lp.max())
        frontier = layer[lp > top - drop]
    idx_all, lp_all = np.concatenate(idx), np.concatenate(lps)
    w = np.exp(lp_all - lp_all.max())
    w /= w.sum()
    if not concave:
        warnings.append("the hyperparameter posterior is not concave at its mode: check the priors")
    v = idx_all * half
    return GridPosterior(
        points=mode + _to_u(v) @ chol.T,
        weights=w,
        grid=v,
        # a cube with the lattice's volume per point, (s^d / 2)^(1/d)
        spacing=np.full(d, 2 * half * 2 ** (-1 / d)),
        chol=chol,
        mode=mode,
        stretch=STRETCH,
        info={"grid_points": len(w), "design": "pruned grid", "concave_mode": concave},
        warnings=warnings,
    )
