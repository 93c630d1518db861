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
sd's row smooths each grid point over its cell in log sd by the fourth-order kernel, as the
Laplace engine's grid does (a normal per cell would leave ripples in the density, and the HDI's
ends at their crossings); where the sd's density at the grid's lowest point is at least its
density at the HDI's probability quantile, the interval runs from zero to that quantile. Draws, for ranks, plots and
``to_arviz``: a grid point by its weight and the sd within its cell, beta from its Gaussian
there, every level's effect exactly from its conditional.

Many levels (``MANY_LEVELS``, a group sd with a prior): (beta, log sd) pools every level, and
its posterior is normal to within terms that fall as 1 / sqrt(levels). It is taken as one
normal at its mode on the same exact likelihood (:func:`_joint`: Newton's method with the
derivatives from the levels' nodes, :func:`poolwise.engines.aghq.joint_terms`), where its
skewness check passes; each level's conditional moments at the mode, moved through their slopes
in (beta, log sd) by the normal's covariance, give its row (a normal). The grid's hundred passes
over the cells are so one or two with every node. The levels' draws are made when first read
(:class:`poolwise.fitdata.LazyDraws`), by chunks of levels with their own random streams, as
the one-factor fits draw theirs; the zero-sum levels' mean given (beta, sd), which the intercept
takes, is drawn from its normal.

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
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from ..engines import ENGINES, Density
from ..engines.aghq import (
    BETA_TOL,
    FAMILIES,
    NODES,
    JointTerms,
    LevelModel,
    beta_laplace,
    joint_terms,
    mode_slopes,
    pooled_mode,
    quadrature,
    sample_levels,
)
from ..engines.exact import GridPosterior
from ..engines.optimize import hessian
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import LazyDraws, RegressionData, chunked
from ..mixture import prune
from ..priors import Flat, Normal
from .laplace import _cell_variance, _hyper_rows, _mixture_rows, mixture_record
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
# beta's Newton on the line stops at this decrement: its log densities within about half of
# it (6e-4 on the bench's model), ample for a share held against EARLY_MARGIN x BOUND_MASS and
# for a start of the mode's search (its fits serve only as the next points' starts)
LINE_TOL = 1e-3
# beta's Gauss–Hermite rule at each sd takes 3 nodes a dimension up to this many common
# effects (27 points), 2 beyond: on the reference models the 3-node rule's moments are within
# 4e-5 sd of a 5-node rule's (see beta_rule)
BETA_DIMS = 3
# draws x cells in one batch of the levels' draws
CHUNK = 1 << 21
# (beta, sd) rows x cells x nodes in one batch of the tables' quadrature (one sd point at
# least): its arrays stay in cache, a quarter of a megabyte each (the bench's model 1.9 ms, 2.4
# in batches of 1 << 21; 300 levels of 3 cells half the time)
TABLE_CHUNK = 1 << 15
# from this many levels (and a group sd with a prior) beta and log sd are taken as jointly
# normal (each level still integrated by its nodes): their posterior pools every level, its
# skewness falls as 1 / sqrt(levels) (checked: SKEW_SHIFT), and the sd's grid, with beta's
# Newton and its Gauss–Hermite rule at every point, would cost 100 passes over the cells
MANY_LEVELS = 5_000
# the normal is kept where the third derivative in log sd at the mode moves its mean by at most
# this many posterior sds (that term, T3 sd^4 / 2); else the grid. Every third cumulant of
# (beta, log sd) falls as 1 / sqrt(levels); those through beta add about five times this one
# on the bench's model (the grid's sd mean 0.035 posterior sds away at 1,000 levels, 0.012 at
# 10,000, where this term is 0.006 and 0.0024): this bound keeps them near 0.03 sds
SKEW_SHIFT = 0.005
# the joint mode's Newton: with LADDER_NODES nodes on this many levels (a start, a few
# posterior sds from the mode), then one step on all of them, then with every node, its last
# step kept without a further pass where its decrement is below FINAL_DECREMENT (a step within
# about a posterior sd: the quadratic model's error there is the skewness's, SKEW_SHIFT at most)
START_LEVELS = 16384
LADDER_NODES = 3
LADDER_TOL = 1e-2
FINAL_DECREMENT = 1.0
JOINT_STEPS = 40
# the prior's derivatives by central differences with this step
PRIOR_STEP = 1e-4
# no joint Newton step moves a coordinate further than this; steps whose decrement is below
# SAFE_STEP are taken whole (near the mode a fall can be the quadrature's rounding)
MAX_STEP_Z = 2.0
SAFE_STEP = 1e-4


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


def _intercept_var(plan: ModelPlan) -> float | None:
    """The intercept's prior variance where zero-sum effects move it (None elsewhere)."""
    if plan.terms[0].zero_sum and isinstance(plan.common_priors[plan.intercept], Normal):
        return plan.common_priors[plan.intercept].sigma ** 2
    return None


def _precisions(plan: ModelPlan, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """beta's prior precisions at each sd (S, p), and where they exist (S,): zero-sum effects
    leave the independent intercept the variance s^2 - sd^2 / J (see the module's notes)."""
    _, precision = _prior_arrays(plan)
    prec = np.tile(precision, (sd.size, 1))
    ok = np.ones(sd.size, dtype=bool)
    intercept_var = _intercept_var(plan)
    if intercept_var is not None:
        room = intercept_var - sd**2 / plan.terms[0].n_levels
        ok = room > 0
        prec[:, plan.intercept] = 1.0 / np.where(ok, room, 1.0)
    return prec, ok


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
    gaussian: bool | None = None,
) -> RegressionData:
    """Fit the prepared model by adaptive Gauss–Hermite quadrature (``method="laplace"``).
    Raises :class:`Declined` where the model is not this engine's (see :func:`why_not`).

    With many levels (``MANY_LEVELS``; ``gaussian`` True or False asks for it or not) and a
    group sd with a prior, beta and the log sd are taken as jointly normal at their mode on the
    exact likelihood (:func:`_joint`) where its skewness check passes: every row is then a
    normal with the row's moments (each level's over its nodes, moved by the normal's spread
    through its slopes), and the levels' draws are made when they are first read.

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
    joint = None
    if _many_levels(prep) if gaussian is None else gaussian:
        joint = _joint(prep, nodes)
    if joint is not None:
        post = joint
        rows, summaries = _joint_tables(prep, joint, hdi_prob)
        samples = _joint_sample(prep, joint, draws, seed)
    else:
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
        f"adaptive Gauss–Hermite, {nodes} nodes; "
        + (
            "the common effects and the log group sd jointly Gaussian (Laplace on that exact "
            f"likelihood; {prep.plan.terms[0].n_levels} levels, skewness checked)"
            if joint is not None
            else "the common effects Gaussian given the group sd (Laplace on that exact "
            "likelihood); the sd by adaptive quadrature"
        )
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


def _many_levels(prep: Prepared) -> bool:
    """Whether the model has the levels (and a group sd with a prior) of :func:`_joint`."""
    term = prep.plan.terms[0]
    return term.sd is None and term.n_levels >= MANY_LEVELS


@dataclass(frozen=True)
class JointPosterior:
    """beta and the log group sd jointly normal: ``mode`` (p + 1,) and ``cov``; the levels there
    (``terms``: their means, variances and slopes in (beta, log sd)), and as
    :class:`SdPosterior` has them, the sd's one point ``sds`` with ``weights``, the engine's
    ``facts`` and ``warnings``."""

    model: LevelModel
    mode: np.ndarray
    cov: np.ndarray
    terms: JointTerms
    sds: np.ndarray
    weights: np.ndarray
    facts: dict
    warnings: list[str]


def _prior_density(prep: Prepared):
    """The log prior density of rows (beta, log sd) (the sd's Jacobian included; -inf where
    zero-sum effects' intercept has no room), as the grid's :func:`_posterior` has it."""
    plan = prep.plan
    term = plan.terms[0]
    mean, precision = _prior_arrays(plan)
    proper = precision > 0
    p = len(plan.common)

    def log_prior(theta: np.ndarray) -> np.ndarray:
        beta, z = theta[:, :p], theta[:, p]
        prec, ok = _precisions(plan, np.exp(z))
        lp = -0.5 * (prec * (beta - mean) ** 2).sum(axis=1)
        lp += 0.5 * np.log(np.where(proper, prec / (2 * np.pi), 1.0)).sum(axis=1)
        with np.errstate(divide="ignore"):
            lp += np.asarray(term.sd_prior.logpdf(np.exp(z)), dtype=float) + z
        return np.where(ok, lp, -np.inf)

    return log_prior


def _prior_terms(log_prior, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The log prior at ``theta``, its gradient and Hessian (central differences)."""
    d, h = theta.size, PRIOR_STEP
    eye = np.eye(d) * h
    values = log_prior(np.vstack([theta, theta + eye, theta - eye]))
    grad = (values[1 : d + 1] - values[d + 1 :]) / (2 * h)
    return float(values[0]), grad, hessian(log_prior, theta, h)


def _newton_joint(model, log_prior, theta, k, tol, steps, levels=None):
    """Newton's method on sum_j log m_j + log prior in theta = (beta, log sd), ``k`` nodes,
    from ``theta``, until the decrement is below ``tol`` or after ``steps`` steps (a step that
    lowers the density is halved). Returns theta, the levels' terms there, the step still to
    take and its decrement; None where the density is not concave along the way."""
    p = theta.size - 1

    def at(theta, levels):
        t = joint_terms(model, theta[:p], math.exp(theta[p]), k, levels)
        lp, g, H = _prior_terms(log_prior, theta)
        return t, t.log_m + lp, t.grad + g, t.hess + H

    t, value, grad, hess = at(theta, levels)
    for i in range(steps + 1):
        try:
            np.linalg.cholesky(-hess)
        except np.linalg.LinAlgError:
            return None
        step = np.linalg.solve(-hess, grad)
        step *= min(1.0, MAX_STEP_Z / max(np.abs(step).max(), 1e-300))
        decrement = float(grad @ step)
        if not np.isfinite(decrement):
            return None
        if decrement < tol or i == steps:
            return theta, t, step, decrement
        for _halving in range(20):
            new = theta + step
            t1, v1, g1, h1 = at(new, t.mean + t.slopes @ step)
            if v1 >= value or decrement < SAFE_STEP:
                break
            step, decrement = step / 2, decrement / 2
        theta, t, value, grad, hess = new, t1, v1, g1, h1
    return None


def _joint(prep: Prepared, nodes: int) -> JointPosterior | None:
    """beta and the log sd as jointly normal at their mode on the exact likelihood; None where
    the check of their skewness fails (or the density is not concave on the way): the grid
    then (:func:`_posterior`)."""
    plan = prep.plan
    why = why_not(plan)
    if why is not None:
        raise Declined(f"adaptive Gauss–Hermite quadrature does not fit {why}")
    model, log_prior = level_model(prep), _prior_density(prep)
    mean, _ = _prior_arrays(plan)
    theta = np.r_[mean, math.log(prior_scale(plan.terms[0].sd_prior))]
    J = model.n_levels
    # a start from the first levels alone, a step on all of them with few nodes, then every node
    stages = [(model.subset(0, min(J, START_LEVELS)), JOINT_STEPS), (model, 0)]
    levels = None
    for sub, steps in stages:
        found = _newton_joint(sub, log_prior, theta, LADDER_NODES, LADDER_TOL, steps, levels)
        if found is None:
            return None
        theta, t, step, _ = found
        theta = theta + step
        levels = t.mean + t.slopes @ step if sub is model else None
    found = _newton_joint(model, log_prior, theta, nodes, FINAL_DECREMENT, JOINT_STEPS, levels)
    if found is None:
        return None
    theta, t, step, _ = found
    _, _, hess_prior = _prior_terms(log_prior, theta + step)
    cov = np.linalg.inv(-(t.hess + hess_prior))
    var_z = cov[-1, -1]
    if abs(t.third) * var_z**2 / 2 / math.sqrt(var_z) > SKEW_SHIFT:
        return None
    # the levels moved to the mode along their slopes (exact to second order in the step)
    moved = replace(t, mean=t.mean + t.slopes @ step)
    mode = theta + step
    return JointPosterior(
        model,
        mode,
        cov,
        moved,
        sds=np.exp(mode[-1:]),
        weights=np.ones(1),
        facts={"nodes": nodes, "joint_normal": True, "sd_grid": 1},
        warnings=[],
    )


def _joint_tables(prep: Prepared, post: JointPosterior, hdi_prob: float):
    """:func:`_tables` of the joint normal: each row a normal with the row's mean and variance
    (a level's: its moments at the mode, its mean moved by the normal's spread through its
    slopes; zero-sum deviations and the intercept as reported)."""
    design, gterm, plan = prep.design, prep.design.groups[0], prep.plan
    p, t, cov = len(design.names), post.terms, post.cov
    J = t.mean.size
    e, v, g = t.mean, t.var, t.slopes
    beta_mean, beta_var = post.mode[:p].copy(), np.diag(cov)[:p].copy()
    if plan.terms[0].zero_sum:
        i = plan.intercept
        bar, gbar = e.mean(), g.mean(axis=0)
        var_bar = v.sum() / J**2
        a = gbar.copy()
        a[i] += 1.0
        beta_mean[i] += bar
        beta_var[i] = a @ cov @ a + var_bar
        e, g = e - bar, g - gbar
        v = v * (1.0 - 2.0 / J) + var_bar
    v = v + np.einsum("jq,qr,jr->j", g, cov, g)
    one = np.ones(1)
    m, sd, med, lo, hi = _mixture_rows(one, beta_mean[None], beta_var[None], hdi_prob)
    rows = {name: (m[i], sd[i], med[i], lo[i], hi[i]) for i, name in enumerate(design.names)}
    z, var_z = post.mode[-1], cov[-1, -1]
    _, _, med, lo, hi = (
        float(a[0])
        for a in _mixture_rows(one, np.array([[z]]), np.array([[var_z]]), hdi_prob, link="log")
    )
    # the lognormal's own mean and sd
    rows[gterm.sigma_name] = (
        math.exp(z + var_z / 2),
        math.exp(z + var_z / 2) * math.sqrt(math.expm1(var_z)),
        med,
        lo,
        hi,
    )
    tm, tsd, _, tlo, thi = _mixture_rows(one, e[None], v[None], hdi_prob, median=False)
    return rows, {gterm.name: (tm, tsd, tlo, thi)}


def _joint_sample(prep: Prepared, post: JointPosterior, draws: int, seed: int) -> LazyDraws:
    """Draws of (beta, log sd) from their normal, shaped (1, draws, ...), and of the levels'
    effects exactly from their conditionals, made when first read: in chunks of levels, each
    with its own random stream (:func:`poolwise.fitdata.chunked`). Zero-sum effects: the
    levels' mean given (beta, sd), which moves the intercept and is taken from the deviations,
    is drawn from its normal (the mean of ``MANY_LEVELS`` or more independent effects)."""
    plan, gterm = prep.plan, prep.design.groups[0]
    p, t, model = len(plan.common), post.terms, post.model
    rng = np.random.default_rng([seed, 15])
    theta = post.mode + rng.standard_normal((draws, p + 1)) @ np.linalg.cholesky(post.cov).T
    beta, sd = theta[:, :p].copy(), np.exp(theta[:, p])
    shift = np.zeros(draws)
    if plan.terms[0].zero_sum:
        J = model.n_levels
        mean = t.mean.mean() + (theta - post.mode) @ t.slopes.mean(axis=0)
        shift = mean + math.sqrt(t.var.sum()) / J * rng.standard_normal(draws)
        beta[:, plan.intercept] += shift
    mu = theta[:, :p]

    def chunk(levels: slice, chunk_rng: np.random.Generator) -> np.ndarray:
        sub = model.subset(levels.start, levels.stop)
        start = t.mean[levels] + (theta - post.mode) @ t.slopes[levels].T
        return _sample_batched(sub, mu, sd, chunk_rng, start) - shift[:, None]

    eager = {name: beta[None, :, i] for i, name in enumerate(plan.common)}
    eager[gterm.sigma_name] = sd[None]
    return LazyDraws(eager, {gterm.name: lambda: chunked(seed, model.n_levels, chunk)[None]})


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
    mean, _ = _prior_arrays(plan)
    J = term.n_levels
    intercept_var = _intercept_var(plan)

    seen: dict[str, np.ndarray] = {}
    pooled = pooled_mode(model, mean, _prior_arrays(plan)[1])
    # each sd's fit (beta's mode, its Hessian, the levels' modes), for the grid's points
    fits: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def conditional(sd: np.ndarray, tol: float = BETA_TOL):
        """beta's Gaussian at each sd, started from the modes (beta's and the levels') found at
        the nearest sds so far (at first, from beta's pooled mode); its Newton stopped at
        decrement ``tol`` (a rough one: the fits serve only as starts)."""
        prec, ok = _precisions(plan, sd)
        start, levels = np.tile(pooled, (sd.size, 1)), None
        if seen:
            start = _interp(np.log(sd), seen["z"], seen["mode"])
            levels = _interp(np.log(sd), seen["z"], seen["levels"])
        fit = beta_laplace(model, sd, mean, prec, start=start, k=nodes, levels=levels, tol=tol)
        good = ok & np.isfinite(fit.log_marginal)  # (far points overflow: no start from them)
        if good.any():
            z = np.log(sd[good])
            order = np.argsort(z)
            seen["z"], seen["mode"] = z[order], fit.mode[good][order]
            seen["levels"] = fit.levels[good][order]
        for i in np.flatnonzero(good if tol == BETA_TOL else []):
            fits[float(sd[i])] = (fit.mode[i], fit.hessian[i], fit.levels[i])
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

    def log_density(z: np.ndarray, tol: float = BETA_TOL) -> np.ndarray:
        sd = np.exp(z[:, 0])
        # the grid's search reaches far sds (e^40), where exp overflows: those points'
        # density is zero
        with np.errstate(over="ignore", invalid="ignore"):
            log_marginal, ok = conditional(sd, tol)
        with np.errstate(divide="ignore"):
            lp = np.asarray(sd_prior.logpdf(sd), dtype=float) + z[:, 0] + log_marginal
        return np.where(ok & np.isfinite(lp), lp, -np.inf)

    name = gterm.sigma_name
    bound_message = (
        f"the posterior of {name} reaches sd^2 = levels x the intercept's prior "
        "variance, beyond which zero-sum effects have no independent form"
    )
    z0 = np.array([math.log(prior_scale(sd_prior))])
    if intercept_var is not None:
        upper = 0.5 * math.log(BOUND_FRACTION * J * intercept_var)
        share, top = _tail_share(lambda z: log_density(z, LINE_TOL), upper)
        if share > EARLY_MARGIN * BOUND_MASS:
            raise Declined(bound_message)
        if top is not None:  # the mode's search starts at the line's highest point
            z0 = np.array([top])
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
    step = max(1, TABLE_CHUNK // (B * len(model.y) * post.nodes))
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
        row = _hyper_rows(
            w,
            np.log(post.sds)[:, None],
            post.spread[:, None],
            hdi_prob,
            "kernel",
            floor=_floor(post),
        )
        rows[gterm.sigma_name] = tuple(float(a[0]) for a in row)
    tm, tsd, _, tlo, thi = _mixture_rows(w, mean[:, p:], var[:, p:], hdi_prob, median=False)
    return rows, {gterm.name: (tm, tsd, tlo, thi)}


def _floor(post: SdPosterior) -> np.ndarray:
    """The sd's density at its grid's lowest point (its cell's weight over the cell's width in
    sd): the density near zero where the posterior reaches it (a prior with a density at zero
    and a likelihood with a limit there leave the sd's density flat down to zero), below which
    the grid leaves out a negligible mass; (1,) for :meth:`poolwise.mixture.Mixture.hdi`."""
    width = math.sqrt(12.0 * post.spread[0]) * post.sds[0]
    return np.array([post.weights[0] / width])


def _sample(prep: Prepared, post: SdPosterior, draws: int, rng: np.random.Generator) -> LazyDraws:
    """Draws (1, draws, ...) of the common effects, the group sd (when it has a prior) and the
    level effects (1, draws, J): the sd within its grid's cells, beta from its Gaussian there,
    every level's effect exactly from its conditional. The sd's are drawn now (the fit's notes
    read them), the rest together from the same stream when one of them is first read (the
    tables need none)."""
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

    def made() -> dict[str, np.ndarray]:
        modes, chols = post.mode[at], _chol_cov(post.hessian)[at]
        beta = modes + np.einsum("spq,sq->sp", chols, rng.standard_normal(modes.shape))
        effects = _sample_batched(post.model, beta, sd_draws, rng, post.level_starts(at, beta))
        if term.zero_sum:
            shift = effects.mean(axis=1)
            beta[:, plan.intercept] += shift
            effects -= shift[:, None]
        out = {name: beta[None, :, i] for i, name in enumerate(plan.common)}
        return out | {gterm.name: effects[None]}

    eager = {} if term.sd is not None else {gterm.sigma_name: sd_draws[None]}
    return LazyDraws.together(eager, made, [*plan.common, gterm.name])


def _sample_batched(
    model: LevelModel, beta: np.ndarray, sd: np.ndarray, rng: np.random.Generator, start
) -> np.ndarray:
    """:func:`~poolwise.engines.aghq.sample_levels` in batches of draws of at most ``CHUNK``
    draws x cells (the envelope's arrays are three times that), one after another on ``rng``."""
    out = np.empty_like(start)
    step = max(1, CHUNK // len(model.y))
    for lo in range(0, len(sd), step):
        rows = slice(lo, lo + step)
        out[rows] = sample_levels(model, beta[rows], sd[rows], rng, start=start[rows])
    return out


def _chol_cov(hessian: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of the inverses of a batch of precision matrices."""
    return np.linalg.cholesky(np.linalg.inv(hessian))


def _interp(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (G, ...) given at the sorted ``grid``, linearly interpolated at ``x`` (the end
    values beyond the ends, as ``np.interp`` has them), every column at once.

    Example
    -------
    >>> _interp(np.array([-1.0, 0.25, 5.0]), np.array([0.0, 1.0]), np.array([[0.0, 2.0], [4.0, 6.0]]))
    array([[0., 2.],
           [1., 3.],
           [4., 6.]])
    """
    flat = values.reshape(len(grid), -1)
    if len(grid) == 1:
        out = np.repeat(flat, len(x), axis=0)
    else:
        j = np.clip(np.searchsorted(grid, x, side="right"), 1, len(grid) - 1)
        lo, width = grid[j - 1], grid[j] - grid[j - 1]
        t = np.clip(np.divide(x - lo, width, out=np.zeros_like(x), where=width > 0), 0.0, 1.0)
        out = flat[j - 1] + t[:, None] * (flat[j] - flat[j - 1])
    return out.reshape((len(x),) + values.shape[1:])


def _tail_share(log_density, upper: float) -> tuple[float, float | None]:
    """The share of the sd's posterior beyond log sd ``upper``, roughly: the density on a line
    of log sds below ``upper`` (trapezoids), its tail beyond continued along the last step's
    slope (an overestimate where the log density bends down, as every prior's does). 1 where
    the density still rises at ``upper``; 0 where the line has no finite density. And the
    line's highest point, moved to the top of the parabola through it and its neighbours
    (None where it is an end of the line): a start near the mode."""
    z = upper - np.arange(LINE_LENGTH / LINE_STEP, -1, -1) * LINE_STEP
    with np.errstate(over="ignore", invalid="ignore"):
        lp = log_density(z[:, None])
    if not np.isfinite(lp).any():
        return 0.0, None
    finite = np.where(np.isfinite(lp), lp, -np.inf)
    i = int(np.argmax(finite))
    top = None
    if 0 < i < len(z) - 1 and np.isfinite(finite[i - 1] + finite[i + 1]):
        bend = finite[i + 1] - 2 * finite[i] + finite[i - 1]
        if bend < 0:
            top = float(z[i] - 0.5 * LINE_STEP * (finite[i + 1] - finite[i - 1]) / bend)
    dens = np.exp(finite - finite[i])
    slope = (lp[-1] - lp[-2]) / LINE_STEP
    if not np.isfinite(slope) or slope >= 0:
        return 1.0, top
    tail = dens[-1] / -slope
    inside = LINE_STEP * (dens.sum() - 0.5 * (dens[0] + dens[-1]))
    return float(tail / (inside + tail)), top
