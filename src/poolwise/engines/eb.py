"""The empirical-Bayes engine: type-II maximum likelihood (or MAP) of the hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import Target
from .optimize import covariance, known_derivatives, mode_and_hessian

# a coordinate whose objective stays flat this much further on has run off to a boundary
# (tau = 0, kappa = inf)
RUNAWAY = 20.0
# ... where "flat" means the log objective changes by less than this over those 20 units: with
# many groups the search stops short of the edge (tau ~ 1e-4), where the change is small but not
# tiny, and no interior maximum is that flat (it would fall by 200 / sd² over the same distance)
FLAT = 1e-2
# ... looked for only where the objective's curvature at the maximum is below this (a sd at its
# boundary has curvature ~0): a larger one falls by far more than FLAT in those 20 units
# wherever it stays concave
INSIDE = 1.0


@dataclass
class PointPosterior:
    """A point estimate of the hyperparameters with its asymptotic covariance (unconstrained scale)."""

    mode: np.ndarray  # (d,)
    cov: np.ndarray  # (d, d)
    boundary: tuple[int, ...] = ()
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def point(self) -> bool:
        """The hyperparameters are fixed at the estimate."""
        return True

    @property
    def points(self) -> np.ndarray:
        return self.mode[None, :]

    @property
    def weights(self) -> np.ndarray:
        return np.ones(1)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """The estimate repeated: group posteriors are conditional on it."""
        return np.repeat(self.points, size, axis=0)

    def sample_normal(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws from the asymptotic normal approximation, for intervals of the hyperparameters."""
        return rng.multivariate_normal(self.mode, self.cov, size=size, method="eigh")


def fit(model: Target) -> PointPosterior:
    """Maximise the model's ``log_objective`` (a log marginal likelihood, plus a log prior for MAP).

    Coordinates that run off towards the edge of their support are reported in ``boundary``.

    Example
    -------
    >>> from poolwise.engines.base import Density
    >>> post = fit(Density(lambda z: -0.5 * ((z - 3.0) ** 2).sum(axis=1), np.zeros(2)))
    >>> post.mode.round(4).tolist(), post.boundary
    ([3.0, 3.0], ())
    """
    objective = model.log_objective
    z0 = model.initial_point()
    d = z0.size
    if d == 0:
        return PointPosterior(np.zeros(0), np.zeros((0, 0)))
    mode, h, ok = mode_and_hessian(objective, z0, *known_derivatives(model))
    if not ok:
        raise ValueError("the marginal likelihood is zero or undefined everywhere tried")
    # a coordinate that ran off towards an end of its range and stays flat further on (not one
    # whose curvature says the maximum is inside)
    direction = np.sign(mode - z0) * (-np.diag(h) < INSIDE)
    boundary = ()
    if direction.any():
        top = objective(mode[None, :])[0]
        boundary = tuple(i for i in _runaway(objective, mode, direction, top) if direction[i])
    cov, concave = covariance(h)
    warnings = (
        [] if concave or boundary else ["the marginal likelihood is not concave at its maximum"]
    )
    return PointPosterior(mode=mode, cov=cov, boundary=boundary, warnings=warnings)


def _runaway(objective, mode: np.ndarray, direction: np.ndarray, top: float) -> list[int]:
    """The coordinates (of those ``direction`` moves) whose objective stays flat ``RUNAWAY``
    units further on; where that far
    point leaves the numbers (a probability rounded to 1: the objective is -inf there), the
    nearest of a quarter and a twentieth of the distance that the numbers still reach."""
    d, axes = mode.size, np.flatnonzero(direction)
    steps = RUNAWAY * np.array([1.0, 0.25, 0.05])
    moves = np.diag(direction)[axes]
    points = mode + (steps[:, None, None] * moves[None, :, :]).reshape(-1, d)
    values = objective(points).reshape(steps.size, axes.size)
    out = []
    for a, i in enumerate(axes):
        finite = np.isfinite(values[:, a])
        if finite.any() and abs(values[finite.argmax(), a] - top) < FLAT:
            out.append(int(i))
    return out
