"""The regression pipeline: formula → cells → design → priors and plan → NUTS → RegressionData."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from ..data import reduce
from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import FitData, RegressionData
from ..onefactor import fit_groups
from ..priors import Flat, HalfNormal, Normal, Prior
from .aghq import Declined, fit_aghq
from .cells import Cells, reduce_cells
from .checks import boundary_notes, diagnose, identifiability, stats_table
from .design import Design, build_design
from .formula import FormulaSpec, parse_formula
from .model import (
    LINKS,
    GlmmFamily,
    ModelPlan,
    Scales,
    TermPlan,
    data_scales,
    default_common_prior,
    default_sd_prior,
    make_model,
    prior_scale,
)
from .tables import groups_table, population_table

PARAMETRIZATIONS = ("auto", "non-centered", "centered", "as-written")
# a full (dense) mass matrix is adapted when the model has at most this many unconstrained
# parameters: it takes the correlations between them into account (on the thread's model, a
# fifth of the leapfrog steps and three times the ESS per draw), and costs O(d²) per step, with
# d(d+1)/2 entries to learn in warm-up, which outweighs that for larger models (radon: slower).
# Not when a group sd is sampled: the effects' scale then changes across the posterior (a
# funnel), which no single linear metric fits (simulation-based calibration of a regression with
# a sampled sd: 78 divergences in 200 fits with a dense matrix, 26 with a diagonal one)
DENSE_MAX = 10
# a group factor is sampled centered when every level's likelihood is at least this many
# times as informative as the prior scale of its effects (precision x scale^2)
CENTERED_RATIO = 10.0
DESCRIPTIONS = {
    "binomial": "binomial successes out of trials, logit link",
    "bernoulli": "bernoulli 0/1 rows (as binomial cells), logit link",
    "poisson": "poisson counts with exposure, log link",
    "normal": "normal outcome, identity link",
}


def _weighted_sd(x: np.ndarray, w: np.ndarray) -> float:
    m = float((w * x).sum() / w.sum())
    return float(np.sqrt((w * (x - m) ** 2).sum() / w.sum()))


def _level_information(cells: Cells, design: Design, scales: Scales, t) -> np.ndarray:
    """Fisher information of each level's effect at the pooled estimate (likelihood only)."""
    s = cells.stats()
    if cells.likelihood == "binomial":
        p = 1.0 / (1.0 + np.exp(-scales.loc))
        w = s["trials"] * p * (1 - p)
    elif cells.likelihood == "poisson":
        w = s["exposure"] * np.exp(scales.loc)
    else:
        w = s["n"] / scales.sd_y**2
    return np.bincount(t.codes, weights=w * t.values**2, minlength=t.n_levels)


