"""Maps between a hyperparameter's support and the real line, with log-Jacobians."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._lazy import expit, log_expit, logit


@dataclass(frozen=True)
class Transform:
    """Bijection from the real line ``z`` onto an interval ``(lower, upper)``.

    Unbounded on both sides: ``loc + scale z`` (``loc``, ``scale`` put z on the scale of the data). Bounded below: ``lower + exp(z)``. Bounded on both sides:
    a scaled logistic. Bounded above only: ``upper - exp(z)``.

    Example
    -------
    >>> Transform(0.0, math.inf).forward(np.array([0.0]))
    array([1.])
    """

    lower: float = -math.inf
    upper: float = math.inf
    loc: float = 0.0
    scale: float = 1.0

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Real line → support."""
        lo, hi = self.lower, self.upper
        if math.isinf(lo) and math.isinf(hi):
            return self.loc + self.scale * z
        with np.errstate(over="ignore"):
            if math.isinf(hi):
                return lo + np.exp(z)
            if math.isinf(lo):
                return hi - np.exp(z)
        return lo + (hi - lo) * expit(z)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Support → real line."""
        lo, hi = self.lower, self.upper
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore"):
            if math.isinf(lo) and math.isinf(hi):
                return (x - self.loc) / self.scale
            if math.isinf(hi):
                return np.log(x - lo)
            if math.isinf(lo):
                return np.log(hi - x)
            return logit((x - lo) / (hi - lo))

    def log_jacobian(self, z: np.ndarray) -> np.ndarray:
        """log |dx/dz|."""
        lo, hi = self.lower, self.upper
        if math.isinf(lo) and math.isinf(hi):
            return np.full_like(z, math.log(self.scale))
        if math.isinf(lo) or math.isinf(hi):
            return z
        return math.log(hi - lo) + log_expit(z) + log_expit(-z)


def intersect(
    a: tuple[float, float], b: tuple[float, float], loc: float = 0.0, scale: float = 1.0
) -> Transform:
    """The transform onto the intersection of two supports."""
    return Transform(max(a[0], b[0]), min(a[1], b[1]), loc, scale)
