"""The deterministic route of a formula fit: ``method="laplace"`` and ``method="eb"``.

The prepared model becomes a latent Gaussian model (:mod:`poolwise.engines.latent`): theta = the
free group sds' logs in the order of the terms, each correlated block's correlation coordinates
(numpyro's ``CorrCholeskyTransform``, ``atanh(r)`` for two coefficients, with the LKJ prior's
density and the transform's Jacobian) and a normal outcome's log sigma. ``laplace``
integrates theta's Laplace marginal by the exact engine's adaptive quadrature (up to 3
dimensions), beyond by a pruned grid explored from the mode (with correlated blocks) or a central
composite design; ``eb`` maximises it (the hyperparameters'
priors left out: a marginal-likelihood estimate, REML-like for a normal outcome, as the common
effects are integrated out). Every effect's posterior is then a mixture over the theta points of
its Gaussian conditionals: means and sds are the mixtures' exact moments, medians and HDIs are
found by root-finding on the mixtures (no Monte Carlo noise in the tables); the draws for the
verbs (ranks, plots, ``to_arviz``, ``predict``, ``check``) pick a theta point by its weight and
draw the effects from its Gaussian. The sds' rows mix narrow normals on the log scale, one per
point, as wide as the point's quadrature cell (a quarter of the posterior's variance for a
central composite design; the asymptotic normal for ``eb``); on a pruned grid, their intervals
are taken back in by the share of the variance that this smoothing adds.

:func:`refusal` says why a model is not for this engine (``method="auto"`` then samples by NUTS).
Binomial and Poisson effects are Gaussians given theta shifted by the simplified-Laplace mean
correction (:mod:`poolwise.engines.skewness`), so the mixtures' moments and intervals, and the
draws, carry the conditionals' skewness to first order; :func:`laplace_check` is the engine's
accuracy check (``method="auto"`` goes to NUTS where it flags). Its importance sampling (fixed
draws, so the tables stay the same on every seed) also estimates the error of theta's Laplace
marginal along each axis of its curvature; ``laplace`` tilts the theta points' weights by that
error's linear part.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from ..engines.blocks import Structure, Term
from ..engines.correlation import corr_cholesky, correlations, lkj_log_density
from ..engines.latent import BATCH_FLOATS, CorrBlock, LatentModel
from ..engines.skewness import (
    affordable,
    importance_check,
    mean_shift,
    separated,
    shifted,
)
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import LazyDraws, RegressionData, pick
from ..intervals import hdi_names, hdi_normal
from ..mixture import POLISH, TOL, Mixture, from_link, prune, to_link
from ..priors import Flat, Normal
from .checks import boundary_notes
from .model import prior_scale
from .setup import Prepared, groups_table

# at most this many hyperparameters are integrated on a grid; more by a central composite design
GRID_MAX = 3
# the grid is refined until its coarse half's moments agree to this share of the sd: every
# point is a Newton solve, and the effects' tables are mixtures whose moments the accepted grid
# gives far more closely (halving the spacing about squares the trapezoid rule's error; the
# effects' tables of the crossed binomial model on 15^2 points within 1e-4 sd of 29^2 points)
GRID_MOMENT_TOL = 0.03
# the first grid's points a dimension beyond one (the exact engine's default in one)
GRID_START = 13
# the sds' rows are mixtures over up to this many points of a finer grid, their densities
# interpolated (each point smoothed over its cell: the intervals' error is O(spacing^4)): four
# times finer in 1 and 2 dimensions, two or three times in 3 (a Poisson model's three sds
# within 0.001 sd of a 33^3 grid, from 19^3 points; the crossed binomial model's two within
# 3e-4 sd of 53^2 points)
FINE_POINTS = 60_000
# with correlated blocks: on a pruned grid up to this many, beyond on a central composite design
PRUNED_MAX = 5
# the share of the mass, in the lightest theta points, that the intervals leave out
INTERVAL_SHARE = 1e-8

# the check of the Laplace engine (LAPLACE.md section 7): importance draws at each theta point
CHECK_DRAWS = 400
# the importance draws' seed: fixed, so the tables are the same on every seed
CHECK_SEED = 0
# it flags where the importance weights' Pareto k-hat at theta's mode passes this (the Gaussian
# misses the conditional's tails: Vehtari et al.'s limit for a usable importance sampler)
KHAT_MAX = 0.7
# ... or where an effect's simplified-Laplace shift passes this many of its sds: the shift is
# the first term of an expansion, the next ones are then no longer small (measured: shifts of up
# to 0.7 sd corrected to within 0.04 sd of long NUTS runs; beyond, untried)
SHIFT_MAX = 0.75
# ... or where the Laplace marginal's error, estimated by importance sampling at theta's mode
# plus and minus one sd along each axis of its curvature, moves theta's posterior mean by more
# than this many of its sds: the tables take that error in, linearised (the theta points'
# weights tilted), which left up to 0.12 sd where it was 0.3 (measured against long NUTS runs)
THETA_SHIFT_MAX = 0.2
# ... or where more than this share of a term's levels are separated (all 0, all 1, no count)
SEPARATED_MAX = 0.5


def _marginal_error(model: LatentModel, theta: np.ndarray, seed: int) -> float:
    """log p(y | theta) less its Laplace approximation, by importance sampling (NaN where the
    effects' curvature cannot be factored)."""
    with np.errstate(all="ignore"):
        try:
            return importance_check(model, model.conditional(theta), theta, CHECK_DRAWS, seed)[1]
        except np.linalg.LinAlgError:
            return np.nan


def laplace_check(
    model: LatentModel,
    prep: Prepared,
    mode: np.ndarray,
    chol: np.ndarray,
    names: list[str],
    seed: int,
) -> dict:
    """The accuracy check of the Laplace engine (LAPLACE.md section 7) at theta's ``mode`` (its
    curvature's inverse ``chol @ chol.T``; ``names``: theta's): the largest simplified-Laplace
    shift in effect sds, separated levels per term, the importance weights' Pareto k-hat, the
    shift of each variance parameter that the Laplace marginal's error implies (in its sds), and
    ``flags``, what passed its limit (empty where none did).

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.setup import prepare
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "y": [3, 5, 4, 6, 2, 7]})
    >>> prep = prepare("y ~ 1 + x + (1|g)", df, family="poisson")
    >>> model, names, z0 = latent_model(prep)
    >>> laplace_check(model, prep, z0, np.eye(1), names, seed=1)["flags"]
    []
    """
    theta = np.asarray(mode, dtype=float)[None]
    cond = model.conditional(theta)
    sd = np.sqrt(cond.variances()[0])
    effects = list(prep.design.names) + [
        f"{t.name}[{lb}]" for t in prep.design.groups for lb in t.levels
    ]
    out: dict = {}
    flags = []
    if affordable(model, 1):
        ratio = np.abs(mean_shift(model, cond)[0]) / np.where(sd > 0, sd, np.inf)
        at = int(np.argmax(ratio))
        out.update(max_shift_sd=float(ratio[at]), max_shift_at=effects[at])
        if ratio[at] > SHIFT_MAX:
            flags.append(
                f"the simplified-Laplace shift of {effects[at]} is {ratio[at]:.2f} of its sd "
                f"(limit {SHIFT_MAX})"
            )
    counts = separated(model)
    out["separated"] = {t.name: c for t, c in zip(prep.design.groups, counts, strict=True)}
    for t, c in zip(prep.design.groups, counts, strict=True):
        if c > SEPARATED_MAX * t.n_levels:
            flags.append(
                f"{c} of {t.n_levels} levels of {t.name} are separated (all 0, all 1 or no "
                f"count; limit {SEPARATED_MAX:.0%})"
            )
    khat, _ = importance_check(model, cond, theta, CHECK_DRAWS, seed)
    out["khat"] = khat
    if khat > KHAT_MAX:
        flags.append(
            f"the importance weights of the Gaussian conditional have Pareto k-hat {khat:.2f} "
            f"(limit {KHAT_MAX})"
        )
    if len(names):
        # the error e of the log marginal, linear in z = chol^-1 (theta - mode) with slope g,
        # moves z's posterior mean by g, theta's by chol g
        g = np.zeros(len(names))
        for i in range(len(names)):
            ends = theta + np.array([[1.0], [-1.0]]) * chol[:, i]
            e = [_marginal_error(model, t[None], seed) for t in ends]
            g[i] = (e[0] - e[1]) / 2 if np.all(np.isfinite(e)) else 0.0
        moved = (chol @ g) / np.sqrt(np.diag(chol @ chol.T))
        out["theta_slope"] = g.tolist()
        out["theta_shift_sd"] = dict(zip(names, moved.tolist(), strict=True))
        at = int(np.argmax(np.abs(moved)))
        if abs(moved[at]) > THETA_SHIFT_MAX:
            flags.append(
                f"the Laplace marginal's error moves {names[at]} by {moved[at]:+.2f} of its sd "
                f"(limit {THETA_SHIFT_MAX})"
            )
    out["flags"] = flags
    return out


def refusal(prep: Prepared) -> str | None:
    """Why the Laplace engine does not fit ``prep``'s model, or None where it does.

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.setup import prepare
    >>> df = pd.DataFrame({"g": list("aabb"), "y": [1.0, 1.2, 2.0, 2.2]})
    >>> refusal(prepare("y ~ 1 + (1|g)", df)) is None
    True
    """
    plan = prep.plan
    for name, prior in zip(plan.common, plan.common_priors, strict=True):
        if not isinstance(prior, Normal | Flat):
            return (
                f"the prior of {name} is {prior!r}; the Laplace engine takes Normal or Flat "
                "priors on common effects"
            )
    for block in plan.blocks:
        if len(set(block.zero_sum)) > 1:
            return (
                f"{block.name}: some of its coefficients sum to zero and some do not (the common "
                "part holds only some of them); the Laplace engine takes blocks whose "
                "coefficients all sum to zero, or none"
            )
    return None


def latent_model(
    prep: Prepared, with_prior: bool = True
) -> tuple[LatentModel, list[str], np.ndarray]:
    """The prepared model as a latent Gaussian model, theta's names and a starting point.

    ``with_prior``: theta's log density includes its priors (with the log-scale Jacobian);
    without, the objective is the marginal likelihood (empirical Bayes).
    """
    cells, design, plan = prep.cells, prep.design, prep.plan
    s = cells.stats()
    stats = {
        "binomial": lambda: (s["successes"], s["trials"]),
        "poisson": lambda: (s["counts"],),
        "normal": lambda: (s["n"], s["mean"], s["m2"]),
    }[cells.likelihood]()
    terms = [Term(t.codes, t.values, t.n_levels) for t in design.groups]
    mean = np.array([p.mu if isinstance(p, Normal) else 0.0 for p in plan.common_priors])
    precision = np.array(
        [p.sigma**-2 if isinstance(p, Normal) else 0.0 for p in plan.common_priors]
    )
    names, priors, start, index = [], [], [], []
    for t, tp in zip(design.groups, plan.terms, strict=True):
        if tp.sd is None:
            index.append(len(names))
            names.append(t.sigma_name)
            priors.append(tp.sd_prior)
            start.append(np.log(prior_scale(tp.sd_prior)) - 1.0)
        else:
            index.append(None)
    blocks = []
    for bp in plan.blocks:
        k = len(bp.terms)
        cols = tuple(range(len(names), len(names) + k * (k - 1) // 2))
        blocks.append(CorrBlock(bp.terms, cols))
        names += [f"{bp.name}_corr_z[{i}]" for i in range(len(cols))]
        start += [0.0] * len(cols)
    sigma_index = None
    if cells.likelihood == "normal":
        sigma_index = len(names)
        names.append("sigma")
        priors.append(plan.sigma_prior)
        start.append(np.log(prep.scales.sd_y) - 0.5)

    def log_prior(theta: np.ndarray) -> np.ndarray:
        out = np.zeros(len(theta))
        if with_prior:
            for i, prior in zip(index_sd, priors, strict=True):
                out += prior.logpdf(np.exp(theta[:, i])) + theta[:, i]
            for b, bp in zip(blocks, plan.blocks, strict=True):
                z = theta[:, list(b.corr_index)]
                out += lkj_log_density(z, len(b.terms), bp.prior.eta)
        return out

    index_sd = [i for i in range(len(names)) if i not in {c for b in blocks for c in b.corr_index}]
    model = LatentModel(
        Structure(design.X, terms, tuple(b.terms for b in blocks)),
        cells.likelihood,
        stats,
        design.offset,
        mean,
        precision,
        tuple(index),
        tuple(tp.sd for tp in plan.terms),
        tuple(tp.zero_sum for tp in plan.terms),
        sigma_index,
        log_prior,
        tuple(blocks),
    )
    return model, names, model.moment_start() if model.differentiable else np.array(start)


def _theta_engine(d: int, prep: Prepared) -> str:
    """The engine that integrates theta. With correlated blocks, a pruned grid up to
    ``PRUNED_MAX`` dimensions: the correlations' posterior and a slope sd's near zero are far
    from normal, so a central composite design misplaces their mass (by half a posterior sd on
    radon's slope sd), and the full grid, refined until its moments agree, takes ~10^5 points
    for a binomial block's 3 (the pruned grid's points grow as the posterior's volume: 65 for a
    normal in 3 dimensions, 169 in 4, 445 in 5, 1,189 in 6). Otherwise the full grid up to
    ``GRID_MAX``; beyond either, a central composite design."""
    if prep.plan.correlated:
        return "pruned" if d <= PRUNED_MAX else "ccd"
    return "exact" if d <= GRID_MAX else "ccd"


def _sd_columns(model: LatentModel, names: list[str]) -> list[int]:
    """The columns of theta that are log sds (every one but the correlation coordinates)."""
    corr = {i for b in model.blocks for i in b.corr_index}
    return [i for i in range(len(names)) if i not in corr]


def _theta_info(model: LatentModel, plan, names: list[str], mode: np.ndarray) -> dict:
    """theta's mode, read: the sds and the blocks' correlations."""
    out = {names[i]: float(np.exp(mode[i])) for i in _sd_columns(model, names)}
    for b, bp in zip(model.blocks, plan.blocks, strict=True):
        L = corr_cholesky(mode[None, list(b.corr_index)], len(b.terms))[0]
        out.update(zip(bp.rows, correlations(L, bp.pairs)[0].tolist(), strict=True))
    return out


def _boundary_message(model: LatentModel, plan, names: list[str], i: int) -> str:
    """What an empirical-Bayes estimate at the boundary of theta's coordinate ``i`` means."""
    for b, bp in zip(model.blocks, plan.blocks, strict=True):
        if i in b.corr_index:
            return (
                f"{bp.name}: a correlation is estimated at +-1, as in lme4's singular fit: the "
                "data do not tell the coefficients' correlation; read it with care, or drop it "
                "(lme4's (x||g), independent terms)"
            )
    return (
        f"{names[i]} is estimated at its boundary (~0): the levels barely differ beyond "
        "noise, as in lme4's singular fit; read the factor's effects as completely "
        "pooled, or drop the term"
    )


# finite-difference step in the correlation coordinates (the delta method of k > 2)
CORR_STEP = 1e-6


def _correlation_rows(
    model: LatentModel, plan, weights, points, var, prob, method, smoothing
) -> dict:
    """The blocks' correlations' rows (mean, sd, median, HDI low, high): a normal per point on
    the ``atanh`` scale (the coordinate itself for two coefficients; beyond, by the delta method
    from the coordinates' spread), the mixture's intervals mapped back by ``tanh`` (and pulled
    in where ``smoothing`` is "pulled", as the sds'); the mean and sd over the points (as the
    sds'), by the delta method for ``eb``."""
    out = {}
    for b, bp in zip(model.blocks, plan.blocks, strict=True):
        cols, k = list(b.corr_index), len(b.terms)
        r = correlations(corr_cholesky(points[:, cols], k)[0], bp.pairs)  # (K, pairs)
        grad = np.empty((len(points), len(cols), r.shape[1]))
        for c in range(len(cols)):
            step = points[:, cols].copy()
            step[:, c] += CORR_STEP
            grad[:, c] = (correlations(corr_cholesky(step, k)[0], bp.pairs) - r) / CORR_STEP
        with np.errstate(divide="ignore"):
            var_r = np.einsum("kcp,kc->kp", grad**2, var[:, cols])
            v = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15))
            var_v = var_r / (1.0 - r**2) ** 2
        _, _, med, lo, hi = _mixture_rows(weights, 2 * v, 4 * var_v, prob, link="logit")
        if smoothing == "pulled":
            lo, hi = _pulled_in((lo, hi), "logit", weights, 2 * v, 4 * var_v)
        m = weights @ r
        sd = np.sqrt(np.maximum(weights @ r**2 - m**2, 0.0))
        if method == "eb":
            sd = np.sqrt(var_r[0])
        for j, row in enumerate(bp.rows):
            out[row] = (m[j], sd[j], 2 * med[j] - 1, 2 * lo[j] - 1, 2 * hi[j] - 1)
    return out


def _tilt(weights, points, grid, check) -> np.ndarray:
    """The theta points' weights times exp of the Laplace marginal's error, linear in
    ``z = chol^-1 (theta - mode)`` with the slope :func:`laplace_check` estimated (its
    curvature, extrapolated to the grid's far points, made the marginals worse)."""
    if "theta_slope" not in check:
        return weights
    z = np.linalg.solve(grid.chol, (points - grid.mode).T).T
    w = weights * np.exp(z @ np.array(check["theta_slope"]))
    return w / w.sum()


def _cell_variance(post) -> np.ndarray:
    """Each point's spread in theta (K, d): the variance of a uniform over its quadrature cell,
    linearised (a quarter of the posterior's variance for a design without cells)."""
    if not np.any(post.spacing):
        return np.tile(np.diag(post.chol @ post.chol.T) / 4, (len(post.weights), 1))
    jac = post.chol[None, :, :] * (post.du_dv(post.grid) * post.spacing)[:, None, :]
    return (jac**2).sum(axis=2) / 12


def _pulled_in(ends, link, weights, centres, var) -> list[np.ndarray]:
    """Interval ends of a mixture whose components smooth its points (``centres`` (K, n) with
    ``weights``) by normals of variance ``var``, without that smoothing: it adds its variance S
    to the points' V, so each end is pulled towards the mean by sqrt(V / (V + S)) on the
    ``link``'s scale: exact for a normal variable, close for the log or logit of one whose spread
    on that scale is small (an end of the support stays)."""
    m = weights @ centres
    v = weights @ (centres - m) ** 2
    total = v + weights @ var
    rho = np.sqrt(np.divide(v, total, out=np.ones_like(v), where=total > 0))
    out = []
    for x in ends:
        y = to_link(link, x)
        out.append(np.where(np.isfinite(y), from_link(link, m + (y - m) * rho), x))
    return out


def _hyper_rows(weights, points, var, prob, smoothing, floor=None):
    """The sds' rows (mean, sd, median, HDI). ``smoothing`` "kernel" (the full grid, as a rule
    its finer interpolated one): each point smoothed over its cell by the fourth-order kernel
    (moments up to the third kept: the intervals' error is O(spacing^4)), the cell's normal
    where that kernel's interval is unsound; "pulled" (a pruned grid): each point's normal over its cell, the intervals without
    that smoothing's spread (:func:`_pulled_in`; on radon's slopes, the ends within 0.06 sd of a
    grid of 65,742 points, where they were 0.27 sd out); "normal": each point's normal, as it
    is (a central composite design's quarter of the posterior's variance: the design's sds run
    short of a long run's, and that spread makes up part of it; ``eb``'s, the posterior's)."""
    if smoothing != "kernel":
        rows = _mixture_rows(weights, points, var, prob, link="log")
        if smoothing == "pulled":
            rows = (*rows[:3], *_pulled_in(rows[3:], "log", weights, points, var))
        return rows
    rows = _mixture_table(weights, points, 12 * var, prob, link="log", kind="kernel", floor=floor)
    bad = ~rows[5]
    if bad.any():
        normal = _mixture_rows(weights, points[:, bad], var[:, bad], prob, link="log")
        for row, fallback in zip(rows[2:5], normal[2:5], strict=True):
            row[bad] = fallback
    return rows[:5]


def _mixture_rows(
    weights, means, variances, prob, link="identity", coarse=None, median=True, tol=TOL
):
    """mean, sd, median (NaN unless ``median``), HDI of each column of a normal mixture (on
    ``link``'s scale); ``coarse``: the components of the grid before its last refinement (a first
    pass). Moments are exact over every component; the intervals leave out the lightest
    components, together ``INTERVAL_SHARE`` of the mass (an end moves by about that share of
    the sd); ``tol``: the residuals from which the interval solver takes its last step (see
    :meth:`~poolwise.mixture.Mixture.hdi`)."""
    return _mixture_table(weights, means, variances, prob, link, coarse, median, tol=tol)[:5]


def _mixture_table(
    weights,
    means,
    variances,
    prob,
    link="identity",
    coarse=None,
    median=True,
    kind="normal",
    floor=None,
    tol=TOL,
):
    """:func:`_mixture_rows` of a normal or ``kind`` "kernel" mixture, and whether each HDI is
    sound; ``floor`` each column's density at its lower end, where known (see
    :meth:`poolwise.mixture.Mixture.hdi`). The intervals' search starts from the normal one,
    moved by the skewness of a normal mixture on the identity link (see
    :func:`~poolwise.intervals.hdi_normal`)."""
    m = weights @ means
    var = np.maximum(weights @ (variances + means**2) - m**2, 0.0)
    keep = prune(weights, INTERVAL_SHARE)
    w = weights[keep] / weights[keep].sum()
    mix = Mixture.of(kind, w, means[keep], variances[keep], link)
    coarse = None if coarse is None else coarse[keep]
    skew = 0.0
    if kind == "normal" and link == "identity":  # the mixture's skewness (third central
        # moment over sd^3), within +-1, where the first-order move of the ends holds (the
        # effects' mixtures, near normal; not the sds', whose ends may run to zero)
        dev = means - m
        third = weights @ (dev * (dev * dev + 3 * variances))
        skew = np.divide(third, var**1.5, out=np.zeros_like(third), where=var > 0)
        np.clip(skew, -1.0, 1.0, out=skew)
    with np.errstate(over="ignore"):  # a sd at its boundary: a log-scale spread without end
        lo, hi, sound = mix.hdi(prob, *hdi_normal(m, var, prob, skew), coarse, floor, tol)
        mid = mix.quantile(0.5, m) if median else np.full(m.shape, np.nan)
    if link == "log":
        x = np.exp(means)
        m = weights @ x
        var = np.maximum(weights @ x**2 - m**2, 0.0)
    return m, np.sqrt(var), mid, lo, hi, sound


def _effects_given(model: LatentModel, points: np.ndarray, mode: np.ndarray):
    """The effects' conditionals at the theta ``points`` (those :meth:`LatentModel.log_marginal`
    still holds taken as they are), skewness-shifted where affordable, and how they were
    shifted."""
    cond = model.conditional_at(points)
    if affordable(model, len(points)):
        return shifted(model, cond)[0], "simplified-Laplace mean shift at every theta point"
    if affordable(model, 1):
        # too many points for the cells' dense blocks: the shift at theta's mode serves all
        at_mode = mean_shift(model, model.conditional(mode[None]))
        shift = "simplified-Laplace mean shift at theta's mode, for every point"
        return replace(cond, x=cond.x + at_mode), shift
    if model.likelihood != "normal":
        return cond, "none (the cells' dense blocks are too large)"
    return cond, "none (a normal outcome: exact)"


def _draws(post, weights, keep, cond, n_draws, seed, model):
    """Draws of theta (a point by its weight, inside its cell) and a function that makes the
    effects' draws from each point's Gaussian (the same random stream, called once); ``cond``
    None: the conditionals computed afresh (:func:`_effects_given`) when the draws are made."""
    rng = np.random.default_rng([seed, 14])
    idx = rng.choice(weights.size, size=n_draws, p=weights)
    d = post.points.shape[1]
    if np.any(getattr(post, "spacing", 0.0)):
        v = post.grid[keep][idx] + (rng.random((n_draws, d)) - 0.5) * post.spacing
        theta = post.mode + post.to_u(v) @ post.chol.T
    else:
        theta = post.points[keep][idx]
    points, mode = post.points[keep], post.mode

    def effects():
        c = cond if cond is not None else _effects_given(model, points, mode)[0]
        return c.sample(idx, rng.standard_normal((n_draws, c.x.shape[1])))

    return theta, effects


def fit_laplace(
    prep: Prepared,
    *,
    method: str = "laplace",
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    reason: str | None = None,
    route: bool = False,
) -> RegressionData:
    """Fit the prepared model by the Laplace engine (``method`` "laplace" or "eb").

    A binomial or poisson ``laplace`` fit records :func:`laplace_check` in
    ``info["laplace_check"]`` and warns where it flags, unless ``route`` (``method="auto"``
    choosing its engine: the caller acts on the flags).

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.setup import prepare
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "y": [1., 2.1, 1.2, 2.0, .9, 2.2]})
    >>> fit = fit_laplace(prepare("y ~ 1 + x + (1|g)", df), seed=1)
    >>> round(float(fit.population.loc["x", "mean"]), 1)
    1.1
    """
    from ..engines import ENGINES, Density

    check_count("draws", draws)
    check_prob(hdi_prob)
    check_seed(seed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    why = refusal(prep)
    if why is not None:
        raise ValueError(f"method={method!r}: {why}; use method='nuts'")
    start = time.perf_counter()
    model, names, z0 = latent_model(prep, with_prior=method != "eb")
    d = len(names)
    messages = list(prep.messages)
    boundary: tuple[int, ...] = ()
    exact = (model.derivatives, model.hessian) if model.differentiable else (None, None)
    target = Density(model.log_marginal, z0, tuple(names), *exact, known=model.log_prior)
    if method == "eb":
        post = ENGINES["eb"](target)
        boundary = post.boundary
        points, weights, var = post.points, post.weights, np.diag(post.cov)[None, :]
        keep, coarse = np.arange(1), None
        grid = post
    else:
        engine = _theta_engine(d, prep)
        # the full grid widened by rows and refined to GRID_MOMENT_TOL: every point a Newton solve
        options = {
            "moment_tol": GRID_MOMENT_TOL,
            "widen_by_rows": True,
            "start_points": GRID_START if d > 1 else None,
            "fine_points": FINE_POINTS,
        }
        grid = ENGINES[engine](target, **(options if engine == "exact" else {}))
        keep = prune(grid.weights)
        weights = grid.weights[keep] / grid.weights[keep].sum()
        points = grid.points[keep]
        coarse = None if grid.coarse is None else grid.coarse[keep]
        var = _cell_variance(grid)[keep] if d else np.zeros((1, 0))
    for m in grid.warnings:
        warnings.warn(m, PoolwiseWarning, stacklevel=4)
        messages.append(m)
    check = None
    if method == "laplace" and model.likelihood != "normal":
        check = laplace_check(model, prep, grid.mode, grid.chol, names, CHECK_SEED)
        weights = _tilt(weights, points, grid, check)
    cond, skewness = _effects_given(model, points, grid.mode)
    x_var = cond.variances(single=True)
    design, plan = prep.design, prep.plan
    rows = {}
    p = len(design.names)
    m, sd, med, lo, hi = _mixture_rows(
        weights, cond.x[:, :p], x_var[:, :p], hdi_prob, coarse=coarse
    )
    for j, name in enumerate(design.names):
        rows[name] = (m[j], sd[j], med[j], lo[j], hi[j])
    sdc = _sd_columns(model, names)
    if d:
        by_engine = {"exact": "kernel", "pruned": "pulled", "ccd": "normal"}
        smoothing = "normal" if method == "eb" else by_engine[_theta_engine(d, prep)]
        hyper = weights, points, var
        fine = getattr(grid, "fine", None)
        if fine is not None:
            kept = prune(fine.weights)
            w_f = fine.weights[kept] / fine.weights[kept].sum()
            if check is not None:
                w_f = _tilt(w_f, fine.points[kept], grid, check)
            hyper = w_f, fine.points[kept], _cell_variance(fine)[kept]
        hm, hsd, hmed, hlo, hhi = _hyper_rows(
            hyper[0], hyper[1][:, sdc], hyper[2][:, sdc], hdi_prob, smoothing
        )
        if method == "eb":
            hm = hmed = np.exp(points[0, sdc])
            hsd = hm * np.sqrt(var[0, sdc])
        rows.update(
            _correlation_rows(model, plan, weights, points, var, hdi_prob, method, smoothing)
        )
        for i in boundary:
            if i in sdc:
                j = sdc.index(i)
                hsd[j] = hlo[j] = hhi[j] = np.nan
            messages.append(_boundary_message(model, plan, names, i))
            warnings.warn(messages[-1], PoolwiseWarning, stacklevel=4)
        for j, i in enumerate(sdc):
            rows[names[i]] = (hm[j], hsd[j], hmed[j], hlo[j], hhi[j])
    sd_names = [names[i] for i in sdc]
    keep_rows = [*design.names] + [n for n in sd_names if n != "sigma"]
    keep_rows += [row for bp in plan.blocks for row in bp.rows]
    keep_rows += ["sigma"] if "sigma" in names else []
    n_draws = max(draws, 1)
    s = model.structure
    held = cond
    if s.factor_size * len(cond.x) > BATCH_FLOATS:
        # the fit holds no conditionals this large: the draws compute theirs afresh
        model.forget()
        held = None
    theta, effects = _draws(grid, weights, keep, held, n_draws, seed, model)

    def made() -> dict[str, np.ndarray]:
        x = effects()
        out = {name: x[:, i].reshape(1, -1) for i, name in enumerate(design.names)}
        for t, off in zip(design.groups, s.offsets, strict=True):
            out[t.name] = x[:, off : off + t.n_levels].reshape(1, n_draws, t.n_levels)
        return out

    sds_at = model.sds(points)
    summaries, sd_values, all_draws = {}, {}, {}
    for i in sdc:
        all_draws[names[i]] = np.exp(theta[:, i]).reshape(1, -1)
    for b, bp in zip(model.blocks, plan.blocks, strict=True):
        L = corr_cholesky(theta[:, list(b.corr_index)], len(b.terms))[0]
        for row, r in zip(bp.rows, correlations(L, bp.pairs).T, strict=True):
            all_draws[row] = r.reshape(1, -1)
    # every term's levels in one table (the effects follow the common ones)
    # (the intervals' last step from residuals of 1e-2: ends within ~1e-4 sd, not ~1e-10)
    levels = _mixture_rows(
        weights, cond.x[:, p:], x_var[:, p:], hdi_prob, coarse=coarse, median=False, tol=POLISH
    )
    for j, (t, off) in enumerate(zip(design.groups, s.offsets - p, strict=True)):
        tm, tsd, _, tlo, thi = (row[off : off + t.n_levels] for row in levels)
        summaries[t.name] = (tm, tsd, tlo, thi)
        sd_values[t.name] = (sds_at[:, j], weights)
    keys = [*design.names, *(t.name for t in design.groups)]
    order = [*design.names, *all_draws, *(t.name for t in design.groups)]
    posterior_draws = LazyDraws.together(all_draws, made, keys, order)
    sigma2 = None
    if model.sigma_index is not None:
        sigma2 = float(weights @ np.exp(2 * points[:, model.sigma_index]))
    info = {
        "engine": method,
        "seconds": time.perf_counter() - start,
        "cells": design.n_cells,
        "theta": _theta_info(model, plan, names, grid.mode),
        "grid_points": int(len(grid.weights)),
        "kept_points": int(len(weights)),
        "skewness": skewness,
    }
    info.update({k: v for k, v in getattr(grid, "info", {}).items() if k != "range_sd"})
    if check is not None:
        info["laplace_check"] = check
        if check["flags"] and not route:
            messages.append(
                "the Laplace approximation may be inaccurate here: "
                + "; ".join(check["flags"])
                + "; method='nuts' samples the exact posterior"
            )
            warnings.warn(messages[-1], PoolwiseWarning, stacklevel=4)
    design_kind = {
        "exact": "a grid",
        "pruned": "a pruned grid",
        "ccd": "a central composite design",
    }[_theta_engine(d, prep)]
    default_reason = (
        f"Laplace approximation of the effects given {d} variance parameter(s), integrated on "
        f"{design_kind}"
        if method == "laplace"
        else "empirical Bayes: the variance parameters at the maximum of their Laplace marginal "
        "likelihood, the effects conditional on them"
    )
    return mixture_record(
        prep,
        {k: rows[k] for k in keep_rows},
        summaries,
        sd_values,
        posterior_draws,
        hdi_prob=hdi_prob,
        seed=seed,
        method=method,
        reason=reason or default_reason,
        info=info,
        messages=messages,
        sigma2=sigma2,
        check_sds=method != "eb",
    )


def mixture_record(
    prep: Prepared,
    rows: dict[str, tuple[float, ...]],
    summaries: dict[str, tuple[np.ndarray, ...]],
    sd_values: dict[str, tuple[np.ndarray, np.ndarray]],
    draws: dict[str, np.ndarray],
    *,
    hdi_prob: float,
    seed: int,
    method: str,
    reason: str,
    info: dict,
    messages: list[str],
    sigma2: float | None = None,
    check_sds: bool = True,
) -> RegressionData:
    """The fit's record from tables computed on a mixture (no Monte Carlo noise): ``rows`` each
    population row's (mean, sd, median, HDI low, HDI high), in order; ``summaries`` and
    ``sd_values`` per term, as :func:`poolwise.glmm.setup.groups_table` takes them; ``draws``
    (1, n, ...) per parameter, for the verbs (a :class:`~poolwise.fitdata.LazyDraws` keeps
    those not yet made so); ``sigma2`` a normal outcome's residual variance
    (its posterior mean); ``check_sds``: warn where a group sd's draws sit at zero."""
    design, plan = prep.design, prep.plan
    lo_name, hi_name = hdi_names(hdi_prob)
    keep_rows = list(rows)
    pop = pd.DataFrame(
        [rows[k] for k in keep_rows],
        index=pd.Index(keep_rows, name="parameter"),
        columns=["mean", "sd", "median", "hdi_low", "hdi_high"],
    )
    table_rows = [(m, sd, lo, hi) for m, sd, _, lo, hi in (rows[k] for k in keep_rows)]
    index = list(keep_rows)
    means: dict = {name: rows[name][0] for name in design.names}
    for t in design.groups:
        tm, tsd, tlo, thi = summaries[t.name]
        means[t.name] = tm
        table_rows += list(np.column_stack([tm, tsd, tlo, thi]))
        index += [f"{t.name}[{lb}]" for lb in t.levels]
    if sigma2 is not None:
        means["sigma2"] = sigma2
    table = pd.DataFrame(
        np.column_stack([np.array(table_rows, dtype=float), np.full((len(index), 3), np.nan)]),
        index=pd.Index(index, name="parameter"),
        columns=["mean", "sd", lo_name, hi_name, "ess_bulk", "ess_tail", "r_hat"],
    )
    groups = groups_table(prep.cells, design, plan, means, summaries, sd_values)
    sd_terms = {
        t.sigma_name: (draws[t.sigma_name], prior_scale(tp.sd_prior))
        for t, tp in zip(design.groups, plan.terms, strict=True)
        if t.sigma_name in draws and check_sds
    }
    messages = list(messages)
    for m_ in boundary_notes(sd_terms):  # (a sampler's checks have nothing to say here)
        warnings.warn(m_, PoolwiseWarning, stacklevel=5)
        messages.append(m_)
    if prep.skipped:
        info["identifiability"] = prep.skipped
    return RegressionData(
        family=prep.family(keep_rows),
        pooling="partial",
        method=method,
        method_reason=reason,
        priors=prep.used,
        groups=groups,
        population=pop,
        hdi_prob=hdi_prob,
        n_rows=prep.cells.n_rows,
        seed=int(seed),
        observed=dict(prep.cells.stats()),
        hyper_draws=pick(draws, keep_rows, lambda a: a.reshape(-1)),
        warnings=tuple(messages),
        info=info,
        formula=prep.formula,
        draws=pick(draws, [*keep_rows, *(t.name for t in design.groups)]),
        coords={t.name: t.levels for t in design.groups},
        design=design,
        plan=plan,
        divergences=0,
        sample_stats={},
        table=table,
    )
