"""The generative process: population → group parameters → data, and its posterior predictive.

:func:`simulate` runs the hierarchy forwards from hyperparameters (given, or drawn from priors);
:func:`replicate` and :func:`check` run it from a fitted posterior (``fit.simulate()``,
``fit.check()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .families import Family, family_of
from .priors import Prior

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .fitdata import FitData


def _sizes(family: Family, group_sizes: Any) -> tuple[pd.Index, np.ndarray]:
    if isinstance(group_sizes, pd.Series):
        labels, values = pd.Index(group_sizes.index), group_sizes.to_numpy()
    elif isinstance(group_sizes, Mapping):
        labels, values = pd.Index(list(group_sizes)), np.array(list(group_sizes.values()))
    elif isinstance(group_sizes, Sequence | np.ndarray) and not isinstance(group_sizes, str):
        values = np.asarray(group_sizes)
        labels = pd.RangeIndex(len(values))
    else:
        raise TypeError(
            "group_sizes must be a sequence of sizes or a mapping from group label to size, "
            f"got {type(group_sizes).__name__}"
        )
    meaning = family.size_meaning
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"group_sizes: give one size per group ({meaning}); got none")
    if not (np.issubdtype(values.dtype, np.number) and values.dtype != bool):
        raise TypeError(f"group_sizes: sizes must be numbers ({meaning}), got {values.dtype}")
    values = values.astype(float)
    integer = family.integer_sizes
    bad = ~np.isfinite(values) | (values <= 0)
    if integer:
        bad |= values != np.round(values)
    if bad.any():
        first = values[np.argmax(bad)]
        raise ValueError(f"group_sizes: expected {meaning}, got {first:g}")
    if labels.has_duplicates:
        raise ValueError("group_sizes: group labels must be unique")
    return labels, values.astype(np.int64) if integer else values


def _hyperparameters(
    family: Family,
    hyperparameters: Mapping[str, float] | None,
    priors: Mapping[str, Prior] | None,
    rng: np.random.Generator,
) -> dict[str, float]:
    given = dict(hyperparameters or {})
    priors = dict(priors or {})
    family.parametrization(set(priors), "priors")
    chosen = family.parametrization(set(given) | set(priors), "hyperparameters")
    names = (chosen or family.parametrizations[0]) + family.nuisance
    defaults = family.simulation_priors
    values: dict[str, float] = {}
    for name in names:
        lo, hi = family.supports[name]
        if name in given:
            value = given[name]
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(
                    f"hyperparameters[{name!r}] must be a number, got {type(value).__name__}"
                )
            value = float(value)
            if not (math.isfinite(value) and lo <= value <= hi) or (value == lo and name != "tau"):
                raise ValueError(
                    f"hyperparameters[{name!r}] must be finite and inside ({lo:g}, {hi:g}), "
                    f"got {value!r}"
                )
        else:
            prior = priors.get(name, defaults.get(name))
            if prior is None:
                raise ValueError(
                    f"hyperparameters: give {name!r} a value or a prior (the population is "
                    f"parametrized by {', '.join(names)})"
                )
            if not isinstance(prior, Prior):
                raise TypeError(
                    f"priors[{name!r}] must be a poolwise prior, got {type(prior).__name__}"
                )
            if not prior.proper:
                raise ValueError(f"priors[{name!r}]: {prior!r} is improper; nothing to draw from")
            value = float(prior.sample(rng, 1)[0])
        values[name] = value
    full = family.complete({k: np.array([[v]]) for k, v in values.items()})
    return {k: float(np.ravel(full[k])[0]) for k in family.supports if k in full}


def simulate(
    family: str | Family = "binomial",
    hyperparameters: Mapping[str, float] | None = None,
    group_sizes: Sequence[float] | Mapping[Any, float] | pd.Series = (10,) * 6,
    *,
    priors: Mapping[str, Prior] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Simulate grouped data from the hierarchy: hyperparameters → each group's theta → data.

    ``family`` is ``"normal"`` (rows), ``"normal_se"`` (estimates with known standard errors),
    ``"binomial"``, ``"poisson"`` or another registered family (see
    :func:`poolwise.families.register_family`). ``hyperparameters`` may use either parametrization of the
    population (binomial ``phi``/``kappa`` or ``a``/``b``; Poisson ``mu``/``kappa`` or
    ``alpha``/``beta``; normal ``mu``, ``tau`` and, for rows, ``sigma``); any that are missing are
    drawn from ``priors`` (or from weakly informative defaults). ``group_sizes`` gives, per group,
    the rows (normal), the standard error (normal_se), the trials (binomial) or the exposure
    (Poisson); a mapping or Series also names the groups.

    The result has the columns ``group``, the data columns under the names of :func:`poolwise.fit`'s
    arguments (``y``; ``y``, ``se``; ``successes``, ``trials``; ``counts``, ``exposure``) and the
    true ``theta``; normal rows give one row per observation. ``df.attrs["hyperparameters"]``
    holds the values used, in both parametrizations.

    Example
    -------
    >>> from poolwise import simulate
    >>> df = simulate("binomial", {"phi": 0.6, "kappa": 10}, [100, 40, 10, 5, 2, 1], seed=2)
    >>> list(df.columns)
    ['group', 'successes', 'trials', 'theta']
    >>> df.attrs["hyperparameters"]["a"], df["trials"].tolist()
    (6.0, [100, 40, 10, 5, 2, 1])
    """
    fam = family_of(family)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
    labels, sizes = _sizes(fam, group_sizes)
    rng = np.random.default_rng(seed)
    values = _hyperparameters(fam, hyperparameters, priors, rng)
    params = {k: np.array([[v]]) for k, v in values.items()}
    theta = fam.sample_population({k: np.repeat(v, len(sizes), 0) for k, v in params.items()}, rng)
    frame = _data_frame(fam, labels, theta, sizes, rng, params)
    frame.attrs["hyperparameters"] = values
    return frame


