"""Cells: rows with identical covariates, reduced by one group-by in the engine holding the data.

A regression's likelihood depends on the rows only through per-cell sums: successes and trials
(binomial, bernoulli), counts and exposure (Poisson), n, mean and M2 (normal). The group-by runs
through narwhals where the data lives (pandas, polars, pyarrow, DuckDB for paths, ...); only the
cells come back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import narwhals as nw
import numpy as np
import pandas as pd

from ..data import TEXTS, count_rows, row_check_message
from ..families import Binomial
from ..sources import collect, to_frame
from .formula import FormulaSpec

# names of the per-cell statistics; they cannot clash with formula columns (leading "__")
STATS = {
    "binomial": ("__successes", "__trials"),
    "poisson": ("__counts", "__exposure"),
    "normal": ("__n", "__mean", "__m2"),
}


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

    @property
    def likelihood(self) -> str:
        """The family of the cells: bernoulli rows become binomial cells."""
        return "binomial" if self.family == "bernoulli" else self.family

    def stats(self) -> dict[str, np.ndarray]:
        """The statistics as float64 arrays, by short name."""
        return {name[2:]: self.table[name].to_numpy(np.float64) for name in STATS[self.likelihood]}


def _check(frame, spec: FormulaSpec) -> tuple[str, ...]:
    """Check the columns and rows; the keys of the cells."""
    schema = frame.collect_schema()
    for role, col in spec.response.items():
        if col not in schema:
            raise ValueError(
                f"{role}: no column {col!r} in the data; columns are {', '.join(map(repr, schema))}"
            )
    keys = spec.keys(list(schema))
    for role, col in spec.response.items():
        dtype = schema[col]
        if spec.family == "bernoulli" and dtype == nw.Boolean:
            continue
        if not dtype.is_numeric() or dtype == nw.Boolean:
            raise TypeError(f"{role}: column {col!r} must be numeric, but it holds {dtype}")
    checks = {}
    for col in {*keys, *spec.response.values()}:
        checks[f"{col}\x00null"] = nw.col(col).is_null()
        if schema[col].is_float():
            checks[f"{col}\x00nonfinite"] = ~nw.col(col).is_finite()
    rules = {
        "successes": ("negative", "fraction"),
        "trials": ("negative", "fraction"),
        "counts": ("negative", "fraction"),
        "exposure": ("negative",),
        "y": ("notbinary",) if spec.family == "bernoulli" else (),
    }
    for role, col in spec.response.items():
        c = nw.col(col)
        if schema[col] == nw.Boolean:
            continue
        for what in rules.get(role, ()):
            if what == "negative":
                checks[f"{col}\x00negative"] = c < 0
            elif what == "fraction" and schema[col].is_float():
                checks[f"{col}\x00fraction"] = (c != c.round(0)) & c.is_finite()
            elif what == "notbinary":
                checks[f"{col}\x00notbinary"] = (c != 0) & (c != 1)
    # the binomial family's own check of its rows: successes above trials
    (excess,) = Binomial.row_checks
    if spec.family == "binomial":
        checks["\x00excess"] = excess.bad(lambda role: nw.col(spec.response[role]))
    rows, counts = count_rows(frame, checks)
    if rows == 0:
        raise ValueError("data: the table has no rows")
    problems = []
    for key, count in counts.items():
        col, what = key.split("\x00")
        if what == "excess":
            problems.append(row_check_message(excess, dict(spec.response), count, rows))
        else:
            problems.append(f"column {col!r} has {TEXTS[what]} in {count} of {rows} rows")
    if problems:
        raise ValueError("; ".join(problems))
    return keys


def _aggregations(spec: FormulaSpec) -> list:
    r = spec.response
    if spec.family == "binomial":
        return [
            nw.col(r["successes"]).sum().alias("__successes"),
            nw.col(r["trials"]).sum().alias("__trials"),
            nw.len().alias("__rows"),
        ]
    if spec.family == "bernoulli":
        return [
            nw.col("__y01").sum().alias("__successes"),
            nw.len().alias("__trials"),
            nw.len().alias("__rows"),
        ]
    if spec.family == "poisson":
        exposure = nw.col(r["exposure"]).sum() if "exposure" in r else nw.len()
        return [
            nw.col(r["counts"]).sum().alias("__counts"),
            exposure.alias("__exposure"),
            nw.len().alias("__rows"),
        ]
    y = nw.col(r["y"])
    return [
        nw.len().alias("__n"),
        y.mean().alias("__mean"),
        y.var(ddof=0).alias("__var"),
        nw.len().alias("__rows"),
    ]


def reduce_cells(data: Any, spec: FormulaSpec) -> Cells:
    """Validate the columns of ``spec`` and reduce ``data`` to cells of identical key columns.

    The rows are read once for checks and once for the group-by, both by the library that holds
    them; the cells come back as a small pandas table sorted by the keys.
    """
    frame = to_frame(data)
    keys = _check(frame, spec)
    aggs = _aggregations(spec)
    if spec.family == "bernoulli":  # a plain column, so that every aggregation stays simple
        frame = frame.with_columns(nw.col(spec.response["y"]).cast(nw.Int64).alias("__y01"))
    grouped = frame.group_by(*keys).agg(aggs) if keys else frame.select(aggs)
    table = collect(grouped)
    for key in keys:
        if isinstance(table[key].dtype, pd.CategoricalDtype):
            table[key] = table[key].astype(table[key].cat.categories.dtype)
    if keys:
        table = table.sort_values(list(keys), kind="stable").reset_index(drop=True)
    if spec.family == "poisson":
        table["__exposure"] = table["__exposure"].astype(np.float64)
    if spec.family == "normal":
        table["__m2"] = table.pop("__var").fillna(0.0).to_numpy(np.float64) * table["__n"]
    if spec.family == "binomial" and (table["__trials"] <= 0).all():
        raise ValueError(f"trials: column {spec.response['trials']!r} has no trials at all")
    n_rows = int(table["__rows"].sum())
    return Cells(table, spec.family, n_rows)
