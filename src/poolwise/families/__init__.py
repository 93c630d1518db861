"""Families: everything poolwise knows about one outcome type, one module each.

A family's module holds its roles and layouts (how rows hold its data), its sufficient
statistics, its row checks, its log marginal likelihood (numpy and jax), the conditional
posterior of a group's parameter, its simulation and its labels for plots and reports. The
registry below is the only place that lists them: :func:`register_family` adds one (a family
defined outside poolwise too), :func:`family_of` finds one by name.
"""

from __future__ import annotations

from .base import Family, Layout, RowCheck
from .binomial import Binomial
from .normal import NormalKnownSE, NormalRows
from .poisson import Poisson

FAMILIES: dict[str, type[Family]] = {}


def register_family(family: type[Family]) -> type[Family]:
    """Make ``family`` (a :class:`Family` subclass) known by its ``name`` to ``fit``,
    ``simulate``, ``calibration`` and the rest; returns it, so it can decorate the class.

    Example
    -------
    >>> register_family(Poisson) is Poisson, family_of("poisson").description
    (True, 'Poisson counts over exposure, gamma population')
    """
    if not (isinstance(family, type) and issubclass(family, Family)):
        raise TypeError(f"family must be a Family subclass, got {family!r}")
    FAMILIES[family.name] = family
    return family


def family_of(family: str | Family) -> Family:
    """The registered family of that name (a family passes through).

    Example
    -------
    >>> family_of("binomial").statistics
    ('successes', 'trials')
    """
    if isinstance(family, Family):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a family name (str), got {type(family).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}")
    return FAMILIES[family]()


for _family in (NormalRows, NormalKnownSE, Binomial, Poisson):
    register_family(_family)

__all__ = [
    "FAMILIES",
    "Binomial",
    "Family",
    "Layout",
    "NormalKnownSE",
    "NormalRows",
    "Poisson",
    "RowCheck",
    "family_of",
    "register_family",
]