def _resolve_priors(
    priors: dict | None, design: Design, cells: Cells, scales: Scales, parametrization: str
) -> tuple[tuple[Prior, ...], list[tuple[float | None, Prior | None]], Prior | None, dict]:
    if priors is None:
        priors = {}
    if not isinstance(priors, dict):
        raise TypeError(
            f"priors must be a dict from term name to prior, got {type(priors).__name__}"
        )
    weights = cells.table["__rows"].to_numpy(np.float64)
    valid = set(design.names) | set(design.terms)
    for t in design.groups:
        valid |= {t.name, t.sigma_name}
    if cells.likelihood == "normal":
        valid.add("sigma")
    for name, value in priors.items():
        if name not in valid:
            raise ValueError(
                f"priors: no term {name!r} in this model; valid names are "
                f"{', '.join(sorted(valid))}"
            )
        if not isinstance(value, Prior) and not (
            isinstance(value, Real) and not isinstance(value, bool)
        ):
            raise TypeError(
                f"priors[{name!r}] must be a poolwise prior (e.g. poolwise.Normal(0, 1)) or, for "
                f"a group sd, a number; got {type(value).__name__}"
            )
    used: dict[str, Any] = {}
    common = []
    for term_name, labels in design.terms.items():
        for label in labels:
            j = design.names.index(label)
            prior = priors.get(label, priors.get(term_name))
            if prior is None:
                prior = default_common_prior(label, scales, _weighted_sd(design.X[:, j], weights))
            elif not isinstance(prior, Prior):
                raise TypeError(f"priors[{label!r}]: a common effect needs a prior, not a number")
            common.append(prior)
            used[label] = prior
    sds: list[tuple[float | None, Prior | None]] = []
    for t in design.groups:
        effect, sd_prior = priors.get(t.name), priors.get(t.sigma_name)
        if effect is not None and sd_prior is not None:
            raise ValueError(
                f"priors: give either {t.name!r} (a Normal(0, sd) with a fixed sd) or "
                f"{t.sigma_name!r} (a prior on the sd), not both"
            )
        if effect is not None:
            if not isinstance(effect, Normal) or effect.mu != 0:
                raise ValueError(
                    f"priors[{t.name!r}]: group effects are Normal(0, sd) deviations; give "
                    f"Normal(0, sd) to fix the sd, or a prior on {t.sigma_name!r}, got {effect!r}"
                )
            sds.append((float(effect.sigma), None))
            used[t.name] = effect
        elif isinstance(sd_prior, Prior):
            lo, _ = sd_prior.support
            if lo < 0 and not isinstance(sd_prior, Flat):
                raise ValueError(
                    f"priors[{t.sigma_name!r}]: {sd_prior!r} allows negative sds; use a prior "
                    "on (0, inf) such as HalfNormal"
                )
            sds.append((None, sd_prior))
            used[t.sigma_name] = sd_prior
        elif sd_prior is not None:
            if not float(sd_prior) > 0:
                raise ValueError(
                    f"priors[{t.sigma_name!r}]: a fixed sd must be > 0, got {sd_prior!r}"
                )
            sds.append((float(sd_prior), None))
            used[t.sigma_name] = float(sd_prior)
        else:
            sd_x = 1.0 if t.expr == "1" else _weighted_sd(t.values, weights)
            prior = default_sd_prior(scales, sd_x)
            sds.append((None, prior))
            used[t.sigma_name] = prior
    sigma = None
    if cells.likelihood == "normal":
        sigma = priors.get("sigma")
        if sigma is None:
            sigma = HalfNormal(round(2.5 * scales.sd_y, 6))
        used["sigma"] = sigma
    return tuple(common), sds, sigma, used


def _plan(
    cells: Cells,
    design: Design,
    scales: Scales,
    common: tuple[Prior, ...],
    sds: list,
    sigma: Prior | None,
    parametrization: str,
) -> tuple[ModelPlan, list[str]]:
    notes = []
    terms = []
    for t, (sd, sd_prior) in zip(design.groups, sds, strict=True):
        if parametrization == "as-written":
            t.zero_sum = False
        if parametrization == "centered":
            t.centered = True
        elif parametrization == "non-centered":
            t.centered = False
        else:
            info = _level_information(cells, design, scales, t)
            scale = sd if sd is not None else prior_scale(sd_prior)
            t.centered = bool(info.min() * scale**2 >= CENTERED_RATIO)
            if t.centered:
                notes.append(
                    f"{t.name}: centered, every level's data outweigh the prior "
                    f"(information x scale^2 >= {CENTERED_RATIO:g}, min {info.min() * scale**2:.3g})"
                )
            else:
                notes.append(f"{t.name}: non-centered, some levels have little data")
        terms.append(
            TermPlan(
                name=t.name,
                n_levels=t.n_levels,
                zero_sum=t.sums_to_zero,
                centered=t.centered,
                slope=t.expr != "1",
                sd=sd,
                sd_prior=sd_prior,
            )
        )
    intercept = design.names.index("Intercept") if design.intercept else None
    plan = ModelPlan(
        likelihood=cells.likelihood,
        common=tuple(design.names),
        common_priors=common,
        intercept=intercept,
        terms=tuple(terms),
        sigma_prior=sigma,
    )
    return plan, notes


