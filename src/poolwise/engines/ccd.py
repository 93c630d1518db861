"""A central composite design over more than 3 unconstrained hyperparameters (R-INLA's ``ccd``).

Around the mode, in coordinates standardised by the curvature (``z = mode + chol u``), the design
has the centre, the 2^d corners ``(±f0, ..., ±f0)`` and the 2d axial points ``±f0 sqrt(d) e_i``,
all off-centre points at radius ``f0 sqrt(d)``. Each point's weight is its density times a design
weight chosen so that a normal posterior's moments come out exactly (mean 0, variance 1 along
every axis). The result is a :class:`~poolwise.engines.exact.GridPosterior` whose cells have no
width (its draws are the design's points).
"""

from __future__ import annotations

import itertools

import numpy as np

from .base import Target
from .exact import GridPosterior
from .optimize import gaussian_at_mode, known_derivatives

F0 = 1.1
# an off-centre point whose density exceeds the normal approximation's by this much (log) says
# that the posterior has a heavier tail than the design can follow
HEAVY = 2.0


def fit(model: Target) -> GridPosterior:
    """Integrate the model's posterior density, ``exp(log_posterior)``, over R^d by a central
    composite design.

    Example
    -------
    >>> from poolwise.engines.base import Density
    >>> post = fit(Density(lambda z: -0.5 * ((z - 1.0) ** 2).sum(axis=1), np.zeros(4)))
    >>> round(float(post.weights @ post.points[:, 0]), 6), round(float(post.weights @ (post.points[:, 0] - 1) ** 2), 6)
    (1.0, 1.0)
    """
    log_density, z0 = model.log_posterior, model.initial_point()
    d = z0.size
    names = tuple(model.names) or tuple(f"z{i}" for i in range(d))
    mode, chol, concave = gaussian_at_mode(log_density, z0, *known_derivatives(model))
    corners = np.array(list(itertools.product([-F0, F0], repeat=d)))
    axial = np.vstack([np.eye(d), -np.eye(d)]) * F0 * np.sqrt(d)
    u = np.vstack([np.zeros(d), corners, axial])
    points = mode + u @ chol.T
    lp = log_density(points)
    rel = lp[1:] - lp[0]
    design = np.exp(d * F0**2 / 2) / ((len(u) - 1) * (F0**2 - 1))
    w = np.r_[1.0, design * np.exp(np.where(np.isfinite(rel), rel, -np.inf))]
    w /= w.sum()
    warnings = []
    heavy = rel > -d * F0**2 / 2 + HEAVY
    if heavy.any():
        warnings.append(
            "the hyperparameter posterior is far from normal away from its mode (a heavy tail "
            "in "
            + ", ".join(sorted({names[i] for i in np.argmax(np.abs(u[1:][heavy]), axis=1)}))
            + "): the central composite design may misplace its mass"
        )
    if not concave:
        warnings.append("the hyperparameter posterior is not concave at its mode: check the priors")
    return GridPosterior(
        points=points,
        weights=w,
        grid=np.arcsinh(u),
        spacing=np.zeros(d),
        chol=chol,
        mode=mode,
        info={"grid_points": len(u), "design": "central composite", "concave_mode": concave},
        warnings=warnings,
    )
