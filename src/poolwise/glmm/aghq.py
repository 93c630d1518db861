"""One scalar grouping factor of a binomial or poisson regression, without MCMC.

The model is the one NUTS samples (:func:`poolwise.glmm.model.make_model`): common effects with
independent normal (or flat) priors, one term ``(1|g)`` with a group sd (a prior, or fixed).
Each level's effect is integrated by adaptive Gauss–Hermite quadrature
(:mod:`poolwise.engines.aghq`), so the likelihood of (beta, sd) is exact to quadrature error;
beta is Gaussian given the sd around its conditional mode on that exact likelihood (it pools
every level's data, so its conditional is close to normal), which also gives the sd's marginal
(Laplace in beta only); the log sd is integrated by the adaptive quadrature of
:mod:`poolwise.engines.exact`.

Tables, from the quadrature (no Monte Carlo noise): given the sd, each level's effect has exact
moments at every beta (over its own nodes; the levels are independent given (beta, sd)), and
beta's Gaussian is integrated by a product Gauss–Hermite rule (:func:`beta_rule`), which gives
every reported effect's exact mean and variance given the sd; each row is then the mixture over
the sd's grid points of normals with those moments: means and sds are its exact moments,
medians and HDIs are found by root-finding on it (:class:`poolwise.mixture.Mixture`; each
component normal, so an interval, not a moment, carries the skew left within one sd point). The
sd's row mixes a narrow normal in log sd per grid cell. Draws, for ranks, plots and
``to_arviz``: a grid point by its weight and the sd within its cell, beta from its Gaussian
there, every level's effect exactly from its conditional.

Zero-sum effects (the default with an intercept): NUTS samples an intercept ``a`` with prior
N(m, s^2) and deviations ``d`` that sum to zero, N(0, sd^2 I) restricted to sum zero. Take
instead independent effects c_j ~ N(0, sd^2) and an intercept mu ~ N(m, s^2 - sd^2 / J). Then
a = mu + mean(c) and d = c - mean(c) are independent, a ~ N(m, s^2), d the zero-sum normal, and
the linear predictor is the same (mu + c_j = a + d_j): the two posteriors are one, reported as
(a, d). This needs sd^2 < J s^2; where the sd's posterior reaches that bound the model is left to
the other engines (:class:`Declined`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..engines import ENGINES, Density
from ..engines.aghq import (
    FAMILIES,
    NODES,
    LevelModel,
    beta_laplace,
    mode_slopes,
    quadrature,
    sample_levels,
)
from ..engines.exact import GridPosterior
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import Deferred, RegressionData
from ..mixture import prune
from ..priors import Flat, Normal
from .laplace import _cell_variance, _mixture_rows, mixture_record
from .model import ModelPlan, prior_scale
from .setup import Prepared

# common effects with which beta's Gaussian (p x p, per sd point) is the model's
MAX_COMMON = 8
# the sd's grid may not come closer than this fraction of sd^2 = J s^2 with mass
BOUND_FRACTION = 0.8
# (the grid's mass there stands for the mass cut off beyond: 1e-4 of it moves a mean by about
# 1e-4 times its distance, a few posterior sds, well inside the quadrature's own tolerance)
BOUND_MASS = 1e-4
# before the grid: the sd's density on a line of log sds up to that bound; where its share
# beyond the bound is clearly over BOUND_MASS (this many times), the model is declined at once
# (the grid, meeting the density's wall at the bound, would refine against it for minutes)
EARLY_MARGIN = 10.0
# the line: this many log units below the bound, at this spacing
LINE_LENGTH, LINE_STEP = 10.0, 0.5
# beta's Gauss–Hermite rule at each sd takes 3 nodes a dimension up to this many common
# effects (27 points), 2 beyond: on the reference models the 3-node rule's moments are within
# 4e-5 sd of a 5-node rule's (see beta_rule)
BETA_DIMS = 3
# (beta, sd) rows x cells x nodes in one batch of the tables' quadrature
CHUNK = 1 << 21


class Declined(ValueError):
    """This engine does not fit the model; the message says why."""


def why_not(plan: ModelPlan) -> str | None:
    """Why adaptive Gauss–Hermite quadrature does not fit ``plan`` (None: it does).

    Example
    -------
    >>> from poolwise.glmm.model import TermPlan
    >>> t = TermPlan("1|g", 4, True, False, False, None, Normal(0, 1))
    >>> plan = ModelPlan("normal", ("Intercept",), (Normal(0, 1),), 0, (t,), None)
    >>> why_not(plan)
    'a normal outcome (Laplace is exact there)'
    """
    if plan.likelihood not in FAMILIES:
        return f"a {plan.likelihood} outcome (Laplace is exact there)"
    if len(plan.terms) != 1:
        return f"{len(plan.terms)} group terms (it integrates one scalar factor)"
    term = plan.terms[0]
    if term.slope:
        return f"a group slope ({term.name})"
    if len(plan.common) > MAX_COMMON:
        return f"{len(plan.common)} common effects (it takes at most {MAX_COMMON})"
    for name, prior in zip(plan.common, plan.common_priors, strict=True):
        if not isinstance(prior, Normal | Flat):
            return f"the prior of {name} is {prior!r} (it takes normal or flat priors)"
    if term.zero_sum and plan.intercept is None:
        return "zero-sum effects without an intercept column"
    return None


def _prior_arrays(plan: ModelPlan) -> tuple[np.ndarray, np.ndarray]:
    means = [p.mu if isinstance(p, Normal) else 0.0 for p in plan.common_priors]
    precisions = [1.0 / p.sigma**2 if isinstance(p, Normal) else 0.0 for p in plan.common_priors]
    return np.array(means, dtype=float), np.array(precisions, dtype=float)


def level_model(prep: Prepared) -> LevelModel:
    """The cells of the model's one factor for the quadrature engine."""
    cells, design = prep.cells, prep.design
    s, term = cells.stats(), design.groups[0]
    if cells.likelihood == "binomial":
        y, n = s["successes"], s["trials"]
    else:
        y, n = s["counts"], None
    return LevelModel.build(
        cells.likelihood, y, n, design.X, design.offset, term.codes, term.n_levels
    )