# models by plan: refits of the same structure reuse the same model function
_MODELS: dict[ModelPlan, Any] = {}


def _model_for(plan: ModelPlan):
    if plan not in _MODELS:
        if len(_MODELS) > 32:
            _MODELS.clear()
        _MODELS[plan] = make_model(plan)
    return _MODELS[plan]


def _model_data(cells: Cells, design: Design, scales: Scales) -> dict[str, Any]:
    s = cells.stats()
    weights = cells.table["__rows"].to_numpy(np.float64)
    xbar = (weights[:, None] * design.X).sum(axis=0) / weights.sum()
    if cells.likelihood == "binomial":
        stats = (s["successes"], s["trials"])
    elif cells.likelihood == "poisson":
        stats = (s["counts"], s["exposure"])
    else:
        stats = (s["n"], s["mean"], s["m2"])
    return {
        "X": design.X,
        "xbar": xbar,
        "offset": design.offset,
        "stats": stats,
        "codes": tuple(t.codes for t in design.groups),
        "values": tuple(t.values for t in design.groups),
        "center": np.array([scales.loc, scales.scale]),
    }


@dataclass
class _Prepared:
    """A formula model ready for an engine: its cells, design, priors and plan, and the
    messages found on the way (identifiability)."""

    formula: str
    spec: FormulaSpec
    cells: Cells
    design: Design
    scales: Scales
    plan: ModelPlan
    notes: list[str]
    used: dict
    messages: list[str]
    skipped: str | None
    hdi_prob: float = 0.94
    seed: int = 0


def _prepare(formula, data, family, exposure, priors, parametrization, spec) -> _Prepared:
    spec = spec or parse_formula(formula, family, exposure)
    cells = reduce_cells(data, spec)
    design = build_design(cells, spec)
    scales = data_scales(cells.likelihood, cells.stats())
    common, sds, sigma, used = _resolve_priors(priors, design, cells, scales, parametrization)
    plan, notes = _plan(cells, design, scales, common, sds, sigma, parametrization)
    problems, skipped = identifiability(design)
    for m in problems:
        warnings.warn(m, PoolwiseWarning, stacklevel=4)
    return _Prepared(
        formula, spec, cells, design, scales, plan, notes, used, list(problems), skipped
    )


