"""Highest-density intervals: from draws, or exactly for normal, beta and gamma distributions."""

from __future__ import annotations

import numpy as np

from ._lazy import special


def hdi_from_draws(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Narrowest interval holding ``prob`` of the draws, column by column (draws along axis 0).

    Example
    -------
    >>> lo, hi = hdi_from_draws(np.arange(101.0)[:, None], 0.9)
    >>> float(lo[0]), float(hi[0])
    (0.0, 90.0)
    """
    x = np.sort(np.asarray(draws, dtype=float), axis=0)
    n = x.shape[0]
    k = int(np.floor(prob * n))
    width = x[k:] - x[: n - k]
    start = np.argmin(width, axis=0)
    cols = np.arange(x.shape[1])
    return x[start, cols], x[start + k, cols]


def hdi_normal(mean: np.ndarray, var: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """HDI of N(mean, var)."""
    half = special.ndtri(0.5 + prob / 2) * np.sqrt(var)  # the normal quantile
    return mean - half, mean + half


def _newton(cdf, ppf, logpdf, dlogpdf, mode, lower, upper, prob):
    """Solve F(U) - F(L) = prob and f(U) = f(L) for a unimodal density with an interior mode.

    ``cdf``, ``logpdf`` and ``dlogpdf`` take (x, index) so that only unconverged entries are
    iterated. Newton steps start at the equal-tailed interval and stay on their side of the mode.
    """
    lo, hi = ppf((1 - prob) / 2), ppf((1 + prob) / 2)
    todo = np.arange(lo.size)
    with np.errstate(all="ignore"):
        for _ in range(30):
            lw, h, m = lo[todo], hi[todo], mode[todo]
            log_lo, log_hi = logpdf(lw, todo), logpdf(h, todo)
            f_lo, f_hi = np.exp(log_lo), np.exp(log_hi)
            r1 = cdf(h, todo) - cdf(lw, todo) - prob
            r2 = log_hi - log_lo
            g_lo, g_hi = dlogpdf(lw, todo), dlogpdf(h, todo)
            det = f_hi * g_lo - f_lo * g_hi
            new_lo = lw - (g_hi * r1 - f_hi * r2) / det
            new_hi = h - (g_lo * r1 - f_lo * r2) / det
            new_lo = np.where(np.isfinite(new_lo), new_lo, lw)
            new_hi = np.where(np.isfinite(new_hi), new_hi, h)
            new_lo = np.where(new_lo <= lower, (lw + lower) / 2, new_lo)
            new_lo = np.where(new_lo >= m, (lw + m) / 2, new_lo)
            far = 2 * h if np.isinf(upper) else (h + upper) / 2
            new_hi = np.where(new_hi >= upper, far, new_hi)
            new_hi = np.where(new_hi <= m, (h + m) / 2, new_hi)
            lo[todo], hi[todo] = new_lo, new_hi
            # coverage within 1e-10 and end densities equal to 1e-7 (relative): met already, or
            # after this step where Newton's quadratic convergence starts from residuals < 1e-6
            done = (np.abs(r1) < 1e-6) & (np.abs(r2) < 1e-6)
            todo = todo[~done]
            if todo.size == 0:
                break
    return lo, hi


def hdi_beta(a: np.ndarray, b: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """HDI of Beta(a, b); one-sided when the density is monotone, equal-tailed when U-shaped.

    Example
    -------
    >>> lo, hi = hdi_beta(np.array([3.0]), np.array([3.0]), 0.9)
    >>> round(float(lo[0] + hi[0]), 10)
    1.0
    """
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    lo, hi = np.empty(a.shape), np.empty(a.shape)
    inner = (a > 1) & (b > 1)
    down = (a <= 1) & (b > 1)
    up = (a > 1) & (b <= 1)
    lo[down], hi[down] = 0.0, special.betaincinv(a[down], b[down], prob)
    lo[up], hi[up] = special.betaincinv(a[up], b[up], 1 - prob), 1.0
    both = (a <= 1) & (b <= 1)
    lo[both] = special.betaincinv(a[both], b[both], (1 - prob) / 2)
    hi[both] = special.betaincinv(a[both], b[both], (1 + prob) / 2)
    if inner.any():
        ai, bi = a[inner], b[inner]
        norm = special.betaln(ai, bi)
        lo[inner], hi[inner] = _newton(
            lambda x, i: special.betainc(ai[i], bi[i], x),
            lambda q: special.betaincinv(ai, bi, q),
            lambda x, i: (ai[i] - 1) * np.log(x) + (bi[i] - 1) * np.log1p(-x) - norm[i],
            lambda x, i: (ai[i] - 1) / x - (bi[i] - 1) / (1 - x),
            (ai - 1) / (ai + bi - 2),
            0.0,
            1.0,
            prob,
        )
    return lo, hi


def hdi_gamma(shape: np.ndarray, rate: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """HDI of Gamma(shape, rate); one-sided from zero when shape <= 1."""
    shape, rate = np.broadcast_arrays(np.asarray(shape, float), np.asarray(rate, float))
    lo = np.zeros(shape.shape)
    hi = special.gammaincinv(shape, prob)
    inner = shape > 1
    if inner.any():
        k = shape[inner]
        norm = special.gammaln(k)
        lo[inner], hi[inner] = _newton(
            lambda x, i: special.gammainc(k[i], x),
            lambda q: special.gammaincinv(k, q),
            lambda x, i: (k[i] - 1) * np.log(x) - x - norm[i],
            lambda x, i: (k[i] - 1) / x - 1.0,
            k - 1,
            0.0,
            np.inf,
            prob,
        )
    return lo / rate, hi / rate


def hdi_moments(kind: str, mean: np.ndarray, var: np.ndarray, prob: float):
    """HDI of the normal, beta or gamma distribution with the given mean and variance."""
    if kind == "normal":
        return hdi_normal(mean, var, prob)
    safe = np.maximum(var, 1e-300)
    if kind == "beta":
        t = np.maximum(mean * (1 - mean) / safe - 1, 1e-12)
        lo, hi = hdi_beta(mean * t, (1 - mean) * t, prob)
    else:
        lo, hi = hdi_gamma(mean**2 / safe, mean / safe, prob)
    point = var <= 0
    return np.where(point, mean, lo), np.where(point, mean, hi)
