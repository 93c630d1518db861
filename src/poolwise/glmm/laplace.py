"""The deterministic route of a formula fit: ``method="laplace"`` and ``method="eb"``.

The prepared model becomes a latent Gaussian model (:mod:`poolwise.engines.latent`): theta = the
free group sds' logs (and a normal outcome's log sigma), in the order of the terms. ``laplace``
integrates theta's Laplace marginal by the exact engine's adaptive quadrature (up to 3
dimensions) or a central composite design (beyond); ``eb`` maximises it (the hyperparameters'
priors left out: a marginal-likelihood estimate, REML-like for a normal outcome, as the common
effects are integrated out). Every effect's posterior is then a mixture over the theta points of
its Gaussian conditionals: means and sds are the mixtures' exact moments, medians and HDIs are
found by root-finding on the mixtures (no Monte Carlo noise in the tables); the draws for the
verbs (ranks, plots, ``to_arviz``, ``predict``, ``check``) pick a theta point by its weight and
draw the effects from its Gaussian. The sds' rows mix narrow normals on the log scale, one per
point, as wide as the point's quadrature cell (a quarter of the posterior's variance for a
central composite design; the asymptotic normal for ``eb``).

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
from ..engines.latent import LatentModel
from ..engines.skewness import (
    affordable,
    importance_check,
    mean_shift,
    separated,
    shifted,
)
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import RegressionData
from ..intervals import hdi_names, hdi_normal
from ..mixture import Mixture, prune
from ..priors import Flat, Normal
from .checks import diagnose
from .model import prior_scale
from .setup import Prepared, groups_table

# at most this many hyperparameters are integrated on a grid; more by a central composite design
GRID_MAX = 3
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
    if plan.correlated:
        return "correlated group effects are not in the Laplace engine yet"
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
    sigma_index = None
    if cells.likelihood == "normal":
        sigma_index = len(names)
        names.append("sigma")
        priors.append(plan.sigma_prior)
        start.append(np.log(prep.scales.sd_y) - 0.5)

    def log_prior(theta: np.ndarray) -> np.ndarray:
        out = np.zeros(len(theta))
        if with_prior:
            for i, prior in enumerate(priors):
                out += prior.logpdf(np.exp(theta[:, i])) + theta[:, i]
        return out

    model = LatentModel(
        Structure(design.X, terms),
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
    )
    return model, names, np.array(start)


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
    jac = post.chol[None, :, :] * (np.cosh(post.grid) * post.spacing)[:, None, :]
    return (jac**2).sum(axis=2) / 12


def _mixture_rows(weights, means, variances, prob, link="identity", coarse=None, median=True):
    """mean, sd, median (NaN unless ``median``), HDI of each column of a normal mixture (on
    ``link``'s scale); ``coarse``: the components of the grid before its last refinement (a first
    pass). Moments are exact over every component; the intervals leave out the lightest
    components, together ``INTERVAL_SHARE`` of the mass (an end moves by about that share of
    the sd)."""
    m = weights @ means
    var = np.maximum(weights @ (variances + means**2) - m**2, 0.0)
    keep = prune(weights, INTERVAL_SHARE)
    w = weights[keep] / weights[keep].sum()
    mix = Mixture.of("normal", w, means[keep], variances[keep], link)
    coarse = None if coarse is None else coarse[keep]
    with np.errstate(over="ignore"):  # a sd at its boundary: a log-scale spread without end
        lo, hi, _ = mix.hdi(prob, *hdi_normal(m, var, prob), coarse)
        mid = mix.quantile(0.5, m) if median else np.full(m.shape, np.nan)
    if link == "log":
        x = np.exp(means)
        m = weights @ x
        var = np.maximum(weights @ x**2 - m**2, 0.0)
    return m, np.sqrt(var), mid, lo, hi


def _draws(post, weights, keep, cond, n_draws, seed):
    """Draws of theta and of the effects: a point by its weight, inside its cell, and the
    effects from its Gaussian."""
    rng = np.random.default_rng([seed, 14])
    idx = rng.choice(weights.size, size=n_draws, p=weights)
    d = post.points.shape[1]
    if np.any(getattr(post, "spacing", 0.0)):
        v = post.grid[keep][idx] + (rng.random((n_draws, d)) - 0.5) * post.spacing
        theta = post.mode + np.sinh(v) @ post.chol.T
    else:
        theta = post.points[keep][idx]
    return theta, cond.sample(idx, rng.standard_normal((n_draws, cond.x.shape[1])))


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
    if method == "eb":
        post = ENGINES["eb"](Density(model.log_marginal, z0, tuple(names)))
        boundary = post.boundary
        points, weights, var = post.points, post.weights, np.diag(post.cov)[None, :]
        keep, coarse = np.arange(1), None
        grid = post
    else:
        engine = ENGINES["exact" if d <= GRID_MAX else "ccd"]
        grid = engine(Density(model.log_marginal, z0, tuple(names)))
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
    cond = model.conditional_at(points)
    skewness = "none (a normal outcome: exact)"
    if affordable(model, len(points)):
        cond = shifted(model, cond)[0]
        skewness = "simplified-Laplace mean shift at every theta point"
    elif affordable(model, 1):
        # too many points for the cells' dense blocks: the shift at theta's mode serves all
        at_mode = mean_shift(model, model.conditional(grid.mode[None]))
        cond = replace(cond, x=cond.x + at_mode)
        skewness = "simplified-Laplace mean shift at theta's mode, for every point"
    elif model.likelihood != "normal":
        skewness = "none (the cells' dense blocks are too large)"
    x_var = cond.variances()
    design, plan = prep.design, prep.plan
    lo_name, hi_name = hdi_names(hdi_prob)
    rows = {}
    p = len(design.names)
    m, sd, med, lo, hi = _mixture_rows(
        weights, cond.x[:, :p], x_var[:, :p], hdi_prob, coarse=coarse
    )
    for j, name in enumerate(design.names):
        rows[name] = (m[j], sd[j], med[j], lo[j], hi[j])
    if d:
        hm, hsd, hmed, hlo, hhi = _mixture_rows(weights, points, var, hdi_prob, link="log")
        if method == "eb":
            hm = hmed = np.exp(points[0])
            hsd = hm * np.sqrt(var[0])
        for i in boundary:
            hsd[i] = hlo[i] = hhi[i] = np.nan
            messages.append(
                f"{names[i]} is estimated at its boundary (~0): the levels barely differ beyond "
                "noise, as in lme4's singular fit; read the factor's effects as completely "
                "pooled, or drop the term"
            )
            warnings.warn(messages[-1], PoolwiseWarning, stacklevel=4)
        for i, name in enumerate(names):
            rows[name] = (hm[i], hsd[i], hmed[i], hlo[i], hhi[i])
    keep_rows = [*design.names] + [n for n in names if n != "sigma"]
    keep_rows += ["sigma"] if "sigma" in names else []
    pop = pd.DataFrame(
        [rows[k] for k in keep_rows],
        index=pd.Index(keep_rows, name="parameter"),
        columns=["mean", "sd", "median", "hdi_low", "hdi_high"],
    )
    pop = pop[["mean", "sd", "median", "hdi_low", "hdi_high"]]
    n_draws = max(draws, 1)
    theta, x = _draws(grid, weights, keep, cond, n_draws, seed)
    sds_at = model.sds(points)
    summaries, sd_values, all_draws = {}, {}, {}
    for name in design.names:
        all_draws[name] = x[:, design.names.index(name)].reshape(1, -1)
    for i, name in enumerate(names):
        all_draws[name] = np.exp(theta[:, i]).reshape(1, -1)
    means = {name: rows[name][0] for name in design.names}
    table_rows = [pop.loc[k, ["mean", "sd", "hdi_low", "hdi_high"]].to_numpy() for k in keep_rows]
    index = list(keep_rows)
    s = model.structure
    for j, (t, off) in enumerate(zip(design.groups, s.offsets, strict=True)):
        cols = slice(off, off + t.n_levels)
        tm, tsd, _, tlo, thi = _mixture_rows(
            weights, cond.x[:, cols], x_var[:, cols], hdi_prob, coarse=coarse, median=False
        )
        summaries[t.name] = (tm, tsd, tlo, thi)
        means[t.name] = tm
        sd_values[t.name] = (sds_at[:, j], weights)
        all_draws[t.name] = x[:, cols].reshape(1, n_draws, t.n_levels)
        table_rows += list(np.column_stack([tm, tsd, tlo, thi]))
        index += [f"{t.name}[{lb}]" for lb in t.levels]
    if model.sigma_index is not None:
        means["sigma2"] = float(weights @ np.exp(2 * points[:, model.sigma_index]))
    table = pd.DataFrame(
        np.column_stack([np.array(table_rows, dtype=float), np.full((len(index), 3), np.nan)]),
        index=pd.Index(index, name="parameter"),
        columns=["mean", "sd", lo_name, hi_name, "ess_bulk", "ess_tail", "r_hat"],
    )
    groups = groups_table(prep.cells, design, plan, means, summaries, sd_values)
    sd_terms = {
        t.sigma_name: (all_draws[t.sigma_name], prior_scale(tp.sd_prior))
        for t, tp in zip(design.groups, plan.terms, strict=True)
        if t.sigma_name in all_draws and method != "eb"
    }
    for m_ in diagnose(table, 0, n_draws, sd_terms):
        warnings.warn(m_, PoolwiseWarning, stacklevel=4)
        messages.append(m_)
    info = {
        "engine": method,
        "seconds": time.perf_counter() - start,
        "cells": design.n_cells,
        "theta": dict(zip(names, np.exp(grid.mode).tolist(), strict=True)),
        "grid_points": int(len(grid.weights)),
        "kept_points": int(len(weights)),
        "skewness": skewness,
    }
    info.update({k: v for k, v in getattr(grid, "info", {}).items() if k != "range_sd"})
    if prep.skipped:
        info["identifiability"] = prep.skipped
    if check is not None:
        info["laplace_check"] = check
        if check["flags"] and not route:
            messages.append(
                "the Laplace approximation may be inaccurate here: "
                + "; ".join(check["flags"])
                + "; method='nuts' samples the exact posterior"
            )
            warnings.warn(messages[-1], PoolwiseWarning, stacklevel=4)
    hyper = {k: all_draws[k].reshape(-1) for k in keep_rows}
    design_kind = "a grid" if d <= GRID_MAX else "a central composite design"
    default_reason = (
        f"Laplace approximation of the effects given {d} variance parameter(s), integrated on "
        f"{design_kind}"
        if method == "laplace"
        else "empirical Bayes: the variance parameters at the maximum of their Laplace marginal "
        "likelihood, the effects conditional on them"
    )
    return RegressionData(
        family=prep.family(keep_rows),
        pooling="partial",
        method=method,
        method_reason=reason or default_reason,
        priors=prep.used,
        groups=groups,
        population=pop,
        hdi_prob=hdi_prob,
        n_rows=prep.cells.n_rows,
        seed=int(seed),
        observed=dict(prep.cells.stats()),
        hyper_draws=hyper,
        warnings=tuple(messages),
        info=info,
        formula=prep.formula,
        draws={
            **{k: all_draws[k] for k in keep_rows},
            **{t.name: all_draws[t.name] for t in design.groups},
        },
        coords={t.name: t.levels for t in design.groups},
        design=design,
        plan=plan,
        divergences=0,
        sample_stats={},
        table=table,
    )
