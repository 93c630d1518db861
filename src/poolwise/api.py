"""The front door: fit() reads the data, runs a pipeline and returns a result object.

A formula goes to the regression pipeline (:mod:`poolwise.glmm.fit`), a grouping column to the
one-factor pipeline (:mod:`poolwise.onefactor`); both records come back as :class:`PoolFit`
(a :class:`GlmmFit` for a regression).
"""

from __future__ import annotations

from typing import Any

from .data import GroupStats, reduce
from .errors import PoolwiseWarning
from .families import FAMILIES, Family, Layout
from .fitdata import FitData, RegressionData
from .onefactor import fit_groups
from .results import PoolFit


def family_for(**roles: str) -> tuple[str, dict[str, str]]:
    """The registered family whose layout reads exactly the roles named, and the role → column
    mapping. A role no family reads is a TypeError naming it.

    Example
    -------
    >>> family_for(y="mean", n="size", sd="sd")
    ('normal', {'y': 'mean', 'n': 'size', 'sd': 'sd'})
    """
    known = {role for cls in FAMILIES.values() for lay in cls.layouts for role in lay.roles}
    unknown = sorted(set(roles) - known)
    if unknown:
        raise TypeError(
            f"unknown keyword {', '.join(map(repr, unknown))}: no registered family reads such a "
            f"column; the families' columns are {', '.join(sorted(known))}"
        )
    given = {k: v for k, v in roles.items() if v is not None}
    for name, cls in FAMILIES.items():
        if any(lay.reads(set(given)) for lay in cls.layouts):
            return name, given
    shown = [f"{_roles_text(lay)} ({cls.name})" for cls in FAMILIES.values() for lay in cls.layouts]
    raise TypeError(
        f"name the outcome columns of one family: {', '.join(shown)}; "
        f"got {', '.join(f'{k}={v!r}' for k, v in given.items()) or 'none'}"
    )


def _roles_text(lay: Layout) -> str:
    """A layout's roles in words: ``y with n and sd``, ``counts with optional exposure``."""
    first, *rest = lay.required
    more = [" and ".join(rest)] if rest else []
    if lay.optional:
        more.append(f"optional {' and '.join(lay.optional)}")
    return first + (f" with {' and '.join(more)}" if more else "")


def fit(
    spec: Any = None,
    data: Any = None,
    *,
    group: str | None = None,
    pooling: str = "partial",
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    family: str | None = None,
    parametrization: str | None = None,
    chains: int | None = None,
    tune: int | None = None,
    target_accept: float | None = None,
    progress: bool | None = None,
    **roles: str,
) -> PoolFit:
    """Fit a no-, complete- or partial-pooling model of one grouping factor.

    ``spec`` is the data (a dataframe or a path). The family follows from the columns named, each
    by its role as a keyword (the roles of a registered family: see
    :func:`poolwise.families.register_family`): ``y`` alone → normal rows with an unknown
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
    A string is a formula when formulae's parser reads it as one and no such file exists. An
    option the chosen path does not use (``chains`` for a one-factor fit, ``group`` for a
    formula) is a TypeError naming it.

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
    nuts = {
        k: v
        for k, v in dict(
            parametrization=parametrization,
            chains=chains,
            tune=tune,
            target_accept=target_accept,
            progress=progress,
        ).items()
        if v is not None
    }
    if _is_formula(spec):  # a regression: see poolwise.glmm
        from .glmm.fit import fit_from_api

        exposure = roles.pop("exposure", None)
        _refuse("a formula names its columns", {"group": group, **roles})
        return _result(
            fit_from_api(
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
                **nuts,
            )
        )
    _refuse("they apply to a formula fit by NUTS", {"family": family, **nuts})
    if spec is None:
        spec = data
    elif data is not None:
        raise TypeError("fit(data, group=...): pass the data once, positionally or as data=")
    if group is None:
        raise TypeError("fit: name the grouping column with group=")
    family_name, columns = family_for(**roles)
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


def fit_stats(
    stats: GroupStats,
    family: str | Family,
    *,
    pooling: str = "partial",
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
) -> PoolFit:
    """Fit from per-group statistics already reduced (see :func:`poolwise.data.reduce`).

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> from poolwise.data import reduce
    >>> df = pd.DataFrame({"g": ["a", "b"], "k": [2, 8], "n": [10, 10]})
    >>> stats = reduce(df, "g", "binomial", {"successes": "k", "trials": "n"})
    >>> poolwise.fit_stats(stats, "binomial", priors={"a": 5, "b": 5}).groups["mean"].tolist()
    [0.35, 0.65]
    """
    data = fit_groups(
        stats,
        family,
        pooling=pooling,
        method=method,
        priors=priors,
        draws=draws,
        hdi_prob=hdi_prob,
        seed=seed,
    )
    return PoolFit.of(data)


def _is_formula(spec: Any) -> bool:
    """A string with a '~' that names no existing file, and that formulae parses as a formula or
    that does not look like a file name (then parsing it says what is wrong with it)."""
    if not isinstance(spec, str) or "~" not in spec:
        return False
    from pathlib import Path

    from .glmm.formula import is_formula

    path = Path(spec).expanduser()
    if path.exists():
        return False
    return is_formula(spec) or not (path.suffix[1:].isalpha() or "/" in spec or "\\" in spec)


def _refuse(why: str, options: dict[str, Any]) -> None:
    given = [k for k, v in options.items() if v is not None]
    if given:
        raise TypeError(
            f"fit: {', '.join(given)} not used here ({why}); leave "
            f"{'it' if len(given) == 1 else 'them'} out"
        )


def _result(data: FitData) -> PoolFit:
    """The result object of a pipeline's record: a :class:`GlmmFit` for a regression."""
    if isinstance(data, RegressionData):
        from .glmm.results import GlmmFit

        return GlmmFit.of(data)
    return PoolFit.of(data)


__all__ = ["PoolwiseWarning", "family_for", "fit", "fit_stats"]
