"""One scalar grouping factor of a binomial or poisson regression, without MCMC.

The model is the one NUTS samples (:func:`poolwise.glmm.model.make_model`): common effects with
independent normal (or flat) priors, one term ``(1|g)`` with a group sd (a prior, or fixed).
Each level's effect is integrated by adaptive Gauss–Hermite quadrature
(:mod:`poolwise.engines.aghq`), so the likelihood of (beta, sd) is exact to quadrature error;
beta is Gaussian given the sd around its conditional mode on that exact likelihood (it pools
every level's data, so its conditional is close to normal), which also gives the sd's marginal
(Laplace in beta only); the log sd is integrated by the adaptive quadrature of
:mod:`poolwise.engines.exact`. Draws: the sd from its grid, beta from its Gaussian, every level's
effect exactly from its conditional.

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
from dataclasses import replace

import numpy as np

from ..engines import ENGINES, Density
from ..engines.aghq import FAMILIES, NODES, LevelModel, beta_laplace, sample_levels
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import RegressionData
from ..priors import Flat, Normal
from .model import ModelPlan, prior_scale
from .sampling import draws_record
from .setup import Prepared

# common effects with which beta's Gaussian (p x p, per sd point) is the model's
MAX_COMMON = 8
# the sd's grid may not come closer than this fraction of sd^2 = J s^2 with mass
BOUND_FRACTION = 0.8
# (the grid's mass there stands for the mass cut off beyond: 1e-4 of it moves a mean by about
# 1e-4 times its distance, a few posterior sds, well inside the quadrature's own tolerance)
BOUND_MASS = 1e-4


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
    """Fit the prepared model by adaptive Gauss–Hermite quadrature (``method="laplace"``):
    tables from ``draws`` independent draws. Raises :class:`Declined` where the model is not
    this engine's (see :func:`why_not`).

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.setup import prepare
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7],
    ...                    "n": [10] * 6})
    >>> fit = fit_aghq(prepare("p(k, n) ~ 1 + x + (1|g)", df), seed=1)
    >>> fit.method, round(float(fit.population.loc["x", "mean"]), 1)
    ('laplace', 1.0)
    """
    check_count("draws", draws)
    check_prob(hdi_prob)
    check_seed(seed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    start = time.perf_counter()
    nodes = nodes or NODES
    samples, facts, notes = _sample(prep, draws, np.random.default_rng([seed, 15]), nodes)
    what = prep.cells.likelihood
    info = {
        "engine": "aghq",
        "seconds": time.perf_counter() - start,
        "cells": prep.design.n_cells,
        **facts,
    }
    default = (
        f"one scalar grouping factor of a {what} regression: each level's effect integrated by "
        f"adaptive Gauss–Hermite, {nodes} nodes; the common effects Gaussian given the group sd "
        "(Laplace on that exact likelihood); the sd by adaptive quadrature"
    )
    prep = replace(prep, messages=[*prep.messages, *notes])
    for m in notes:
        warnings.warn(m, PoolwiseWarning, stacklevel=3)
    return draws_record(
        prep,
        {k: v[None] for k, v in samples.items()},
        hdi_prob,
        int(seed),
        "laplace",
        f"{reason}; {default}" if reason else default,
        info,
        mcmc=False,
    )


def _sample(
    prep: Prepared, draws: int, rng: np.random.Generator, nodes: int
) -> tuple[dict[str, np.ndarray], dict, list[str]]:
    """Draws of the common effects, the group sd (when it has a prior) and the level effects
    (draws, J), with the engine's facts and its warnings."""
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
        return fit, ok

    facts: dict = {"nodes": nodes}
    warnings: list[str] = []
    if term.sd is not None:
        sd_draws = np.full(draws, float(term.sd))
        fit, ok = conditional(np.array([term.sd]))
        if not ok.all():
            raise Declined(
                f"the fixed sd of {term.name} is too large for its zero-sum effects "
                f"(sd^2 >= levels x the intercept's prior variance)"
            )
        modes, chols = fit.mode[[0] * draws], _chol_cov(fit.hessian)[[0] * draws]
        level_start = fit.quadrature.modes[[0] * draws]
    else:
        sd_prior = term.sd_prior

        def log_density(z: np.ndarray) -> np.ndarray:
            sd = np.exp(z[:, 0])
            # the grid's search reaches far sds (e^40), where exp overflows: those points'
            # density is zero
            with np.errstate(over="ignore", invalid="ignore"):
                fit, ok = conditional(sd)
            with np.errstate(divide="ignore"):
                lp = np.asarray(sd_prior.logpdf(sd), dtype=float) + z[:, 0] + fit.log_marginal
            return np.where(ok & np.isfinite(lp), lp, -np.inf)

        name = gterm.sigma_name
        z0 = np.array([math.log(prior_scale(sd_prior))])
        post = ENGINES["exact"](Density(log_density, z0, (name,)))
        warnings += post.warnings
        grid = np.sort(post.points[:, 0])
        if intercept_var is not None:
            near = np.exp(2 * post.points[:, 0]) > BOUND_FRACTION * J * intercept_var
            if post.weights[near].sum() > BOUND_MASS:
                raise Declined(
                    f"the posterior of {name} reaches sd^2 = levels x the intercept's prior "
                    "variance, beyond which zero-sum effects have no independent form"
                )
        fit, _ = conditional(np.exp(grid))
        z = post.sample(rng, draws)[:, 0]
        sd_draws = np.exp(z)
        modes = _interp(z, grid, fit.mode)
        chols = _interp(z, grid, _chol_cov(fit.hessian))
        level_start = _interp(z, grid, fit.quadrature.modes)
        facts |= {"grid_points": int(post.info["grid_points"]), "sd_grid": grid.size}
    beta = modes + np.einsum("spq,sq->sp", chols, rng.standard_normal(modes.shape))
    effects = sample_levels(model, beta, sd_draws, rng, start=level_start)
    if term.zero_sum:
        shift = effects.mean(axis=1)
        beta[:, plan.intercept] += shift
        effects -= shift[:, None]
    out = {name: beta[:, i] for i, name in enumerate(plan.common)}
    if term.sd is None:
        out[gterm.sigma_name] = sd_draws
    out[gterm.name] = effects
    return out, facts, warnings


def _chol_cov(hessian: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of the inverses of a batch of precision matrices."""
    return np.linalg.cholesky(np.linalg.inv(hessian))


def _interp(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (G, ...) given at the sorted ``grid``, linearly interpolated at ``x``."""
    flat = values.reshape(len(grid), -1)
    out = np.column_stack([np.interp(x, grid, flat[:, i]) for i in range(flat.shape[1])])
    return out.reshape((len(x),) + values.shape[1:])
