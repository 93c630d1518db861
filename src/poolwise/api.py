"""fit(): columns → family; data → group statistics → model → engine → PoolFit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .data import GroupStats, reduce
from .engines.eb import PointPosterior, fit_eb
from .engines.exact import GridPosterior, fit_exact
from .families import FAMILIES, Family
from .intervals import hdi_from_draws, hdi_moments
from .location import ExpandedPosterior, collapse_location
from .marginals import (
    TAIL_AT,
    group_intervals,
    hyper_marginals,
    missing_moments,
    theta_mixture,
)
from .model import PoolModel, build_model
from .results import PoolFit

METHODS = ("auto", "exact", "eb")
# beyond this many groups, "auto" uses empirical Bayes: the hyperparameter posterior is then so
# narrow that conditioning on its mode changes nothing visible, and the grid would cost seconds
AUTO_EB_GROUPS = 20_000
THETA_CHUNK = 4096
# (points x groups) elements per pass of the groups' moments: one pass for all but the largest
# grids (its few large arrays, reused by the group HDIs' smaller ones, keep the allocator from
# mapping those afresh at every fit)
MOMENT_CHUNK = 1 << 22
THETA_KIND = {"normal": "normal", "normal_se": "normal", "binomial": "beta", "poisson": "gamma"}


class PoolwiseWarning(UserWarning):
    """A problem with a fit that the user should know about (also listed in ``fit.warnings``)."""


def family_for(
    y: str | None,
    se: str | None,
    successes: str | None,
    trials: str | None,
    counts: str | None,
    exposure: str | None,
    n: str | None = None,
    sd: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The family implied by the columns named, and the role → column mapping.

    Example
    -------
    >>> family_for("mean", None, None, None, None, None, n="size", sd="sd")
    ('normal', {'y': 'mean', 'n': 'size', 'sd': 'sd'})
    """
    given = {
        k: v
        for k, v in dict(
            y=y,
            se=se,
            successes=successes,
            trials=trials,
            counts=counts,
            exposure=exposure,
            n=n,
            sd=sd,
        ).items()
        if v is not None
    }
    options = [
        ("binomial", {"successes", "trials"}, set()),
        ("poisson", {"counts"}, {"exposure"}),
        ("normal_se", {"y", "se"}, set()),
        ("normal", {"y", "n", "sd"}, set()),
        ("normal", {"y"}, set()),
    ]
    for name, required, optional in options:
        if required <= set(given) and set(given) <= required | optional:
            return name, given
    raise TypeError(
        "name the outcome columns of one family: y (normal rows), y with n and sd (normal, one "
        "row per group of its size, mean and sd), y and se (known standard errors), successes "
        "and trials (binomial), or counts with optional exposure (Poisson); "
        f"got {', '.join(f'{k}={v!r}' for k, v in given.items()) or 'none'}"
    )