def fit_aghq(
    prep: Prepared,
    *,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    reason: str | None = None,
    nodes: int | None = None,
) -> RegressionData:
    """Fit the prepared model by adaptive Gauss–Hermite quadrature (``method="laplace"``).
    Raises :class:`Declined` where the model is not this engine's (see :func:`why_not`).

    The tables come from the quadrature itself: every row is a mixture over the sd's grid
    points of normals with the row's exact moments given the sd (beta's Gaussian integrated by
    a Gauss–Hermite rule, each level's effect by its own nodes), so the same data give the same
    tables whatever the seed; the ``draws`` (exact given the grid) serve ranks, plots and
    ``to_arviz``.

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.setup import prepare
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7],
    ...                    "n": [10] * 6})
    >>> fit = fit_aghq(prepare("p(k, n) ~ 1 + x + (1|g)", df), seed=1)
    >>> fit.method, round(float(fit.population.loc["x", "mean"]), 1)
    ('laplace', 1.3)
    """
    check_count("draws", draws)
    check_prob(hdi_prob)
    check_seed(seed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    start = time.perf_counter()
    nodes = nodes or NODES
    post = _posterior(prep, nodes)
    rows, summaries = _tables(prep, post, hdi_prob, nodes)
    samples = _sample(prep, post, draws, np.random.default_rng([seed, 15]))
    what = prep.cells.likelihood
    info = {
        "engine": "aghq",
        "seconds": time.perf_counter() - start,
        "cells": prep.design.n_cells,
        **post.facts,
    }
    default = (
        f"one scalar grouping factor of a {what} regression: each level's effect integrated by "
        f"adaptive Gauss–Hermite, {nodes} nodes; the common effects Gaussian given the group sd "
        "(Laplace on that exact likelihood); the sd by adaptive quadrature"
    )
    for m in post.warnings:
        warnings.warn(m, PoolwiseWarning, stacklevel=3)
    gterm = prep.design.groups[0]
    return mixture_record(
        prep,
        rows,
        summaries,
        {gterm.name: (post.sds, post.weights)},
        samples,
        hdi_prob=hdi_prob,
        seed=seed,
        method="laplace",
        reason=f"{reason}; {default}" if reason else default,
        info=info,
        messages=[*prep.messages, *post.warnings],
    )


@dataclass(frozen=True)
class SdPosterior:
    """The group sd's posterior on its grid (sorted): ``sds`` (S,), ``weights`` (S,), ``spread``
    (S,) each point's variance in log sd (its quadrature cell's; zero for a fixed sd); at each
    point beta's Gaussian, ``mode`` (S, p) and ``hessian`` (S, p, p), and the levels' modes
    there (S, J) with their slopes in beta (S, J, p); the model, the quadrature's nodes, the
    engine's facts and warnings, its grid and the points' coordinates on it, ``v`` (both None
    for a fixed sd)."""

    model: LevelModel
    sds: np.ndarray
    weights: np.ndarray
    spread: np.ndarray
    mode: np.ndarray
    hessian: np.ndarray
    levels: np.ndarray
    slopes: np.ndarray
    nodes: int
    facts: dict
    warnings: list[str]
    grid: GridPosterior | None = None
    v: np.ndarray | None = None

    def level_starts(self, at: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """The levels' modes at the points ``at`` (indices, (B,)) moved to ``beta`` (B, p) along
        their slopes: a start for their Newton (exact to second order in the step)."""
        step = beta - self.mode[at]
        return self.levels[at] + np.einsum("bjp,bp->bj", self.slopes[at], step)


def _posterior(prep: Prepared, nodes: int) -> SdPosterior:
    """The sd's grid and beta's Gaussian at each of its points."""
    plan, design = prep.plan, prep.design
    why = why_not(plan)
    if why is not None:
        raise Declined(f"adaptive Gauss–Hermite quadrature does not fit {why}")
    model = level_model(prep)
    term, gterm = plan.terms[0], design.groups[0]
    mean, precision = _prior_arrays(plan)
    J = term.n_levels
    intercept_var = None
    if term.zero_sum and isinstance(plan.common_priors[plan.intercept], Normal):
        intercept_var = plan.common_priors[plan.intercept].sigma ** 2

    def precisions(sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prec = np.tile(precision, (sd.size, 1))
        ok = np.ones(sd.size, dtype=bool)
        if intercept_var is not None:
            room = intercept_var - sd**2 / J
            ok = room > 0
            prec[:, plan.intercept] = 1.0 / np.where(ok, room, 1.0)
        return prec, ok

    seen: dict[str, np.ndarray] = {}
    # each sd's fit (beta's mode, its Hessian, the levels' modes), for the grid's points
    fits: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def conditional(sd: np.ndarray):
        """beta's Gaussian at each sd, started from the modes found at the nearest sds so far."""
        prec, ok = precisions(sd)
        start = None
        if seen:
            start = _interp(np.log(sd), seen["z"], seen["mode"])
        fit = beta_laplace(model, sd, mean, prec, start=start, k=nodes)
        good = ok & np.isfinite(fit.log_marginal)  # (far points overflow: no start from them)
        if good.any():
            z = np.log(sd[good])
            order = np.argsort(z)
            seen["z"], seen["mode"] = z[order], fit.mode[good][order]
        for i in np.flatnonzero(good):
            fits[float(sd[i])] = (fit.mode[i], fit.hessian[i], fit.quadrature.modes[i])
        return fit.log_marginal, ok

    def record(sds: np.ndarray, **grid) -> SdPosterior:
        """The posterior with the fits at ``sds`` (those not met on the grid computed now)."""
        missing = np.array([float(v) not in fits for v in sds])
        if missing.any():
            conditional(sds[missing])
        mode, hessian, levels = (np.array([fits[float(v)][k] for v in sds]) for k in range(3))
        slopes = mode_slopes(model, mode, levels, sds)
        return SdPosterior(
            model,
            sds,
            mode=mode,
            hessian=hessian,
            levels=levels,
            slopes=slopes,
            nodes=nodes,
            **grid,
        )

    facts: dict = {"nodes": nodes}
    if term.sd is not None:
        sds = np.array([float(term.sd)])
        if not conditional(sds)[1].all():
            raise Declined(
                f"the fixed sd of {term.name} is too large for its zero-sum effects "
                f"(sd^2 >= levels x the intercept's prior variance)"
            )
        one = np.ones(1)
        return record(sds, weights=one, spread=np.zeros(1), facts=facts, warnings=[])
    sd_prior = term.sd_prior

    def log_density(z: np.ndarray) -> np.ndarray:
        sd = np.exp(z[:, 0])
        # the grid's search reaches far sds (e^40), where exp overflows: those points'
        # density is zero
        with np.errstate(over="ignore", invalid="ignore"):
            log_marginal, ok = conditional(sd)
        with np.errstate(divide="ignore"):
            lp = np.asarray(sd_prior.logpdf(sd), dtype=float) + z[:, 0] + log_marginal
        return np.where(ok & np.isfinite(lp), lp, -np.inf)

    name = gterm.sigma_name
    bound_message = (
        f"the posterior of {name} reaches sd^2 = levels x the intercept's prior "
        "variance, beyond which zero-sum effects have no independent form"
    )
    if intercept_var is not None:
        upper = 0.5 * math.log(BOUND_FRACTION * J * intercept_var)
        if _tail_share(log_density, upper) > EARLY_MARGIN * BOUND_MASS:
            raise Declined(bound_message)
    z0 = np.array([math.log(prior_scale(sd_prior))])
    post = ENGINES["exact"](Density(log_density, z0, (name,)))
    if intercept_var is not None:
        near = np.exp(2 * post.points[:, 0]) > BOUND_FRACTION * J * intercept_var
        if post.weights[near].sum() > BOUND_MASS:
            raise Declined(bound_message)
    keep = prune(post.weights)
    keep = keep[np.argsort(post.points[keep, 0])]
    facts |= {"grid_points": int(post.info["grid_points"]), "sd_grid": keep.size}
    return record(
        np.exp(post.points[keep, 0]),
        weights=post.weights[keep] / post.weights[keep].sum(),
        spread=_cell_variance(post)[keep, 0],
        facts=facts,
        warnings=list(post.warnings),
        grid=post,
        v=post.grid[keep, 0],
    )


@cache
def beta_rule(p: int) -> tuple[np.ndarray, np.ndarray]:
    """A product Gauss–Hermite rule for the standard normal in p dimensions: points (B, p) and
    weights (B,); 3 nodes a dimension up to ``BETA_DIMS`` dimensions (exact for polynomials
    of degree 5 in each), 2 beyond (exact for every quadratic).

    Example
    -------
    >>> u, w = beta_rule(2)
    >>> u.shape, round(float(w @ u[:, 0] ** 2), 12)
    ((9, 2), 1.0)
    """
    n = 3 if p <= BETA_DIMS else 2
    t, w = np.polynomial.hermite.hermgauss(n)
    axes = np.meshgrid(*[t * math.sqrt(2.0)] * p, indexing="ij")
    weights = np.prod(np.meshgrid(*[w / math.sqrt(math.pi)] * p, indexing="ij"), axis=0)
    return np.stack([a.reshape(-1) for a in axes], axis=1), weights.reshape(-1)


def _moments(prep: Prepared, post: SdPosterior) -> tuple[np.ndarray, np.ndarray]:
    """Each reported effect's mean and variance given the sd, at every grid point: (S, p + J)
    each, the common effects then the levels (as reported: zero-sum deviations and the
    intercept they move). Given (beta, sd) the levels are independent with moments from their
    nodes; beta's Gaussian is integrated by :func:`beta_rule`."""
    model, plan = post.model, prep.plan
    S, p = post.mode.shape
    u, w = beta_rule(p)
    B, J = len(w), model.n_levels
    chol = _chol_cov(post.hessian)
    mean = np.empty((S, p + J))
    second = np.empty((S, p + J))
    step = max(1, CHUNK // (B * len(model.y) * post.nodes))
    for lo in range(0, S, step):
        sl = slice(lo, min(lo + step, S))
        n = sl.stop - sl.start
        at = np.repeat(np.arange(sl.start, sl.stop), B)
        beta = (post.mode[sl, None, :] + np.einsum("spq,bq->sbp", chol[sl], u)).reshape(-1, p)
        q = quadrature(model, beta, post.sds[at], post.nodes, post.level_starts(at, beta))
        e = (q.weights * q.nodes).sum(axis=2)
        v = (q.weights * (q.nodes - e[..., None]) ** 2).sum(axis=2)
        beta_var = np.zeros_like(beta)
        if plan.terms[0].zero_sum:
            bar, var_bar = e.mean(axis=1), v.sum(axis=1) / J**2
            beta[:, plan.intercept] += bar
            beta_var[:, plan.intercept] = var_bar
            e = e - bar[:, None]
            v = v * (1.0 - 2.0 / J) + var_bar[:, None]
        values = np.concatenate([beta, e], axis=1).reshape(n, B, -1)
        var = np.concatenate([beta_var, v], axis=1).reshape(n, B, -1)
        mean[sl] = np.einsum("b,sbk->sk", w, values)
        second[sl] = np.einsum("b,sbk->sk", w, var + values**2)
    return mean, np.maximum(second - mean**2, 0.0)


def _tables(prep: Prepared, post: SdPosterior, hdi_prob: float, nodes: int):
    """The population rows (name: mean, sd, median, HDI) and the levels' (mean, sd, HDI)."""
    design, gterm = prep.design, prep.design.groups[0]
    p = len(design.names)
    mean, var = _moments(prep, post)
    # (one pass on the whole grid: a first pass on its coarse half costs more on a grid this small)
    w = post.weights
    m, sd, med, lo, hi = _mixture_rows(w, mean[:, :p], var[:, :p], hdi_prob)
    rows = {name: (m[i], sd[i], med[i], lo[i], hi[i]) for i, name in enumerate(design.names)}
    if prep.plan.terms[0].sd is None:
        z = np.log(post.sds)[:, None]
        row = _mixture_rows(w, z, post.spread[:, None], hdi_prob, link="log")
        rows[gterm.sigma_name] = tuple(float(a[0]) for a in row)
    tm, tsd, _, tlo, thi = _mixture_rows(w, mean[:, p:], var[:, p:], hdi_prob, median=False)
    return rows, {gterm.name: (tm, tsd, tlo, thi)}


def _sample(prep: Prepared, post: SdPosterior, draws: int, rng: np.random.Generator) -> Deferred:
    """Draws (1, draws, ...) of the common effects, the group sd (when it has a prior) and the
    level effects (1, draws, J): the sd within its grid's cells, beta from its Gaussian there,
    every level's effect exactly from its conditional. The sd's are drawn now (the fit's notes
    read them), the rest from the same stream when first read."""
    plan, gterm = prep.plan, prep.design.groups[0]
    term = plan.terms[0]
    if term.sd is not None:
        sd_draws = np.full(draws, float(term.sd))
        at = np.zeros(draws, dtype=int)
    else:
        # the draw's grid point, by its weight; its sd spread within the point's cell
        at = rng.choice(post.sds.size, size=draws, p=post.weights)
        grid = post.grid
        v = post.v[at] + (rng.random(draws) - 0.5) * grid.spacing[0]
        sd_draws = np.exp(grid.mode[0] + np.sinh(v) * grid.chol[0, 0])
    ready = {} if term.sd is not None else {gterm.sigma_name: sd_draws[None]}

    def make() -> dict[str, np.ndarray]:
        modes, chols = post.mode[at], _chol_cov(post.hessian)[at]
        beta = modes + np.einsum("spq,sq->sp", chols, rng.standard_normal(modes.shape))
        effects = sample_levels(post.model, beta, sd_draws, rng, start=post.level_starts(at, beta))
        if term.zero_sum:
            shift = effects.mean(axis=1)
            beta[:, plan.intercept] += shift
            effects -= shift[:, None]
        out = {name: beta[None, :, i] for i, name in enumerate(plan.common)}
        return out | ready | {gterm.name: effects[None]}

    return Deferred([*plan.common, *ready, gterm.name], make, ready)


def _chol_cov(hessian: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of the inverses of a batch of precision matrices."""
    return np.linalg.cholesky(np.linalg.inv(hessian))


def _interp(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (G, ...) given at the sorted ``grid``, linearly interpolated at ``x``."""
    flat = values.reshape(len(grid), -1)
    out = np.column_stack([np.interp(x, grid, flat[:, i]) for i in range(flat.shape[1])])
    return out.reshape((len(x),) + values.shape[1:])


def _tail_share(log_density, upper: float) -> float:
    """The share of the sd's posterior beyond log sd ``upper``, roughly: the density on a line
    of log sds below ``upper`` (trapezoids), its tail beyond continued along the last step's
    slope (an overestimate where the log density bends down, as every prior's does). 1 where
    the density still rises at ``upper``; 0 where the line has no finite density."""
    z = upper - np.arange(LINE_LENGTH / LINE_STEP, -1, -1) * LINE_STEP
    with np.errstate(over="ignore", invalid="ignore"):
        lp = log_density(z[:, None])
    if not np.isfinite(lp).any():
        return 0.0
    top = lp[np.isfinite(lp)].max()
    dens = np.where(np.isfinite(lp), np.exp(lp - top), 0.0)
    slope = (lp[-1] - lp[-2]) / LINE_STEP
    if not np.isfinite(slope) or slope >= 0:
        return 1.0
    tail = dens[-1] / -slope
    inside = LINE_STEP * (dens.sum() - 0.5 * (dens[0] + dens[-1]))
    return float(tail / (inside + tail))
