"""The NUTS route of a formula fit: the prepared model → numpyro NUTS → RegressionData."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import PoolwiseWarning, check_count, check_prob, check_seed
from ..fitdata import RegressionData
from ..intervals import hdi_from_draws
from .cells import Cells
from .checks import diagnose, stats_table
from .design import Design
from .formula import FormulaSpec
from .model import ModelPlan, Scales, make_model, prior_scale
from .setup import Prepared, groups_table, prepare

# a full (dense) mass matrix is adapted when the model has at most this many unconstrained
# parameters: it takes the correlations between them into account (on the thread's model, a
# fifth of the leapfrog steps and three times the ESS per draw), and costs O(d²) per step, with
# d(d+1)/2 entries to learn in warm-up, which outweighs that for larger models (radon: slower).
# Not when a group sd is sampled: the effects' scale then changes across the posterior (a
# funnel), which no single linear metric fits (simulation-based calibration of a regression with
# a sampled sd: 78 divergences in 200 fits with a dense matrix, 26 with a diagonal one)
DENSE_MAX = 10


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
    prepared: Prepared | None = None,
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
    >>> fit = fit_formula("y ~ 1 + x + (1|g)", df, priors={"1|g_sigma": 0.5}, seed=1,
    ...                   progress=False)
    >>> round(float(fit.population.loc["x", "mean"]), 0)
    1.0
    """
    for name, value in (("draws", draws), ("chains", chains), ("tune", tune)):
        check_count(name, value)
    if draws < chains:
        raise ValueError(f"draws counts all {chains} chains together: need at least {chains}")
    check_prob(hdi_prob)
    check_seed(seed)
    prep = prepared or prepare(
        formula,
        data,
        family=family,
        exposure=exposure,
        priors=priors,
        parametrization=parametrization,
        spec=spec,
    )
    return _sample(
        prep, draws, tune, chains, target_accept, hdi_prob, seed, progress, dense_mass, chain_method
    )


def _sample(
    prep: Prepared,
    draws: int,
    tune: int,
    chains: int,
    target_accept: float,
    hdi_prob: float,
    seed: int | None,
    progress: bool,
    dense_mass: bool | None,
    chain_method: str,
) -> RegressionData:
    from ..engines.nuts import sample_nuts

    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    cells, design, scales, plan = prep.cells, prep.design, prep.scales, prep.plan
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
        "parametrization": prep.parametrization,
        "centering": prep.notes,
        "divergences": result.divergences,
        "seconds": result.seconds,
        "time_to_first_draw": result.time_to_first_draw,
        "cells": design.n_cells,
        "chains": chains,
        "tune": tune,
        "dense_mass": bool(dense_mass),
        "chain_method": result.info["chain_method"],
    }
    return draws_record(
        prep,
        result.samples,
        hdi_prob,
        int(seed),
        "nuts",
        f"regression with group-specific terms: numpyro NUTS, {chains} chains",
        info,
        divergences=result.divergences,
        sample_stats={"diverging": result.diverging, "tree_depth": result.tree_depth},
    )


def draws_record(
    prep: Prepared,
    samples: dict[str, np.ndarray],
    hdi_prob: float,
    seed: int,
    method: str,
    reason: str,
    info: dict,
    divergences: int = 0,
    sample_stats: dict | None = None,
    mcmc: bool = True,
) -> RegressionData:
    """The fit's record from posterior draws, (chains, draws, ...) per parameter: the tables
    and their diagnostics (``divergences`` among them, warned and kept; a sampler's ESS and
    r_hat where the draws are a Markov chain's, ``mcmc``)."""
    cells, design, plan = prep.cells, prep.design, prep.plan
    messages = list(prep.messages)
    keep = [*design.names]
    for t in design.groups:
        if t.sigma_name in samples:
            keep.append(t.sigma_name)
    keep += [row for block in plan.blocks for row in block.rows]
    if "sigma" in samples:
        keep.append("sigma")
    population_draws = {k: samples[k] for k in keep}
    group_draws = {t.name: samples[t.name] for t in design.groups}
    all_draws = {**population_draws, **group_draws}
    coords = {t.name: t.levels for t in design.groups}
    table = stats_table(all_draws, coords, hdi_prob, mcmc)
    n_total = next(iter(all_draws.values())).shape[:2]
    sd_terms = {
        t.sigma_name: (samples[t.sigma_name], prior_scale(tp.sd_prior))
        for t, tp in zip(design.groups, plan.terms, strict=True)
        if t.sigma_name in samples
    }
    found = diagnose(table, divergences, n_total[0] * n_total[1], sd_terms)
    for m in found:
        warnings.warn(m, PoolwiseWarning, stacklevel=5)
    messages += found
    pop = table.loc[keep].iloc[:, :4].copy()
    pop.columns = ["mean", "sd", "hdi_low", "hdi_high"]
    pop.insert(2, "median", [float(np.median(population_draws[k])) for k in keep])
    pop.index.name = "parameter"
    groups = _levels(cells, design, plan, all_draws, hdi_prob)
    flat = {k: v.reshape(-1) for k, v in population_draws.items()}
    if prep.skipped:
        info["identifiability"] = prep.skipped
    return RegressionData(
        family=prep.family(keep),
        pooling="partial",
        method=method,
        method_reason=reason,
        priors=prep.used,
        groups=groups,
        population=pop,
        hdi_prob=hdi_prob,
        n_rows=cells.n_rows,
        seed=seed,
        observed={k: v for k, v in cells.stats().items()},
        hyper_draws=flat,
        warnings=tuple(messages),
        info=info,
        formula=prep.formula,
        draws=all_draws,
        coords=coords,
        design=design,
        plan=plan,
        divergences=divergences,
        sample_stats=sample_stats or {},
        table=table,
    )


def _levels(cells: Cells, design: Design, plan: ModelPlan, draws: dict, prob: float):
    """The levels' table from the draws (see :func:`poolwise.glmm.setup.groups_table`)."""
    means = {name: float(draws[name].mean()) for name in design.names}
    summaries, sds = {}, {}
    for t, tp in zip(design.groups, plan.terms, strict=True):
        b = draws[t.name].reshape(-1, t.n_levels)
        means[t.name] = b.mean(axis=0)
        summaries[t.name] = (b.mean(axis=0), b.std(axis=0), *hdi_from_draws(b, prob))
        values = draws[t.sigma_name].reshape(-1) if t.sigma_name in draws else np.array([tp.sd])
        sds[t.name] = (values, np.full(values.size, 1.0 / values.size))
    if "sigma" in draws:
        means["sigma2"] = float(np.mean(draws["sigma"] ** 2))
    return groups_table(cells, design, plan, means, summaries, sds)