def fit(
    spec: Any = None,
    data: Any = None,
    *,
    group: str | None = None,
    y: str | None = None,
    se: str | None = None,
    successes: str | None = None,
    trials: str | None = None,
    counts: str | None = None,
    exposure: str | None = None,
    n: str | None = None,
    sd: str | None = None,
    pooling: str = "partial",
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    family: str | None = None,
    parametrization: str = "auto",
    chains: int = 4,
    tune: int = 1000,
    target_accept: float = 0.8,
    progress: bool = True,
) -> PoolFit:
    """Fit a no-, complete- or partial-pooling model of one grouping factor.

    ``spec`` is the data (a dataframe or a path). The family follows from the columns named: ``y`` alone → normal rows with an unknown
    within-group sd; ``y`` and ``se`` → estimates with known standard errors; ``successes`` and
    ``trials`` → binomial with a beta population; ``counts`` (and ``exposure``) → Poisson with a
    gamma population. Several rows of a group are combined, so a table of per-group totals
    (successes and trials, counts and exposure) is read as it is. Normal data summarised per
    group (or per part of a group) are read with ``y`` naming the mean column, ``n`` the number of
    observations and ``sd`` their sample standard deviation (ddof=1; may be missing where n is 1):
    ``fit(summary, group="school", y="mean", n="n", sd="sd")`` gives the same fit as the raw rows.

    ``spec`` may be pandas, polars (eager or lazy), pyarrow, a DuckDB relation, a Spark or Dask
    DataFrame, or a path, glob or list of CSV or Parquet files (read by DuckDB, out of core): the
    group-by runs in that engine and only per-group statistics reach Python.

    ``spec`` may instead be a formula, ``poolwise.fit("p(k, n) ~ 1 + x + (1|g)", data=df)``:
    a regression with group-specific effects fitted by NUTS (``family``, ``exposure``,
    ``parametrization``, ``chains``, ``tune``, ``target_accept``, ``progress``; see
    :func:`poolwise.glmm.fit_formula`); ``"y ~ 1 + (1|g)"`` goes to the one-factor engines.

    ``priors`` maps hyperparameter names to priors (``poolwise.HalfCauchy(5)``) or numbers (which
    fix them); missing ones get weakly informative defaults scaled to the data. ``method`` is
    ``"exact"`` (quadrature over the hyperparameters), ``"eb"`` (marginal maximum likelihood, MAP
    when priors are given) or ``"auto"``.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"school": list("ABCDEFGH"),
    ...                    "y": [28, 8, -3, 7, -1, 1, 18, 12],
    ...                    "se": [15, 10, 16, 11, 9, 11, 10, 18]})
    >>> fit = poolwise.fit(df, group="school", y="y", se="se", seed=1,
    ...                    priors={"mu": poolwise.Normal(0, 5), "tau": poolwise.HalfCauchy(5)})
    >>> round(float(fit.population.loc["mu", "mean"]), 2)
    4.4
    """
    if isinstance(spec, str) and "~" in spec:  # a formula: see poolwise.glmm
        from .glmm.fit import fit_from_api

        return fit_from_api(
            spec,
            data,
            family=family,
            exposure=exposure,
            pooling=pooling,
            method=method,
            priors=priors,
            draws=draws,
            hdi_prob=hdi_prob,
            seed=seed,
            parametrization=parametrization,
            chains=chains,
            tune=tune,
            target_accept=target_accept,
            progress=progress,
        )
    if spec is None:
        spec = data
    elif data is not None:
        raise TypeError("fit(data, group=...): pass the data once, positionally or as data=")
    if group is None:
        raise TypeError("fit: name the grouping column with group=")
    family_name, columns = family_for(y, se, successes, trials, counts, exposure, n, sd)
    stats = reduce(spec, group, family_name, columns)
    return fit_stats(
        stats,
        family_name,
        pooling=pooling,
        method=method,
        priors=priors,
        draws=draws,
        hdi_prob=hdi_prob,
        seed=seed,
    )


@dataclass
class Run:
    """What one engine run produced (kept apart so that ``compare`` can reuse it)."""

    model: PoolModel
    posterior: GridPosterior | ExpandedPosterior | PointPosterior
    method: str
    reason: str
    warnings: list[str]
    # slope of the log density far up each hyperparameter's heavy upper tail, and whether it
    # holds mass worth a warning (see _heavy_tails)
    tails: dict[str, tuple[float, bool]] = field(default_factory=dict)


