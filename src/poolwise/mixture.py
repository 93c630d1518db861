"""Mixtures of normal, beta or gamma distributions: distribution function, quantiles and HDIs.

A posterior averaged over the exact engine's grid is such a mixture: a group's theta mixes its
conditional posterior at every grid point, and a hyperparameter mixes a narrow normal per grid
cell on its link scale (log or logit). Each column of the parameters is one variable. Intervals and
quantiles are found by root-finding on the mixture's own distribution function and density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._lazy import special
from .intervals import (
    Evaluate,
    beta_terms,
    gamma_terms,
    kernel_terms,
    normal_cdf,
    solve_hdi,
    solve_quantile,
)

TERMS = {"beta": beta_terms, "gamma": gamma_terms}
INV_SQRT_2PI = 1.0 / math.sqrt(2 * math.pi)
SUPPORT = {
    "normal": (-math.inf, math.inf),
    "kernel": (-math.inf, math.inf),
    "beta": (0.0, 1.0),
    "gamma": (0.0, math.inf),
}
# a normal mixture may stand for log(x) or logit(x): then x's own ends can start an interval
LINK_ENDS = {"identity": (None, None), "log": (0.0, None), "logit": (0.0, 1.0)}
# the smallest weights, together this small a share of the mass, are left out
PRUNE = 1e-12
# variables per block, so that its (points x variables) temporaries stay small (cache-sized)
BLOCK = 1 << 15
# (components x variables) elements per pass of a normal mixture's sums
SUMS_CHUNK = 1 << 14
# residuals at which the interval solver takes its last step: from there its cubically converging
# steps leave ends accurate to ~1e-10 of the sd
TOL = 1e-4
# residuals up to which one step of the solver, from the coarse grid's interval, polishes it on the
# full grid (the two grids' intervals differ by ~1e-4 sd, and each step converges cubically); the
# coarse grid's own solve stops there too: one step from such residuals leaves the coarse interval
# ~1e-6 sd from the coarse grid's, closer than that is to the full grid's
POLISH = 1e-2
# an interior interval leaving less than this mass beyond one end starts at the support's end:
# the density is highest there (the interior end found sits where the grid runs out)
BOUNDARY_MASS = 1e-6


def prune(weights: np.ndarray, share: float = PRUNE) -> np.ndarray:
    """Indices of the points kept when the smallest weights, together under ``share`` of the
    mass, are dropped.

    Example
    -------
    >>> prune(np.array([0.5, 1e-14, 0.5 - 1e-14])).tolist()
    [0, 2]
    """
    order = np.argsort(weights, kind="stable")
    drop = np.cumsum(weights[order]) < share * weights.sum()
    return np.sort(order[~drop])


@dataclass
class Mixture:
    """``weights`` (K,) over components of one ``kind`` with parameters (K, n) for n variables:
    normal (mean, sd), beta (a, b) or gamma (shape, rate), and for beta and gamma ``log_norm``
    their log normalising constants (build with :meth:`of`); or point masses smoothed by a kernel (centre, bandwidth):
    see :func:`poolwise.intervals.kernel_terms`. A normal or kernel mixture with ``link`` "log"
    or "logit" is the distribution of log(x) or logit(x); quantiles and intervals are for x.

    Example
    -------
    >>> mix = Mixture.of("normal", np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.ones((2, 1)))
    >>> lo, hi, _ = mix.hdi(0.9, np.array([-2.5]), np.array([2.5]))
    >>> round(float(hi[0]), 4), round(float(lo[0] + hi[0]), 12)
    (2.2845, 0.0)
    """

    kind: str
    weights: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_norm: np.ndarray | None
    link: str = "identity"

    @classmethod
    def of(
        cls,
        kind: str,
        weights: np.ndarray,
        first: np.ndarray,
        second: np.ndarray,
        link: str = "identity",
    ) -> Mixture:
        """The mixture with parameters normal (mean, variance), beta (a, b), gamma (shape, rate)
        or kernel (centre, squared bandwidth)."""
        if kind in ("normal", "kernel"):
            second, log_norm = np.sqrt(second), None
        elif kind == "beta":
            log_norm = special.betaln(first, second)
        else:
            log_norm = special.gammaln(first) - np.log(second)
        return cls(kind, weights, first, second, log_norm, link)

    @property
    def size(self) -> int:
        return self.first.shape[1]

    def evaluate(self, x: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, ...]:
        """F, F', F'' of the variable and log f, (log f)', (log f)'' of x's density at x (see
        :func:`poolwise.intervals.solve_hdi`), for the variables ``i``."""
        w = self.weights
        if self.kind == "normal":
            mean, sd = (np.take(a, i, axis=1) for a in (self.first, self.second))
            cdf, f, d1, d2 = _normal_sums(w, mean, sd, x)
        else:
            if self.kind == "kernel":
                cdf, pdf, d1, d2 = kernel_terms(self.first[:, i], self.second[:, i], x)
            else:
                args = self.first[:, i], self.second[:, i], self.log_norm[:, i], x
                cdf, log_pdf, g, dg = TERMS[self.kind](*args)
                pdf = np.exp(log_pdf)
                d1, d2 = pdf * g, pdf * (g * g + dg)
            cdf, f, d1, d2 = w @ cdf, w @ pdf, w @ d1, w @ d2
        ell, slope = np.log(f), d1 / f
        curve = d2 / f - slope**2
        if self.link == "log":  # x = e^v: f_x = f_v / x
            ell, slope = ell - x, slope - 1.0
        elif self.link == "logit":  # x = expit(v): f_x = f_v / (x (1 - x))
            p = special.expit(x)
            ell = ell - special.log_expit(x) - special.log_expit(-x)
            slope, curve = slope + 2 * p - 1, curve + 2 * p * (1 - p)
        return cdf, f, d1, ell, slope, curve

    def natural(self, v: np.ndarray) -> np.ndarray:
        """The variable on its own scale (undoing the link)."""
        return from_link(self.link, v)

    def _ends(self) -> tuple[float | None, float | None]:
        if self.kind in ("normal", "kernel"):
            return LINK_ENDS[self.link]
        lower, upper = SUPPORT[self.kind]
        return lower, None if math.isinf(upper) else upper

    def _open_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Whether each variable's density may be highest at the lower (upper) end of its
        support, so that an interval may start there: not where every component's density
        vanishes at that end (beta and gamma components whose shape, at that end, exceeds 1)."""
        every = np.ones(self.size, dtype=bool)
        if self.kind == "beta":
            return self.first.min(axis=0) <= 1, self.second.min(axis=0) <= 1
        if self.kind == "gamma":
            return self.first.min(axis=0) <= 1, every
        return every, every

    def _select(self, rows: np.ndarray | slice, cols: np.ndarray | slice) -> Mixture:
        """The components ``rows`` (their weights as they are) of the variables ``cols``."""
        log_norm = None if self.log_norm is None else self.log_norm[rows][:, cols]
        columns = (self.first[rows][:, cols], self.second[rows][:, cols], log_norm)
        return Mixture(self.kind, self.weights[rows], *columns, self.link)

    def _blocks(self):
        step = max(1, BLOCK // max(self.weights.size, 1))
        for start in range(0, self.size, step):
            sl = slice(start, min(start + step, self.size))
            yield sl, self._select(slice(None), sl)

    def quantile(self, q: float, start: np.ndarray) -> np.ndarray:
        """The q-quantile of each variable (on its own scale), from ``start`` (on the mixed scale)."""
        out = np.empty(self.size)
        for sl, part in self._blocks():
            out[sl] = part.natural(solve_quantile(part.evaluate, start[sl], q, *SUPPORT[part.kind]))
        return out

    def part(self, points: np.ndarray) -> Mixture:
        """The mixture of the components ``points`` (a boolean mask), their weights rescaled."""
        sub = self._select(points, slice(None))
        sub.weights = sub.weights / sub.weights.sum()
        return sub

    def hdi(
        self,
        prob: float,
        lo: np.ndarray,
        hi: np.ndarray,
        coarse: np.ndarray | None = None,
        floor: np.ndarray | None = None,
        tol: float = TOL,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shortest interval holding ``prob`` of each variable (on its own scale), from a
        starting interval (on the mixed scale, e.g. the normal, beta or gamma one with the same
        mean and variance), and whether it is sound: a kernel mixture's F dips below 0 (or above
        1) beyond its last points, where an end found without a support's end to fall back on
        is an artefact. ``coarse`` (a mask of the components on the grid with every other point
        left out) makes the search cheaper: solved on those, then polished by one step on all.
        ``floor``: each variable's density (on its own scale) at the lower end of its support,
        where known (a grid's lowest point, below which the rest is a negligible mass): where
        it is at least the density at the ``prob``-quantile, the interval runs from that end to
        the quantile, without a search (the shortest for a unimodal density). ``tol``: the
        residuals from which the solver takes its last step (``POLISH``: ends to ~1e-4 sd, as a
        polished coarse solve leaves them).

        Example
        -------
        >>> mix = Mixture.of("normal", np.ones(1), np.zeros((1, 1)), np.ones((1, 1)), link="log")
        >>> lo, hi, _ = mix.hdi(0.5, np.array([-1.0]), np.array([1.0]), floor=np.array([1.0]))
        >>> float(lo[0]), round(float(hi[0]), 4)  # from zero to the median of a lognormal
        (0.0, 1.0)
        """
        if floor is not None:
            return self._hdi_from_floor(prob, lo, hi, coarse, floor)
        if coarse is not None and 0 < coarse.sum() < coarse.size:
            lo, hi, _ = self.part(coarse)._blocked_hdi(prob, lo, hi, POLISH)
            lo, hi, tol = to_link(self.link, lo), to_link(self.link, hi), POLISH
        return self._blocked_hdi(prob, lo, hi, tol)

    def _hdi_from_floor(self, prob, lo, hi, coarse, floor):
        """:meth:`hdi` where the lower end's density ``floor`` is known."""
        end = self._ends()[0]
        if end is None:
            raise ValueError(f"a floor needs a lower end of the support ({self.kind}, {self.link})")
        top = self.quantile(prob, hi)
        at = to_link(self.link, top)
        with np.errstate(divide="ignore"):
            ell = self.evaluate(at, np.arange(self.size))[3]
        from_end = np.log(floor) >= ell
        out_lo, out_hi = np.full(self.size, float(end)), top.copy()
        sound = np.ones(self.size, dtype=bool)
        rest = ~from_end
        if rest.any():
            cols = np.flatnonzero(rest)
            part = self._select(slice(None), cols)
            out_lo[cols], out_hi[cols], sound[cols] = part.hdi(prob, lo[cols], hi[cols], coarse)
        return out_lo, out_hi, sound

    def _blocked_hdi(self, prob: float, lo: np.ndarray, hi: np.ndarray, tol: float):
        out_lo, out_hi, sound = np.empty(self.size), np.empty(self.size), np.empty(self.size, bool)
        for sl, part in self._blocks():
            out_lo[sl], out_hi[sl], sound[sl] = part._hdi(prob, lo[sl], hi[sl], tol)
        return out_lo, out_hi, sound

    def _hdi(self, prob: float, lo0: np.ndarray, hi0: np.ndarray, tol: float):
        lower, upper = SUPPORT[self.kind]
        if math.isfinite(lower):  # start inside the support, where the density is finite
            lo0 = np.maximum(lo0, lower + (hi0 - lower) / 64)
            if math.isfinite(upper):
                hi0 = np.minimum(hi0, upper - (upper - lo0) / 64)
        lo, hi, ok, cdf_lo, cdf_hi = solve_hdi(self.evaluate, lo0, hi0, prob, lower, upper, tol=tol)
        end_lo, end_hi = self._ends()
        # beyond the last points of a kernel mixture F may dip below 0 (or above 1): an end found
        # there is unsound, unless the support ends on that side (the interval then starts there)
        sound = ~ok | ((cdf_lo >= 0) | (end_lo is not None)) & (
            (cdf_hi <= 1) | (end_hi is not None)
        )
        best_lo = np.where(ok, self.natural(lo), self.natural(lo0))
        best_hi = np.where(ok, self.natural(hi), self.natural(hi0))
        width = np.where(ok, best_hi - best_lo, np.inf)
        tail = (1 - prob) / 2
        # an interval from an end of the support: where no interior one was found, or where the
        # interior one leaves less than an equal-tailed share beyond that end (it may be longer)
        open_lo, open_hi = self._open_ends()
        sides = [
            (True, end_lo, (~ok | (cdf_lo < tail)) & open_lo, ok & (cdf_lo < BOUNDARY_MASS), hi),
            (
                False,
                end_hi,
                (~ok | (cdf_hi > 1 - tail)) & open_hi,
                ok & (1 - cdf_hi < BOUNDARY_MASS),
                lo,
            ),
        ]
        for from_lower, end, need, snap, start in sides:
            snap &= need
            if end is None or not need.any():
                continue
            idx = np.flatnonzero(need)
            q = prob if from_lower else 1 - prob
            x = self.natural(
                solve_quantile(_subset(self.evaluate, idx), start[idx], q, lower, upper)
            )
            span = np.abs(x - end)
            take = snap[idx] | (span < width[idx])
            idx, x, span = idx[take], x[take], span[take]
            best_lo[idx], best_hi[idx] = (end, x) if from_lower else (x, end)
            width[idx] = span
        return best_lo, best_hi, sound


def from_link(link: str, v: np.ndarray) -> np.ndarray:
    """``v`` on the scale of the link ("identity", "log" or "logit") back on its own scale: the
    inverse of :func:`to_link`.

    Example
    -------
    >>> float(from_link("logit", np.array(0.0)))
    0.5
    """
    if link == "log":
        return np.exp(v)
    if link == "logit":
        return special.expit(v)
    return v


def to_link(link: str, x: np.ndarray) -> np.ndarray:
    """``x`` on the scale of the link ("identity", "log" or "logit"): the inverse of
    :meth:`Mixture.natural`.

    Example
    -------
    >>> float(to_link("logit", np.array(0.5)))
    0.0
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if link == "log":
            return np.log(x)
        if link == "logit":
            return special.logit(x)
        return x


def _normal_sums(
    weights: np.ndarray, mean: np.ndarray, sd: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The weighted sums over normal components (rows of ``mean`` and ``sd``, which are
    overwritten) of their CDF, density and the density's first and second derivatives at x:
    the mixture's costliest case, one exp and one rational function an element, computed in
    place a few rows at a time (a temporary of ``SUMS_CHUNK`` elements stays in cache; a fresh one
    of half a megabyte costs more in page faults than the arithmetic on it)."""
    step = max(1, SUMS_CHUNK // max(mean.shape[1], 1))
    if step >= len(weights):
        return _normal_rows(weights, mean, sd, x)
    parts = [
        _normal_rows(weights[k : k + step], mean[k : k + step], sd[k : k + step], x)
        for k in range(0, len(weights), step)
    ]
    return tuple(np.sum(terms, axis=0) for terms in zip(*parts, strict=True))


def _normal_rows(
    weights: np.ndarray, mean: np.ndarray, sd: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, ...]:
    inv = np.divide(1.0, sd, out=sd)
    z = np.subtract(x, mean, out=mean)
    z *= inv
    pdf = np.multiply(z, z, out=np.empty_like(z))
    pdf *= -0.5
    np.exp(pdf, out=pdf)
    cdf = weights @ normal_cdf(z, pdf)
    pdf *= inv
    w = weights * INV_SQRT_2PI
    f = w @ pdf
    g = np.multiply(z, inv, out=z)  # minus the log density's slope
    inv *= inv
    inv -= g * g
    inv *= pdf
    pdf *= g
    return cdf, f, -(w @ pdf), -(w @ inv)


def _subset(evaluate: Evaluate, idx: np.ndarray) -> Evaluate:
    return lambda x, i: evaluate(x, idx[i])