def fit_formula(
    formula: str,
    data: Any,
    *,
    family: str | None = None,
    exposure: str | None = None,
    priors: dict | None = None,
    parametrization: str = "auto",
    draws: int = 4000,
    tune: int = 1000,
    chains: int = 4,
    target_accept: float = 0.8,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    progress: bool = True,
    spec: FormulaSpec | None = None,
    dense_mass: bool | None = None,
    chain_method: str = "auto",
    method: str = "nuts",
) -> RegressionData:
    """Fit a regression with group-specific effects by NUTS (see :func:`poolwise.fit`).

    ``draws`` counts all chains together (``draws // chains`` per chain). ``info`` records the
    time to the first draw (compilation, when the model's shape is new, and warm-up).
    ``dense_mass`` adapts a full mass matrix (None: when the model has at most ``DENSE_MAX``
    unconstrained parameters and every group sd is fixed). ``chain_method``: ``"threads"`` (each
    chain on its own thread, the default on a CPU), ``"vectorized"`` (the chains as one program,
    the default on an accelerator) or ``"auto"``; see :func:`poolwise.engines.nuts.sample_nuts`.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "y": [1., 2.1, 1.2, 2.0, .9, 2.2]})
    >>> fit = fit_formula("y ~ 1 + x + (1|g)", df, draws=400, tune=300, seed=1, progress=False)
    >>> round(float(fit.population.loc["x", "mean"]), 0)
    1.0
    """
    from ..engines.nuts import sample_nuts

    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {', '.join(map(repr, PARAMETRIZATIONS))}, "
            f"got {parametrization!r}"
        )
    for name, value in (("draws", draws), ("chains", chains), ("tune", tune)):
        check_count(name, value)
    if draws < chains:
        raise ValueError(f"draws counts all {chains} chains together: need at least {chains}")
    check_prob(hdi_prob)
    check_seed(seed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    model = _prepare(formula, data, family, exposure, priors, parametrization, spec)
    model.hdi_prob, model.seed = hdi_prob, int(seed)
    if method != "nuts":
        try:
            return _aghq_record(model, draws)
        except Declined as err:
            if method == "laplace":
                raise ValueError(f"method='laplace': {err}; use method='nuts'") from None
    cells, design, scales, plan = model.cells, model.design, model.scales, model.plan
    if dense_mass is None:
        dense_mass = plan.size <= DENSE_MAX and all(t.sd is not None for t in plan.terms)
    result = sample_nuts(
        _model_for(plan),
        _model_data(cells, design, scales),
        chains=chains,
        tune=tune,
        draws=max(draws // chains, 1),
        seed=int(seed),
        target_accept=target_accept,
        dense_mass=bool(dense_mass),
        progress=progress,
        program_key=f"poolwise.glmm:{plan!r}",
        chain_method=chain_method,
    )
    info = {
        "parametrization": parametrization,
        "centering": model.notes,
        "divergences": result.divergences,
        "seconds": result.seconds,
        "time_to_first_draw": result.time_to_first_draw,
        "cells": design.n_cells,
        "chains": chains,
        "tune": tune,
        "dense_mass": bool(dense_mass),
        "chain_method": result.info["chain_method"],
    }
    return _record(
        model,
        result.samples,
        "nuts",
        f"regression with group-specific terms: numpyro NUTS, {chains} chains",
        info,
        lambda table, sd_terms: diagnose(
            table, result.divergences, result.diverging.size, sd_terms
        ),
        divergences=result.divergences,
        sample_stats={"diverging": result.diverging, "tree_depth": result.tree_depth},
    )


def _record(
    model: _Prepared,
    samples: dict[str, np.ndarray],
    method: str,
    reason: str,
    info: dict,
    diagnostics: Callable[[Any, dict], list[str]],
    **extra: Any,
) -> RegressionData:
    """The fit's record from its draws, (chains, draws, ...) per parameter: tables, the
    engine's ``diagnostics`` (warned and kept), the model behind it."""
    cells, design, plan = model.cells, model.design, model.plan
    keep = [*design.names]
    for t in design.groups:
        if t.sigma_name in samples:
            keep.append(t.sigma_name)
    if "sigma" in samples:
        keep.append("sigma")
    population_draws = {k: samples[k] for k in keep}
    group_draws = {t.name: samples[t.name] for t in design.groups}
    all_draws = {**population_draws, **group_draws}
    coords = {t.name: t.levels for t in design.groups}
    table = stats_table(all_draws, coords, model.hdi_prob)
    sd_terms = {
        t.sigma_name: (samples[t.sigma_name], prior_scale(tp.sd_prior))
        for t, tp in zip(design.groups, plan.terms, strict=True)
        if t.sigma_name in samples
    }
    found = diagnostics(table, sd_terms)
    for m in found:
        warnings.warn(m, PoolwiseWarning, stacklevel=4)
    if model.skipped:
        info["identifiability"] = model.skipped
    fam = model.spec.family
    return RegressionData(
        family=GlmmFamily(
            fam,
            LINKS[cells.likelihood],
            DESCRIPTIONS[fam],
            sds=tuple(k for k in keep if k not in design.names),
        ),
        pooling="partial",
        method=method,
        method_reason=reason,
        priors=model.used,
        groups=groups_table(cells, design, plan, all_draws, model.hdi_prob),
        population=population_table(table, population_draws),
        hdi_prob=model.hdi_prob,
        n_rows=cells.n_rows,
        seed=model.seed,
        observed={k: v for k, v in cells.stats().items()},
        hyper_draws={k: v.reshape(-1) for k, v in population_draws.items()},
        warnings=tuple(model.messages + found),
        info=info,
        formula=model.formula,
        draws=all_draws,
        coords=coords,
        design=design,
        plan=plan,
        table=table,
        **extra,
    )


def _aghq_record(model: _Prepared, draws: int) -> RegressionData:
    """The fit by adaptive Gauss–Hermite quadrature (:mod:`poolwise.glmm.aghq`), as one chain of
    independent draws; raises :class:`~poolwise.glmm.aghq.Declined` where it does not apply."""
    start = time.perf_counter()
    rng = np.random.default_rng([model.seed, 7])
    samples, facts, notes = fit_aghq(model.cells, model.design, model.plan, draws, rng)
    for m in notes:
        warnings.warn(m, PoolwiseWarning, stacklevel=4)
    model.messages.extend(notes)
    info = {"seconds": time.perf_counter() - start, "cells": model.design.n_cells, **facts}
    what = "binomial" if model.cells.likelihood == "binomial" else "poisson"
    reason = (
        f"one scalar grouping factor of a {what} regression: each level's effect integrated by "
        f"adaptive Gauss–Hermite, {facts['nodes']} nodes; the common effects Gaussian given the "
        "group sd (Laplace on that exact likelihood); the sd by adaptive quadrature"
    )
    return _record(
        model,
        {k: v[None] for k, v in samples.items()},
        "laplace",
        reason,
        info,
        lambda table, sd_terms: boundary_notes(sd_terms),
    )


def fit_from_api(
    formula: str,
    data: Any,
    *,
    family: str | None,
    exposure: str | None,
    pooling: str,
    method: str,
    priors: dict | None,
    draws: int,
    hdi_prob: float,
    seed: int | None,
    **nuts: Any,
) -> FitData:
    """The formula door of :func:`poolwise.fit`: one factor with an intercept only goes to the
    one-factor engines (the same numbers as ``fit(data, group=...)``), unless NUTS is asked for
    (``method="nuts"`` or any of its options in ``nuts``); with ``"laplace"`` or ``"auto"``, one
    scalar factor of a binomial or poisson regression goes to adaptive Gauss–Hermite quadrature
    (:mod:`poolwise.glmm.aghq`); the rest goes to NUTS."""
    if data is None:
        raise TypeError("fit(formula, data=...): give the data with data=")
    spec = parse_formula(formula, family, exposure)
    if nuts and (method == "laplace" or (method in ("exact", "eb") and spec.intercept_only_factor)):
        raise TypeError(
            f"fit: {', '.join(nuts)} not used by method={method!r} (they apply to NUTS); "
            "leave them out or pass method='nuts'"
        )
    one_factor = spec.intercept_only_factor is not None and not nuts
    if method in ("exact", "eb", "auto") and one_factor:
        columns = dict(spec.response)
        name = spec.family
        stats = reduce(data, spec.intercept_only_factor, name, columns)
        return fit_groups(
            stats,
            name,
            pooling=pooling,
            method=method,
            priors=priors,
            draws=draws,
            hdi_prob=hdi_prob,
            seed=seed,
        )
    if method in ("exact", "eb"):
        raise ValueError(
            f"method={method!r} fits one grouping factor with an intercept only, "
            f"'y ~ 1 + (1|g)'; {formula!r} needs method='nuts' (or 'auto')"
        )
    if method not in ("auto", "nuts", "laplace"):
        raise ValueError(
            f"method must be one of 'auto', 'exact', 'eb', 'laplace', 'nuts', got {method!r}"
        )
    if pooling != "partial":
        raise ValueError(
            f"pooling={pooling!r}: a formula fit by NUTS pools partially; for no pooling write "
            "the factor as a common term (y ~ 0 + C(g)), for complete pooling leave it out"
        )
    return fit_formula(
        formula,
        data,
        family=family,
        exposure=exposure,
        priors=priors,
        draws=draws,
        hdi_prob=hdi_prob,
        seed=seed,
        spec=spec,
        method="nuts" if nuts else method,
        **nuts,
    )
