"""Families: the maths of one outcome type (likelihood, population, conditional posterior)."""

from .base import Family
from .binomial import Binomial
from .normal import NormalKnownSE, NormalRows
from .poisson import Poisson

FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (NormalRows, NormalKnownSE, Binomial, Poisson)
}

__all__ = ["FAMILIES", "Binomial", "Family", "NormalKnownSE", "NormalRows", "Poisson"]
