"""Cells: rows with identical covariates, reduced by one group-by in the engine holding the data.

A regression's likelihood depends on the rows only through per-cell sums: successes and trials
(binomial, bernoulli), counts and exposure (Poisson), n, mean and M2 (normal). The group-by runs
through narwhals where the data lives (pandas, polars, pyarrow, DuckDB for paths, ...); only the
cells come back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import rows as shared
from .._lazy import narwhals as nw
from ..families import Family, family_of
from ..sources import to_frame
from .formula import FormulaSpec


@dataclass(frozen=True)
class Cells:
    """The cell table (key columns plus statistics, sorted by the keys) and the row count.

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.formula import parse_formula
    >>> df = pd.DataFrame({"x": [0, 1, 0, 1], "y": [1, 0, 1, 1]})
    >>> c = reduce_cells(df, parse_formula("y ~ x", family="bernoulli"))
    >>> c.table[["x", "__successes", "__trials"]].values.tolist()
    [[0, 2, 2], [1, 1, 2]]
    """

    table: pd.DataFrame
    family: str
    n_rows: int
    # the statistics' arrays, read from the table once (see stats)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def likelihood(self) -> str:
        """The family of the cells: bernoulli rows become binomial cells."""
        return _likelihood(self.family)

    def stats(self) -> dict[str, np.ndarray]:
        """The statistics as float64 arrays, by short name (those of the one-factor family of
        the same likelihood; in the table with a leading ``__``, which no formula column has);
        read once, each call a new dict of them."""
        if not self._arrays:
            names = family_of(self.likelihood).statistics
            arrays = {name: self.table[f"__{name}"].to_numpy(np.float64) for name in names}
            for a in arrays.values():
                a.flags.writeable = False
            self._arrays.update(arrays)
        return dict(self._arrays)


def _likelihood(family: str) -> str:
    return "binomial" if family == "bernoulli" else family


def _columns(spec: FormulaSpec) -> tuple[Family, dict[str, str]]:
    """The one-factor family whose statistics the cells hold, and its role → column mapping
    (a bernoulli row is one trial whose successes are its 0/1 response)."""
    family = family_of(_likelihood(spec.family))
    if spec.family == "bernoulli":
        return family, {"successes": "__y01", "trials": "__one"}
    return family, dict(spec.response)


def _check(frame, spec: FormulaSpec, family: Family, columns: dict[str, str]) -> tuple[str, ...]:
    """Check the columns and rows (``columns``: the family's roles; ``frame`` a narwhals frame,
    or rows that numpy checks); the keys of the cells."""
    rows = frame if isinstance(frame, shared.InMemory) else None
    schema = frame.collect_schema()
    for role, col in spec.response.items():
        if col not in schema:
            raise ValueError(
                f"{role}: no column {col!r} in the data; columns are {', '.join(map(repr, schema))}"
            )
    keys = spec.keys(list(schema))
    for role, col in spec.response.items():
        dtype = schema[col]
        if spec.family == "bernoulli" and dtype.is_boolean():
            continue
        if not dtype.is_numeric() or dtype.is_boolean():
            raise TypeError(f"{role}: column {col!r} must be numeric, but it holds {dtype}")
    column = nw.col if rows is None else rows.col
    checks: dict[tuple[str, str], Any] = {}
    for col in {*keys, *spec.response.values()}:
        checks[col, "null"] = column(col).is_null()
        if schema[col].is_float():
            checks[col, "nonfinite"] = ~column(col).is_finite()
    roles = family.layouts[0].roles
    for role, col in spec.response.items():
        c = column(col)
        if schema[col].is_boolean():
            continue
        if spec.family == "bernoulli":
            checks[col, "notbinary"] = (c != 0) & (c != 1)
            continue
        for what, e in shared.rule_checks(c, roles[role], schema[col].is_float()).items():
            checks[col, what] = e
    if spec.family != "bernoulli":
        # the family's own checks of its rows (successes above trials, ...)
        own = shared.family_checks(family, columns, column)
        checks |= {("", k): e for k, e in own.items()}
    # plain aliases: an engine may refuse odd characters in a column name (polars: a NUL)
    aliases = dict(zip((f"check{i}" for i in range(len(checks))), checks, strict=True))
    exprs = {alias: checks[key] for alias, key in aliases.items()}
    n, counts = shared.count_rows(frame, exprs) if rows is None else rows.count(exprs)
    if n == 0:
        raise ValueError("data: the table has no rows")
    problems = []
    for alias, count in counts.items():
        col, what = aliases[alias]
        if "__check" in what:
            check = family.row_checks[int(what.split("__check")[1])]
            problems.append(shared.row_check_message(check, columns, count, n))
        else:
            problems.append(f"column {col!r} has {shared.TEXTS[what]} in {count} of {n} rows")
    if problems:
        raise ValueError("; ".join(problems))
    return keys


def reduce_cells(data: Any, spec: FormulaSpec) -> Cells:
    """Validate the columns of ``spec`` and reduce ``data`` to cells of identical key columns.

    The rows are read once for checks and once for the group-by, both by the library that holds
    them; the cells come back as a small pandas table sorted by the keys.
    """
    family, columns = _columns(spec)
    lay = family.layouts[0]
    reads = [c for _, c in spec.reads] + list(spec.may_read)
    rows = shared.InMemory.of(data, spec.response.values(), reads)
    frame, columns = shared.with_defaults(to_frame(data) if rows is None else rows, lay, columns)
    keys = _check(frame, spec, family, columns)
    if spec.family == "bernoulli" and rows is not None:
        rows.columns["__y01"] = rows.col(spec.response["y"]).astype(np.int64)
        rows.constant("__one", 1)
    elif spec.family == "bernoulli":  # plain columns, so that every aggregation stays simple
        frame = frame.with_columns(
            nw.col(spec.response["y"]).cast(nw.Int64).alias("__y01"), nw.lit(1).alias("__one")
        )
    if rows is not None:
        table = rows.group(list(keys), lay, columns)
    else:
        table = shared.group_rows(frame, list(keys), lay, columns)
        for key in keys:
            if isinstance(table[key].dtype, pd.CategoricalDtype):
                table[key] = table[key].astype(table[key].cat.categories.dtype)
        if keys:
            table = table.sort_values(list(keys), kind="stable").reset_index(drop=True)
    stats = shared.group_stats(family, lay, table, "cell")
    if spec.family == "binomial" and (stats["trials"] <= 0).all():
        raise ValueError(f"trials: column {spec.response['trials']!r} has no trials at all")
    n_rows = int(table["__rows"].to_numpy().sum())
    # (the columns' arrays: a frame of Series would align their indexes again)
    columns = {k: table[k].array for k in (*keys, "__rows")}
    return Cells(
        pd.DataFrame(columns | {f"__{k}": v for k, v in stats.items()}), spec.family, n_rows
    )
