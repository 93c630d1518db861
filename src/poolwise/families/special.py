"""Numerically stable special-function combinations shared by the count families."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

# above this, gammaln(a + k) - gammaln(a) loses digits to cancellation: use Stirling's series
STIRLING_FROM = 1e5


def log_rising(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log Γ(a + k) − log Γ(a) = log of the rising factorial a (a+1) … (a+k−1), stable for huge a.

    Example
    -------
    >>> float(log_rising(np.array(3.0), np.array(2.0)))  # log(3 * 4)
    2.4849066497880004
    >>> bool(np.isclose(log_rising(np.array(1e12), np.array(3.0)), 3 * np.log(1e12), rtol=1e-12))
    True
    """
    a, k = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(k, dtype=float))
    with np.errstate(all="ignore"):
        direct = gammaln(a + k) - gammaln(a)
        big = np.maximum(a, 1.0)
        ak = big + k
        series = (
            (big - 0.5) * np.log1p(k / big)
            + k * np.log(ak)
            - k
            + (1.0 / ak - 1.0 / big) / 12.0
            - (1.0 / ak**3 - 1.0 / big**3) / 360.0
        )
    return np.where(a > STIRLING_FROM, series, direct)
