"""Highest-density intervals: from draws, or by root-finding for normal, beta and gamma
distributions (and, through :func:`solve_hdi`, for mixtures of them)."""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from ._lazy import special

# evaluate(x, index) -> F, F', F'', log f, (log f)', (log f)'' at x for the entries ``index``:
# F is the distribution function of the variable solved for, f the density whose equal heights
# at the two ends define the interval (the density of x, or of a transform of x)
Evaluate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
MAX_STEPS = 60
# Hart's rational approximation of the normal tail (Hart et al. 1968, no. 5666, as given by West,
# "Better approximations to cumulative normal functions", 2005): Phi(-t) = exp(-t²/2) P(t) / Q(t)
# for t >= 0, coefficients from the highest power down
TAIL_P = (
    3.52624965998911e-02,
    0.700383064443688,
    6.37396220353165,
    33.912866078383,
    112.079291497871,
    221.213596169931,
    220.206867912376,
)
TAIL_Q = (
    8.83883476483184e-02,
    1.75566716318264,
    16.064177579207,
    86.7807322029461,
    296.564248779674,
    637.333633378831,
    793.826512519948,
    440.413735824752,
)
# beyond this |z| the tail's exp(-z²/2) is zero: the rational is held there (no inf / inf)
TAIL_END = 40.0


def hdi_names(prob: float) -> tuple[str, str]:
    """Column names of an HDI's ends, ArviZ's way.

    Example
    -------
    >>> hdi_names(0.94)
    ('hdi_3%', 'hdi_97%')
    """
    tail = (1 - prob) / 2 * 100
    return f"hdi_{tail:g}%", f"hdi_{100 - tail:g}%"


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


