"""poolwise: partial pooling for grouped data, exact and explained.

>>> import poolwise
>>> poolwise.fit(poolwise.example_path("pumps"), group="pump", counts="x_failures",
...              exposure="t_thousand_hours", seed=0).method
'exact'
"""

from . import check  # poolwise.check.calibration (imports no jax)
from .api import PoolwiseWarning, fit, fit_stats
from .compare import Comparison, compare
from .data import example_path, read_path
from .priors import (
    Beta,
    Exponential,
    Flat,
    Gamma,
    HalfCauchy,
    HalfNormal,
    Lomax,
    Normal,
    Pareto,
    Power,
    Uniform,
)
from .results import PoolFit
from .simulate import simulate

__version__ = "0.1.0"

__all__ = [
    "Beta",
    "Comparison",
    "Exponential",
    "Flat",
    "Gamma",
    "HalfCauchy",
    "HalfNormal",
    "Lomax",
    "Normal",
    "Pareto",
    "PoolFit",
    "PoolwiseWarning",
    "Power",
    "Uniform",
    "check",
    "compare",
    "example_path",
    "fit",
    "fit_stats",
    "read_path",
    "simulate",
]
