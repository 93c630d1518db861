"""The contract every engine keeps: ``fit(model, **options) -> Posterior``.

An engine takes a model of the hyperparameters on the unconstrained scale (a :class:`Target`:
their names, a starting point and log densities over arrays of points) and returns a
:class:`Posterior`: weighted points of the hyperparameters (a quadrature grid, one point estimate
or equally weighted draws) that draw more points, with the engine's own diagnostics. The pipelines
look engines up by name in :data:`poolwise.engines.ENGINES` and read every posterior through this
interface alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .optimize import Derivatives, Hessian, LogDensity


class Target(Protocol):
    """A model as an engine sees it: log densities of (K, d) unconstrained points, shape (K,)."""

    names: tuple[str, ...]

    def initial_point(self) -> np.ndarray:
        """A rough estimate of the hyperparameters (d,), to start searches from."""
        ...

    def log_posterior(self, z: np.ndarray) -> np.ndarray:
        """The log posterior density on the unconstrained scale (Jacobians included)."""
        ...

    def log_objective(self, z: np.ndarray) -> np.ndarray:
        """What a point estimate maximises: the log marginal likelihood, plus the log priors the
        user gave (a MAP estimate on the natural scale: no Jacobians)."""
        ...


class Posterior(Protocol):
    """What every engine returns.

    ``points`` (K, d) on the unconstrained scale with ``weights`` (K,) summing to one; ``point``
    says that they are one estimate whose uncertainty is left out (group posteriors are then
    conditional on it); ``boundary`` lists the coordinates that ran off to an end of their range;
    ``info`` and ``warnings`` are the engine's diagnostics.
    """

    points: np.ndarray
    weights: np.ndarray
    boundary: tuple[int, ...]
    info: dict[str, Any]
    warnings: list[str]

    @property
    def point(self) -> bool:
        """Whether the posterior is a point estimate of the hyperparameters."""
        ...

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws (size, d) of the hyperparameters on the unconstrained scale."""
        ...


@dataclass(frozen=True)
class Density:
    """A bare target: one log density, both posterior and objective, and a starting point.

    Example
    -------
    >>> from poolwise.engines import ENGINES
    >>> post = ENGINES["eb"](Density(lambda z: -0.5 * ((z - 3.0) ** 2).sum(axis=1), np.zeros(1)))
    >>> post.mode.round(4).tolist(), post.point
    ([3.0], True)
    """

    log_density: LogDensity
    start: np.ndarray
    names: tuple[str, ...] = ()
    # the density's exact gradient and information, where known (the engines' mode search and
    # curvature then take it: see poolwise.engines.optimize.mode_and_hessian)
    derivatives: Derivatives | None = None
    # ... and its exact Hessian, where known (else forward differences of the gradient)
    hessian: Hessian | None = None
    # a part of the log density in closed form and cheap (the hyperparameters' log prior): the
    # exact engine's finer grid interpolates the rest, smooth where that part falls off a cliff
    # (a half-normal prior's on the log scale)
    known: LogDensity | None = None

    def initial_point(self) -> np.ndarray:
        return self.start

    def log_posterior(self, z: np.ndarray) -> np.ndarray:
        return self.log_density(z)

    def log_objective(self, z: np.ndarray) -> np.ndarray:
        return self.log_density(z)
