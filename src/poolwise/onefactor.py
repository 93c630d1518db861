"""The one-factor pipeline: group statistics → model → engine → :class:`FitData`.

:func:`fit_groups` builds the model of one grouping factor, runs the chosen engine (exact
quadrature or empirical Bayes) and turns its posterior into tables and draws. It reads no
dataframes (:mod:`poolwise.data` reduces them) and makes no result objects (the front door,
:mod:`poolwise.api`, wraps its record as a :class:`poolwise.PoolFit`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._threads import one_blas_thread
from .data import GroupStats
from .engines import ENGINES, Posterior
from .engines.exact import GridPosterior
from .errors import PoolwiseWarning, check_count, check_prob, check_seed
from .families import Family, family_of
from .fitdata import FitData
from .intervals import hdi_moments
from .location import ExpandedPosterior, collapse_location
from .marginals import (
    TAIL_AT,
    group_intervals,
    hyper_marginals,
    hyper_moments,
    missing_moments,
    theta_mixture,
)
from .model import PoolModel, build_model
from .point_marginals import edge_notes, point_rows

METHODS = ("auto", "exact", "eb")
# beyond this many groups, "auto" uses empirical Bayes: the hyperparameter posterior is then so
# narrow that conditioning on its mode changes nothing visible, and the grid would cost seconds
AUTO_EB_GROUPS = 20_000
# (points x groups) elements per pass of the groups' moments: one pass for a few dozen groups
# (whose mu normals the tables then reuse), megabyte arrays for more (a thousand groups' moments
# in one pass of 20 MB arrays took half as long again as in passes of 1 MB)
MOMENT_CHUNK = 1 << 17


@dataclass
class Run:
    """What one engine run produced (kept apart so that ``compare`` can reuse it)."""

    model: PoolModel
    posterior: Posterior
    method: str
    reason: str
    warnings: list[str]
    # slope of the log density far up each hyperparameter's heavy upper tail, and whether it
    # holds mass worth a warning (see _heavy_tails)
    tails: dict[str, tuple[float, bool]] = field(default_factory=dict)


def check_options(method: str, draws: int, hdi_prob: float, seed: int | None) -> None:
    """The options every one-factor fit takes: the engine, the draws kept, the HDI level, the seed.

    Example
    -------
    >>> check_options("nuts", 100, 0.9, 1)
    Traceback (most recent call last):
    ...
    ValueError: method must be one of 'auto', 'exact', 'eb', got 'nuts'
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    check_count("draws", draws)
    check_prob(hdi_prob)
    check_seed(seed)


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
    notes: list[str] = family.notes(model.stats, model.names)
    tails: dict[str, tuple[float, bool]] = {}
    engine = ENGINES[method]
    if method == "exact":
        # a normal population's location integrates out in closed form: quadrature over the rest
        collapsed = collapse_location(model)
        target = model if collapsed is None else collapsed
        reduced = engine(target)
        posterior = reduced if collapsed is None else ExpandedPosterior(reduced, collapsed)
        tails = _heavy_tails(target.log_posterior, reduced, model, target.names)
        notes += [_tail_note(name, slope) for name, (slope, held) in tails.items() if held]
    else:
        posterior = engine(model)
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
        notes += edge_notes(model, posterior)
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


def fit_groups(
    stats: GroupStats,
    family: str | Family,
    *,
    pooling: str = "partial",
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
) -> FitData:
    """Fit one grouping factor from its per-group statistics (see :func:`poolwise.data.reduce`).

    Example
    -------
    >>> import numpy as np, pandas as pd
    >>> stats = GroupStats(pd.Index(["a", "b"], name="g"),
    ...                    {"successes": np.array([2, 8]), "trials": np.array([10, 10])}, 2, "g")
    >>> fit_groups(stats, "binomial", priors={"a": 5, "b": 5}).groups["mean"].round(2).tolist()
    [0.35, 0.65]
    """
    check_options(method, draws, hdi_prob, seed)
    with one_blas_thread():
        run = run_engine(family_of(family), stats.stats, pooling, method, priors)
        return summarize(run, stats, draws=draws, hdi_prob=hdi_prob, seed=seed)


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


def _population(run: Run, prob: float) -> pd.DataFrame:
    """The hyperparameters' table: mean, sd (missing where they do not exist), median and HDI."""
    model, post = run.model, run.posterior
    names = [n for n in model.family.supports if n in model.params(np.zeros((1, model.dim)))]
    rows = {}
    if post.point:
        rows = point_rows(model, post, names, prob)
    else:
        moments = hyper_moments(model, post, names)
        marginals = hyper_marginals(model, post, names, prob)
        missing = missing_moments(model, post, run.tails, names)
        for n in names:
            mean, sd = moments[n]
            no_mean, no_sd = missing[n]
            rows[n] = (np.nan if no_mean else mean, np.nan if no_sd else sd, *marginals[n])
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=["mean", "sd", "median", "hdi_low", "hdi_high"]
    )
    table.index.name = "hyperparameter"
    return table


def summarize(
    run: Run, stats: GroupStats, *, draws: int, hdi_prob: float, seed: int | None
) -> FitData:
    """Tables, draws and warnings of a finished engine run, as a :class:`FitData`."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    model, post = run.model, run.posterior
    rng = np.random.default_rng([seed, 0])
    z_draws = post.sample(rng, draws)
    mean, var, shrinkage = _group_moments(run)
    population = _population(run, hdi_prob)
    kind = model.family.theta_kind
    if post.point:
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
            **family.size_columns(model.stats),
            "raw": family.raw(model.stats),
            "mean": mean,
            "sd": np.sqrt(var),
            "hdi_low": lo,
            "hdi_high": hi,
            "shrinkage": shrinkage,
        },
        index=stats.labels,
    )
    hyper = {k: v[:, 0] for k, v in model.params(z_draws).items()}
    for message in run.warnings:
        warnings.warn(message, PoolwiseWarning, stacklevel=3)
    priors_used: dict = {**model.priors}
    priors_used.update({k: v for k, v in model.constants.items()})
    return FitData(
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
        warnings=tuple(run.warnings),
        info=getattr(post, "info", {}),
        model=model,
        z_draws=z_draws,
    )