def _data_frame(
    fam: Family,
    labels: pd.Index,
    theta: np.ndarray,
    sizes: np.ndarray,
    rng: np.random.Generator,
    params: dict[str, np.ndarray],
) -> pd.DataFrame:
    """One simulated data set (theta is (J,)), laid out as ``fit`` reads it."""
    rows, columns = fam.simulate_rows(theta, sizes, rng, params)
    return pd.DataFrame({"group": labels[rows], **columns, "theta": theta[rows]})


# ----------------------------------------------------------------------- posterior predictive
def _n_draws(fit: FitData) -> int:
    return len(next(iter(fit.hyper_draws.values()))) if fit.hyper_draws else 0


def _draw_index(total: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if draws > total:
        raise ValueError(f"draws: the fit holds {total} posterior draws, got draws={draws}")
    return np.sort(rng.choice(total, size=draws, replace=False))


def _sizes_of(fit: FitData) -> np.ndarray:
    return np.asarray(fit.observed[fit.family.size_stat])


def replicate(fit: FitData, draws: int = 1, seed: int | None = None) -> pd.DataFrame:
    """Replicated data sets from the posterior predictive, laid out like :func:`simulate`'s.

    Each replicate takes one posterior draw of the hyperparameters and of every group's theta, and
    draws new data of the observed sizes (rows, standard errors, trials, exposures). A ``draw``
    column numbers the replicates.

    Example
    -------
    >>> import poolwise
    >>> df = poolwise.simulate("poisson", {"mu": 2, "kappa": 5}, [1.0, 2.0, 4.0], seed=0)
    >>> fit = poolwise.fit(df, group="group", counts="counts", exposure="exposure",
    ...                    priors={"mu": 2, "kappa": 5}, seed=0)
    >>> rep = fit.simulate(draws=2, seed=1)
    >>> list(rep.columns), len(rep)
    (['draw', 'group', 'counts', 'exposure', 'theta'], 6)
    """
    rng = np.random.default_rng([fit.seed if seed is None else seed, 5])
    index = _draw_index(_n_draws(fit), draws, rng)
    theta = fit.theta_draws()[index]
    sizes = _sizes_of(fit)
    labels = fit.groups.index
    frames = []
    for d, k in enumerate(index):
        params = {name: v[k : k + 1, None] for name, v in fit.hyper_draws.items()}
        frame = _data_frame(fit.family, labels, theta[d], sizes, rng, params)
        frame.insert(0, "draw", d)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    return out.rename(columns={"group": fit.groups.index.name or "group"})


def _sd(x: np.ndarray) -> np.ndarray:
    return np.nanstd(x, axis=-1, ddof=1)


STATISTICS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "sd": (_sd, "sd of the raw group estimates"),
    "max": (lambda x: np.nanmax(x, axis=-1), "largest raw group estimate"),
    "min": (lambda x: np.nanmin(x, axis=-1), "smallest raw group estimate"),
    "mean": (lambda x: np.nanmean(x, axis=-1), "mean of the raw group estimates"),
}


