"""Warnings and the checks of options that every fit shares (the bottom layer)."""

from __future__ import annotations

from numbers import Integral, Real


class PoolwiseWarning(UserWarning):
    """A problem with a fit that the user should know about (also listed in ``fit.warnings``)."""


def check_count(name: str, value: object) -> None:
    """A positive integer option (``draws``, ``chains``, ``tune``).

    Example
    -------
    >>> check_count("draws", 0)
    Traceback (most recent call last):
    ...
    ValueError: draws must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_prob(value: object, name: str = "hdi_prob") -> None:
    """A probability strictly between 0 and 1.

    Example
    -------
    >>> check_prob(1.5)
    Traceback (most recent call last):
    ...
    ValueError: hdi_prob must lie strictly between 0 and 1, got 1.5
    """
    if isinstance(value, bool) or not (isinstance(value, Real) and 0 < value < 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def check_seed(seed: object) -> None:
    """An integer seed or None.

    Example
    -------
    >>> check_seed("1")
    Traceback (most recent call last):
    ...
    TypeError: seed must be an integer or None, got str
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