def _check_options(method: str, draws: int, hdi_prob: float, seed: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if not (isinstance(hdi_prob, float | int) and 0 < hdi_prob < 1):
        raise ValueError(f"hdi_prob must lie strictly between 0 and 1, got {hdi_prob!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")


def run_engine(family: Family, stats: dict, pooling: str, method: str, priors: dict | None) -> Run:
    """Build the model and run the chosen engine on it."""
    model = build_model(family, stats, pooling, priors)
    n_groups = model.n_groups
    if method == "auto":
        if model.dim == 0:
            method, reason = "exact", "no free hyperparameters: the posterior is closed-form"
        elif n_groups > AUTO_EB_GROUPS:
            method = "eb"
            reason = (
                f"{n_groups} groups > {AUTO_EB_GROUPS}: the hyperparameters are pinned down "
                "by the data, so their point estimate suffices"
            )
        else:
            method = "exact"
            reason = f"{n_groups} groups: quadrature over {model.dim} hyperparameter(s)"
    else:
        reason = "chosen by the user"
    notes: list[str] = _normal_rows_notes(model)
    tails: dict[str, tuple[float, bool]] = {}
    if method == "exact":
        collapsed = collapse_location(model)
        if collapsed is None:
            posterior = fit_exact(model.log_posterior, model.initial_point(), model.names)
            tails = _heavy_tails(model.log_posterior, posterior, model, model.names)
        else:
            reduced = fit_exact(collapsed.log_posterior, collapsed.initial_point(), collapsed.names)
            posterior = ExpandedPosterior(reduced, collapsed)
            tails = _heavy_tails(collapsed.log_posterior, reduced, model, collapsed.names)
        notes += [_tail_note(name, slope) for name, (slope, held) in tails.items() if held]
    else:
        if model.user_priors:

            def objective(z):
                return model.log_likelihood(z) + model.log_prior(z, jacobian=False)
        else:
            objective = model.log_likelihood
        posterior = fit_eb(objective, model.initial_point())
        if posterior.boundary and reason != "chosen by the user":
            # a singular eb fit pools the groups completely and its group intervals collapse:
            # simulation-based calibration finds them far too narrow (CALIBRATION.md)
            run = run_engine(family, stats, pooling, "exact", priors)
            edge = ", ".join(model.names[i] for i in posterior.boundary)
            run.reason = (
                f"{n_groups} groups, but empirical Bayes put {edge} at the edge of its range "
                "(a singular fit, whose group intervals are too narrow): quadrature instead"
            )
            return run
        for i in posterior.boundary:
            notes.append(
                f"{model.names[i]} was estimated at the edge of its range (between-group variation "
                "near zero or infinite concentration, like lme4's singular fit): the groups look "
                "completely pooled; prefer method='exact' to see the uncertainty"
            )
    return Run(model, posterior, method, reason, posterior.warnings + notes, tails)


def _heavy_tails(
    log_density, grid: GridPosterior, model: PoolModel, names
) -> dict[str, tuple[float, bool]]:
    """Positive hyperparameters whose upper tail is too heavy for a finite mean or sd: the slope
    of the log density there, and whether the tail holds mass worth a warning.

    On the log scale z the mean of x = e^z exists only if the density falls faster than e^-z: the
    slope of the log density far above the mode must stay below -1 (below -2 for the sd). Where
    it does not, the moment does not exist, however little mass the tail holds (a concentration
    under a Lomax(0.5) prior, say, whose own mean is infinite): the tables show it as missing.
    A tail that holds negligible mass there (under e^-20 of the peak density, e^30-fold above the
    mode, and beyond the grid) leaves the median and HDI untouched, and is not warned about.
    """
    tails = {}
    mode = grid.mode
    reach = grid.points.max(axis=0) - mode
    top = log_density(mode[None, :])[0]
    for i, name in enumerate(names):
        t = model.transforms[model.names.index(name)]
        if not (np.isfinite(t.lower) and np.isinf(t.upper)):
            continue
        step = np.zeros((2, mode.size))
        step[0, i], step[1, i] = TAIL_AT, 2 * TAIL_AT
        lp = log_density(mode + step)
        slope = (lp[1] - lp[0]) / TAIL_AT
        held = lp[0] - top > -20.0 or reach[i] > TAIL_AT
        if np.isfinite(slope) and slope > -2.0:
            tails[name] = (float(slope), bool(held))
    return tails


def _tail_note(name: str, slope: float) -> str:
    missing = "mean and sd do" if slope > -1.0 else "sd does"
    return (
        f"the posterior of {name} has so heavy an upper tail (density ~ {name}^{slope - 1:.2f}) "
        f"that its {missing} not exist: the tables show them as missing (NaN) for {name} and "
        "what derives from it; read its median and HDI instead"
    )


def _normal_rows_notes(model: PoolModel) -> list[str]:
    """Normal rows: refuse data with no within-group spread; say when sigma rests on the priors."""
    if model.family.name != "normal" or "sigma" not in model.names:
        return []
    n, m2 = np.asarray(model.stats["n"]), np.asarray(model.stats["m2"])
    if np.all(n == 1):
        return [
            "every group has a single observation, so the within-group sd (sigma) cannot be "
            "told apart from the between-group sd (tau): the spread of the pooled groups fixes "
            "tau² + sigma², and how it splits between them follows their priors"
        ]
    if not np.any(m2 > 0):
        raise ValueError(
            "y: the values are identical within every group that has more than one row, so the "
            "within-group sd (sigma) would be estimated as zero and the posterior is improper; "
            "give sigma a fixed value (priors={'sigma': ...}) or check the column"
        )
    return []


def fit_stats(
    stats: GroupStats,
    family: str,
    *,
    pooling: str = "partial",
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
) -> PoolFit:
    """Fit from per-group statistics already reduced (see :func:`poolwise.data.reduce`)."""
    _check_options(method, draws, hdi_prob, seed)
    run = run_engine(FAMILIES[family](), stats.stats, pooling, method, priors)
    return summarize(run, stats, draws=draws, hdi_prob=hdi_prob, seed=seed)


def _theta_draws(model: PoolModel, z: np.ndarray, seed: int, start: int, stop: int) -> np.ndarray:
    """theta draws for groups [start, stop): fixed chunks, each with its own random stream."""
    out = []
    for c0 in range(start - start % THETA_CHUNK, stop, THETA_CHUNK):
        rng = np.random.default_rng([seed, 1, c0 // THETA_CHUNK])
        chunk = model.sample_theta(z, rng, slice(c0, min(c0 + THETA_CHUNK, model.n_groups)))
        lo, hi = max(start - c0, 0), min(stop - c0, chunk.shape[1])
        out.append(chunk[:, lo:hi])
    return np.concatenate(out, axis=1)


def _group_moments(run: Run):
    """Exact posterior mean, variance and mean shrinkage of each distinct theta_j (a mixture)."""
    conditional, grid = theta_mixture(run.model, run.posterior)
    points, weights = grid.points, grid.weights
    j = run.model.multiplicity.size
    s1, s2, sb = np.zeros(j), np.zeros(j), np.zeros(j)
    center = None  # moments about a point near the mean: no cancellation when |theta| >> sd
    step = max(1, MOMENT_CHUNK // max(j, 1))
    for k0 in range(0, len(weights), step):
        w = weights[k0 : k0 + step, None]
        m, v, b = conditional(points[k0 : k0 + step])
        if center is None:
            center = m[np.argmax(w[:, 0])]
        d = m - center  # below, in place: fresh (points x groups) arrays cost as much as sums
        b *= w
        sb += b.sum(axis=0)
        s1 += np.multiply(w, d, out=b if b.shape == d.shape else None).sum(axis=0)
        d *= d
        d += v
        d *= w
        s2 += d.sum(axis=0)
    return s1 + center, np.maximum(s2 - s1**2, 0.0), sb


def _population(run: Run, prob: float, rng) -> pd.DataFrame:
    """The hyperparameters' table: mean, sd (missing where they do not exist), median and HDI."""
    model, post = run.model, run.posterior
    names = [n for n in model.family.supports if n in model.params(post.points[:1])]
    rows = {}
    if isinstance(post, PointPosterior):
        interval_z = post.sample_normal(rng, 4000) if model.dim else post.points
        p_draw = model.params(interval_z)
        p_hat = model.params(post.points)
        for n in names:
            est = float(p_hat[n][0, 0])
            draws_n = p_draw[n][:, 0]
            lo, hi = hdi_from_draws(draws_n[:, None], prob)
            sd = _delta_se(model, post, n)
            rows[n] = (est, sd, est, float(lo[0]), float(hi[0]))
    else:
        p_grid = model.params(post.points)
        marginals = hyper_marginals(model, post, names, prob)
        missing = missing_moments(model, post, run.tails, names)
        for n in names:
            g = p_grid[n][:, 0]
            mean = float(post.weights @ g)
            sd = float(np.sqrt(max(post.weights @ (g - mean) ** 2, 0.0)))
            no_mean, no_sd = missing[n]
            rows[n] = (np.nan if no_mean else mean, np.nan if no_sd else sd, *marginals[n])
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=["mean", "sd", "median", "hdi_low", "hdi_high"]
    )
    table.index.name = "hyperparameter"
    return table


def _delta_se(model: PoolModel, post: PointPosterior, name: str) -> float:
    """Standard error of a hyperparameter estimate by the delta method (0 when it is fixed)."""
    if model.dim == 0:
        return 0.0
    step = 1e-6
    base = model.params(post.points)[name][0, 0]
    grad = np.array(
        [
            (model.params(post.points + step * np.eye(model.dim)[i])[name][0, 0] - base) / step
            for i in range(model.dim)
        ]
    )
    return float(np.sqrt(max(grad @ post.cov @ grad, 0.0)))


def summarize(
    run: Run, stats: GroupStats, *, draws: int, hdi_prob: float, seed: int | None
) -> PoolFit:
    """Tables, draws and warnings of a finished engine run, as a :class:`PoolFit`."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    model, post = run.model, run.posterior
    rng = np.random.default_rng([seed, 0])
    z_draws = post.sample(rng, draws)
    mean, var, shrinkage = _group_moments(run)
    j = model.n_groups
    population = _population(run, hdi_prob, np.random.default_rng([seed, 3]))
    kind = THETA_KIND[model.family.name]
    if isinstance(post, PointPosterior):
        lo, hi = hdi_moments(kind, mean, var, hdi_prob)
    elif model.pooling == "complete" and model.dim > 0:  # every theta_j is the location
        row = population.loc[model.family.location]
        lo, hi = np.full(mean.size, row["hdi_low"]), np.full(mean.size, row["hdi_high"])
    else:
        lo, hi = group_intervals(model, post, kind, (mean, var), hdi_prob)
    lo, hi = lo[model.inverse], hi[model.inverse]
    mean, var, shrinkage = mean[model.inverse], var[model.inverse], shrinkage[model.inverse]
    family = model.family
    groups = pd.DataFrame(
        {
            "n": family.size(model.stats) if family.name != "normal_se" else np.ones(j, int),
            "raw": family.raw(model.stats),
            "mean": mean,
            "sd": np.sqrt(var),
            "hdi_low": lo,
            "hdi_high": hi,
            "shrinkage": shrinkage,
        },
        index=stats.labels,
    )
    if family.name == "normal_se":
        groups.insert(1, "se", model.stats["se"])
    if family.name in ("binomial", "normal"):
        groups["n"] = groups["n"].astype(np.int64)
    hyper = {k: v[:, 0] for k, v in model.params(z_draws).items()}
    for message in run.warnings:
        warnings.warn(message, PoolwiseWarning, stacklevel=3)
    priors_used: dict = {**model.priors}
    priors_used.update({k: v for k, v in model.constants.items()})
    return PoolFit(
        family=family,
        pooling=model.pooling,
        method=run.method,
        method_reason=run.reason,
        priors=priors_used,
        groups=groups,
        population=population,
        hdi_prob=hdi_prob,
        n_rows=stats.n_rows,
        seed=seed,
        observed=dict(model.stats),
        hyper_draws=hyper,
        theta_draws_fn=lambda: _theta_draws(model, z_draws, seed, 0, j),
        warnings=list(run.warnings),
        info=getattr(post, "info", {}),
    )
