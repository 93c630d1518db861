"""poolwise: partial pooling for grouped data, exact and explained.

>>> import poolwise
>>> poolwise.fit(poolwise.example_path("pumps"), group="pump", counts="x_failures",
...              exposure="t_thousand_hours", seed=0).method
'exact'
"""

from typing import Any

from ._version import __version__
from .api import fit, fit_stats
from .compare import Comparison, compare
from .data import example_path, read_path
from .errors import PoolwiseWarning
from .priors import (
    LKJ,
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


def __getattr__(name: str) -> Any:
    """``poolwise.check``, imported when first used: it needs scipy.stats, which is slow to load.

    >>> import poolwise
    >>> poolwise.check.calibration.__module__
    'poolwise.check'
    """
    if name == "check":
        import importlib

        return importlib.import_module(".check", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Beta",
    "Comparison",
    "Exponential",
    "Flat",
    "Gamma",
    "HalfCauchy",
    "HalfNormal",
    "LKJ",
    "Lomax",
    "Normal",
    "Pareto",
    "PoolFit",
    "PoolwiseWarning",
    "Power",
    "Uniform",
    "__version__",
    "check",
    "compare",
    "example_path",
    "fit",
    "fit_stats",
    "read_path",
    "simulate",
]