@dataclass(frozen=True)
class PredictiveCheck:
    """A posterior predictive check of one statistic of the raw group estimates.

    ``observed`` is the statistic of the data, ``replicated`` its value in each replicated data set
    and ``p_value`` the share of replicates at least as large as the observed value (values near 0
    or 1 say the model does not reproduce this feature of the data).
    """

    statistic: str
    description: str
    observed: float
    replicated: np.ndarray
    p_value: float

    def plot(self, ax: Any = None) -> Figure:
        """Histogram of the replicated statistic with the observed value marked."""
        from .plots import plot_check

        return plot_check(self, ax=ax)

    def __repr__(self) -> str:
        return (
            f"PredictiveCheck({self.description}: observed {self.observed:.4g}, "
            f"replicated mean {np.mean(self.replicated):.4g}, p = {self.p_value:.3f}, "
            f"{len(self.replicated)} replicates)"
        )


def check(
    fit: FitData,
    statistic: str = "sd",
    draws: int = 1000,
    seed: int | None = None,
) -> PredictiveCheck:
    """Posterior predictive check: does the model reproduce the spread of the raw estimates?

    ``statistic`` is computed from the raw group estimates (mean of the rows, the estimate,
    successes/trials or counts/exposure): ``"sd"`` (their spread, the feature that pooling is
    about: too little pooling or too much shows here), ``"max"``, ``"min"`` or ``"mean"``.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> ppc = fit.check(seed=0)
    >>> round(ppc.observed, 3), 0.05 < ppc.p_value < 0.95
    (0.104, True)
    """
    rng, index = _replicates(fit, statistic, draws, seed, _n_draws(fit))
    theta = fit.theta_draws()[index]
    sizes = _sizes_of(fit)
    params = {name: v[index, None] for name, v in fit.hyper_draws.items()}
    data = fit.family.sample_data(theta, sizes[None, :], rng, params)
    observed_raw = fit.family.raw(fit.observed)
    replicated_raw = fit.family.raw(fit.family.data_stats(data, sizes))
    return _compare(statistic, observed_raw, replicated_raw, "group")


def _replicates(
    fit: FitData, statistic: str, draws: int, seed: int | None, total: int
) -> tuple[np.random.Generator, np.ndarray]:
    """The random stream of a check and the posterior draws it replicates at (all of the
    ``total`` where fewer than ``draws``)."""
    if statistic not in STATISTICS:
        raise ValueError(
            f"statistic must be one of {', '.join(map(repr, STATISTICS))}, got {statistic!r}"
        )
    rng = np.random.default_rng([fit.seed if seed is None else seed, 6])
    if isinstance(draws, int | np.integer) and not isinstance(draws, bool) and draws > total:
        draws = total
    return rng, _draw_index(total, draws, rng)


def _compare(statistic: str, observed_raw, replicated_raw, unit: str) -> PredictiveCheck:
    """The check of ``statistic`` of the raw estimates (of each ``unit``: group or cell)."""
    fn, description = STATISTICS[statistic]
    observed = float(fn(observed_raw))
    replicated = np.asarray(fn(replicated_raw), dtype=float)
    return PredictiveCheck(
        statistic=statistic,
        description=description.replace("group", unit),
        observed=observed,
        replicated=replicated,
        p_value=float(np.mean(replicated >= observed)),
    )
