"""Numerically stable special-function combinations shared by the count families."""

from __future__ import annotations

import numpy as np

from .._lazy import gammaln

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
    big = a > STIRLING_FROM
    with np.errstate(all="ignore"):
        if not big.any():
            return gammaln(a + k) - gammaln(a)
        out = np.empty(a.shape)
        small = ~big
        out[small] = gammaln(a[small] + k[small]) - gammaln(a[small])
        ab, kb = a[big], k[big]
        akb = ab + kb
        out[big] = (
            (ab - 0.5) * np.log1p(kb / ab)
            + kb * np.log(akb)
            - kb
            + (1.0 / akb - 1.0 / ab) / 12.0
            - (1.0 / akb**3 - 1.0 / ab**3) / 360.0
        )
    return out


def log_rising_jax(a, k):
    """jax twin of :func:`log_rising`, for the families' log marginals under NUTS."""
    import jax.numpy as jnp
    from jax.scipy.special import gammaln as jgammaln

    big = jnp.maximum(a, 1.0)
    ak = big + k
    series = (
        (big - 0.5) * jnp.log1p(k / big)
        + k * jnp.log(ak)
        - k
        + (1.0 / ak - 1.0 / big) / 12.0
        - (1.0 / ak**3 - 1.0 / big**3) / 360.0
    )
    small = jnp.minimum(a, STIRLING_FROM)
    direct = jgammaln(small + k) - jgammaln(small)
    return jnp.where(a > STIRLING_FROM, series, direct)