def hdi_normal(
    mean: np.ndarray, var: np.ndarray, prob: float, skewness: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """HDI of N(mean, var); with ``skewness`` g, of the Edgeworth density ``phi(z) (1 + g
    He_3(z) / 6)`` to first order in g: both ends moved by ``g (z^2 - 3) / 6`` sds (equal
    densities at the ends, the mass unchanged).

    Example
    -------
    >>> lo, hi = hdi_normal(np.array([0.0]), np.array([1.0]), 0.95)
    >>> round(float(hi[0]), 4)
    1.96
    """
    z = NormalDist().inv_cdf(0.5 + prob / 2)  # the normal quantile
    sd = np.sqrt(var)
    centre = mean + skewness * (z * z - 3) / 6 * sd
    return centre - z * sd, centre + z * sd


def _horner(coefficients: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    out = t * coefficients[0]
    for c in coefficients[1:-1]:
        out += c
        out *= t
    out += coefficients[-1]
    return out


def normal_cdf(z: np.ndarray, gauss: np.ndarray | None = None) -> np.ndarray:
    """The standard normal distribution function, elementwise, to an absolute error below
    3e-16 (what a mixture's distribution function needs; the far lower tail, below 1e-12, only
    to a relative 1e-5); ``gauss``: exp(-z²/2), where already at hand. NumPy alone, about as
    fast as scipy.special.ndtr: a fit of normal groups need not import scipy.special.

    Example
    -------
    >>> [round(float(p), 12) for p in normal_cdf(np.array([-1.959963984540054, 0.0, 1.0]))]
    [0.025, 0.5, 0.841344746069]
    """
    z = np.asarray(z, dtype=float)
    t = np.minimum(np.abs(z), TAIL_END)
    low = _horner(TAIL_P, t)
    low /= _horner(TAIL_Q, t)
    low *= np.exp(-0.5 * z * z) if gauss is None else gauss
    # Phi(z) = 1 - low above zero, low below: [z >= 0] - copysign(low, z), without a masked copy
    # or np.where (each several times as slow as the rest together); -0.0 counts as below
    out = np.copysign(low, z, out=t)
    return np.subtract(~np.signbit(z), out, out=out)


def _solve2(f_lo, f_hi, g_lo, g_hi, det, r1, r2):
    """Newton's step for (L, U) from residuals (r1, r2) of F(U) - F(L) - prob and ℓ(U) - ℓ(L)."""
    return -(g_hi * r1 - f_hi * r2) / det, -(g_lo * r1 - f_lo * r2) / det


def solve_hdi(
    evaluate: Evaluate,
    lo: np.ndarray,
    hi: np.ndarray,
    prob: float,
    lower: float = -np.inf,
    upper: float = np.inf,
    mode: np.ndarray | None = None,
    tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve F(U) - F(L) = prob and f(U) = f(L) for each entry, starting from (lo, hi).

    Each step is Newton's with a second-order correction (cubic convergence near the answer); it
    stays inside (lower, upper) and on its side of ``mode`` (where not given: of the current
    interval's midpoint). Entries stop once both residuals are below ``tol``, after one more step.
    Returns lo, hi, whether each converged, and F at the last lo and hi evaluated.

    Example
    -------
    >>> from scipy import stats
    >>> def evaluate(x, i):
    ...     return stats.norm.cdf(x), stats.norm.pdf(x), -x * stats.norm.pdf(x), -x * x / 2, -x, -1 + 0 * x
    >>> lo, hi, ok, _, _ = solve_hdi(evaluate, np.array([-1.0]), np.array([2.5]), 0.95)
    >>> round(float(lo[0]), 6), round(float(hi[0]), 6), bool(ok[0])
    (-1.959964, 1.959964, True)
    """
    lo, hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
    n = lo.size
    ok = np.zeros(n, dtype=bool)
    cdf_lo, cdf_hi = np.full(n, np.nan), np.full(n, np.nan)
    last_lo, last_hi = lo.copy(), hi.copy()  # the last ends where the density was positive
    todo = np.arange(n)
    with np.errstate(all="ignore"):
        for _ in range(MAX_STEPS):
            if todo.size == 0:
                break
            lw, h = lo[todo], hi[todo]
            cdf, f, df, ell, g, dg = evaluate(np.concatenate([lw, h]), np.concatenate([todo, todo]))
            c = todo.size
            # a step onto a point without a positive density is halved back towards the last one
            bad = ~np.all(np.isfinite(np.reshape([cdf, ell, g], (3, 2, c))), axis=(0, 1))
            bad |= (f[:c] <= 0) | (f[c:] <= 0)
            back = todo[bad]
            lo[back] = (lo[back] + last_lo[back]) / 2
            hi[back] = (hi[back] + last_hi[back]) / 2
            good = ~bad
            todo_all, todo = todo, todo[good]
            keep = np.concatenate([good, good])
            cdf, f, df, ell, g, dg = (a[keep] for a in (cdf, f, df, ell, g, dg))
            lw, h = lw[good], h[good]
            last_lo[todo], last_hi[todo] = lw, h
            m = (lw + h) / 2 if mode is None else mode[todo]
            c = todo.size
            cdf_lo[todo], cdf_hi[todo] = cdf[:c], cdf[c:]
            r1 = cdf[c:] - cdf[:c] - prob
            r2 = ell[c:] - ell[:c]
            det = f[c:] * g[:c] - f[:c] * g[c:]
            args = f[:c], f[c:], g[:c], g[c:], det
            step_lo, step_hi = _solve2(*args, r1, r2)
            # what the Newton step leaves of the residuals, to second order, and its correction
            q1 = (df[c:] * step_hi**2 - df[:c] * step_lo**2) / 2
            q2 = (dg[c:] * step_hi**2 - dg[:c] * step_lo**2) / 2
            fix_lo, fix_hi = _solve2(*args, q1, q2)
            small = (np.abs(fix_lo) <= np.abs(step_lo) / 2) & (
                np.abs(fix_hi) <= np.abs(step_hi) / 2
            )
            new_lo = lw + step_lo + np.where(small, fix_lo, 0.0)
            new_hi = h + step_hi + np.where(small, fix_hi, 0.0)
            new_lo = np.where(np.isfinite(new_lo), new_lo, lw)
            new_hi = np.where(np.isfinite(new_hi), new_hi, h)
            near = lw - (h - lw) if np.isinf(lower) else (lw + lower) / 2
            new_lo = np.where(new_lo <= lower, near, new_lo)
            new_lo = np.where(new_lo >= m, (lw + m) / 2, new_lo)
            far = h + (h - lw) if np.isinf(upper) else (h + upper) / 2
            new_hi = np.where(new_hi >= upper, far, new_hi)
            new_hi = np.where(new_hi <= m, (h + m) / 2, new_hi)
            lo[todo], hi[todo] = new_lo, new_hi
            # coverage and log densities equal to ~1e-12: met already, or after this step, which
            # converges cubically from residuals below tol
            done = (np.abs(r1) < tol) & (np.abs(r2) < tol)
            ok[todo[done]] = True
            todo = np.sort(np.concatenate([todo[~done], todo_all[bad]]))
    return lo, hi, ok, cdf_lo, cdf_hi


def solve_quantile(
    evaluate: Evaluate,
    x: np.ndarray,
    q: float,
    lower: float = -np.inf,
    upper: float = np.inf,
    tol: float = 1e-9,
) -> np.ndarray:
    """Solve F(x) = q for each entry from ``x``: Newton's steps with a second-order correction,
    kept inside a bracket that shrinks as F is evaluated (halving it when a step leaves it).

    Example
    -------
    >>> from scipy import stats
    >>> def evaluate(x, i):
    ...     return stats.norm.cdf(x), stats.norm.pdf(x), -x * stats.norm.pdf(x)
    >>> round(float(solve_quantile(evaluate, np.array([0.0]), 0.975)[0]), 6)
    1.959964
    """
    x = np.array(x, dtype=float)
    a, b = np.full(x.size, float(lower)), np.full(x.size, float(upper))
    todo = np.arange(x.size)
    with np.errstate(all="ignore"):
        for _ in range(MAX_STEPS):
            if todo.size == 0:
                break
            xt = x[todo]
            cdf, f, df = evaluate(xt, todo)[:3]
            r = cdf - q
            a[todo] = np.where(r < 0, xt, a[todo])
            b[todo] = np.where(r > 0, xt, b[todo])
            at, bt = a[todo], b[todo]
            step = -r / f
            fix = -df / (2 * f) * step**2
            new = xt + step + np.where(np.abs(fix) <= np.abs(step) / 2, fix, 0.0)
            done = np.abs(r) < tol
            # a step leaving the bracket is replaced: by its midpoint, or outwards where it is open
            out = ~np.isfinite(new) | ((new <= at) | (new >= bt)) & ~done
            bounded = np.isfinite(at) & np.isfinite(bt)
            outward = xt + np.sign(-r) * (np.abs(xt) + 1.0)
            fallback = np.where(bounded | (outward <= at) | (outward >= bt), (at + bt) / 2, outward)
            x[todo] = np.where(out, np.where(np.isfinite(fallback), fallback, xt), new)
            todo = todo[~done]
    return x


def kernel_terms(centre, bandwidth, x):
    """Elementwise CDF, density and the density's first and second derivatives at x of the
    fourth-order Gaussian kernel phi(z) (3 - z²) / 2, z = (x - centre) / bandwidth: smoothing
    point masses with it leaves moments up to the third unchanged (the density may dip below
    zero far out)."""
    z = (x - centre) / bandwidth
    phi = np.exp(-0.5 * z * z) / (np.sqrt(2 * np.pi) * bandwidth)
    z2 = z * z
    return (
        normal_cdf(z) + 0.5 * z * phi * bandwidth,
        0.5 * phi * (3.0 - z2),
        -0.5 * z * phi * (5.0 - z2) / bandwidth,
        -0.5 * phi * (5.0 - 8.0 * z2 + z2 * z2) / bandwidth**2,
    )


def beta_terms(a, b, log_norm, x):
    """The same terms for Beta(a, b) (``log_norm`` = log B(a, b))."""
    am, bm = a - 1.0, b - 1.0
    log_pdf = special.xlogy(am, x) + special.xlog1py(bm, -x) - log_norm
    return special.betainc(a, b, x), log_pdf, am / x - bm / (1 - x), -am / x**2 - bm / (1 - x) ** 2


def gamma_terms(shape, rate, log_norm, x):
    """The same terms for Gamma(shape, rate) (``log_norm`` = log Gamma(shape) - log(rate))."""
    km = shape - 1.0
    y = rate * x
    log_pdf = special.xlogy(km, y) - y - log_norm
    return special.gammainc(shape, y), log_pdf, km / x - rate, -km / x**2


def _single(terms, first, second, log_norm) -> Evaluate:
    """``evaluate`` for :func:`solve_hdi` of one distribution per entry."""

    def evaluate(x, i):
        cdf, log_pdf, g, dg = terms(first[i], second[i], log_norm[i], x)
        f = np.exp(log_pdf)
        return cdf, f, f * g, log_pdf, g, dg

    return evaluate


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
        lo[inner], hi[inner] = solve_hdi(
            _single(beta_terms, ai, bi, special.betaln(ai, bi)),
            special.betaincinv(ai, bi, (1 - prob) / 2),
            special.betaincinv(ai, bi, (1 + prob) / 2),
            prob,
            0.0,
            1.0,
            mode=(ai - 1) / (ai + bi - 2),
        )[:2]
    return lo, hi


def hdi_gamma(shape: np.ndarray, rate: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """HDI of Gamma(shape, rate); one-sided from zero when shape <= 1.

    Example
    -------
    >>> lo, hi = hdi_gamma(np.array([1.0]), np.array([2.0]), 0.9)
    >>> float(lo[0]), round(float(hi[0]), 6)
    (0.0, 1.151293)
    """
    shape, rate = np.broadcast_arrays(np.asarray(shape, float), np.asarray(rate, float))
    lo = np.zeros(shape.shape)
    hi = special.gammaincinv(shape, prob)
    inner = shape > 1
    if inner.any():
        k = shape[inner]
        one = np.ones(k.shape)
        lo[inner], hi[inner] = solve_hdi(
            _single(gamma_terms, k, one, special.gammaln(k)),
            special.gammaincinv(k, (1 - prob) / 2),
            special.gammaincinv(k, (1 + prob) / 2),
            prob,
            0.0,
            np.inf,
            mode=k - 1,
        )[:2]
    return lo / rate, hi / rate


def hdi_moments(kind: str, mean: np.ndarray, var: np.ndarray, prob: float):
    """HDI of the normal, beta or gamma distribution with the given mean and variance.

    Example
    -------
    >>> lo, hi = hdi_moments("gamma", np.array([2.0]), np.array([0.0]), 0.9)
    >>> float(lo[0]), float(hi[0])
    (2.0, 2.0)
    """
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
