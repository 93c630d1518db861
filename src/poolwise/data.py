"""The data layer: validate the columns and reduce rows to per-group statistics, engine-side.

The only pass over raw rows is one aggregation (checks) and one group-by, both run by the
dataframe library that holds the data (through narwhals); only per-group results are collected.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import narwhals as nw
import numpy as np
import pandas as pd

# which columns each family reads, and what each column must satisfy
ROLES: dict[str, dict[str, str]] = {
    "normal": {"y": "real"},
    "normal_se": {"y": "real", "se": "positive"},
    "binomial": {"successes": "count", "trials": "count"},
    "poisson": {"counts": "count", "exposure": "nonnegative"},
}


@dataclass(frozen=True)
class GroupStats:
    """Per-group sufficient statistics, in a fixed (sorted) group order.

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": ["a", "b", "a"], "k": [1, 2, 3], "n": [4, 5, 6]})
    >>> reduce(df, "g", "binomial", {"successes": "k", "trials": "n"}).stats["trials"].tolist()
    [10, 5]
    """

    labels: pd.Index
    stats: dict[str, np.ndarray]
    n_rows: int
    group: str


def read_path(path: str | os.PathLike) -> nw.LazyFrame:
    """A lazy DuckDB relation over CSV or Parquet files (a path or a glob); nothing is loaded yet.

    Example
    -------
    >>> frame = read_path(example_path("eight_schools"))
    >>> sorted(frame.collect_schema())
    ['school', 'sigma', 'y']
    """
    import duckdb

    text = os.fspath(path)
    lower = text.lower()
    if not glob.glob(text):
        raise ValueError(f"data: no file matches {text!r}")
    con = duckdb.connect()
    if lower.endswith((".parquet", ".pq")):
        rel = con.read_parquet(text)
    elif lower.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
        rel = con.read_csv(text)
    else:
        raise ValueError(f"data: {text!r} is neither a .csv nor a .parquet file")
    return nw.from_native(rel)


def example_path(name: str) -> str:
    """Path of a bundled example data set (``eight_schools``, ``pumps``, ``rat_tumors``, ...)."""
    path = files("poolwise") / "examples" / f"{name}.csv"
    if not path.is_file():
        known = sorted(
            p.name[:-4]
            for p in (files("poolwise") / "examples").iterdir()
            if p.name.endswith(".csv")
        )
        raise ValueError(f"no bundled example {name!r}; examples are {', '.join(known)}")
    return str(path)


def _frame(data: Any) -> nw.DataFrame | nw.LazyFrame:
    if isinstance(data, nw.DataFrame | nw.LazyFrame):
        return data
    if isinstance(data, str | os.PathLike):
        return read_path(data)
    try:
        return nw.from_native(data)
    except TypeError:
        raise TypeError(
            "data must be a dataframe (pandas, polars, pyarrow, DuckDB, Spark or Dask) or a path "
            f"to CSV/Parquet files, got {type(data).__name__}"
        ) from None


def _collect(frame: nw.DataFrame | nw.LazyFrame) -> pd.DataFrame:
    if isinstance(frame, nw.LazyFrame):
        frame = frame.collect()
    return frame.to_pandas()


def _check_columns(frame, group: str, columns: dict[str, str], family: str) -> None:
    schema = frame.collect_schema()
    for role, name in [("group", group), *columns.items()]:
        if not isinstance(name, str):
            raise TypeError(f"{role}: expected a column name (str), got {type(name).__name__}")
        if name not in schema:
            raise ValueError(
                f"{role}: no column {name!r} in the data; "
                f"columns are {', '.join(map(repr, schema))}"
            )
    for role, name in columns.items():
        dtype = schema[name]
        if not dtype.is_numeric() or dtype == nw.Boolean:
            raise TypeError(f"{role}: column {name!r} must be numeric, but it holds {dtype}")


def _problems(frame, group: str, columns: dict[str, str], family: str) -> list[str]:
    schema = frame.collect_schema()
    exprs = [nw.len().alias("__rows"), nw.col(group).is_null().sum().alias("__group_null")]
    for role, name in columns.items():
        c = nw.col(name)
        exprs.append(c.is_null().sum().alias(f"{role}__null"))
        if schema[name].is_float():
            exprs.append((~c.is_finite()).sum().alias(f"{role}__nonfinite"))
        kind = ROLES[family][role]
        if kind == "count":
            exprs.append((c < 0).sum().alias(f"{role}__negative"))
            if schema[name].is_float():
                exprs.append((c != c.round(0)).sum().alias(f"{role}__fraction"))
        elif kind == "nonnegative":
            exprs.append((c < 0).sum().alias(f"{role}__negative"))
        elif kind == "positive":
            exprs.append((c <= 0).sum().alias(f"{role}__nonpositive"))
    if family == "binomial":
        exprs.append(
            (nw.col(columns["successes"]) > nw.col(columns["trials"])).sum().alias("__excess")
        )
    counts = _collect(frame.select(exprs)).iloc[0].fillna(0).astype(int).to_dict()
    rows = counts.pop("__rows")
    if rows == 0:
        return ["data: the table has no rows"]
    out = []
    if counts.pop("__group_null"):
        out.append(
            f"group: column {group!r} has missing labels in {counts.get('__group_null', '')}"
        )
    texts = {
        "null": "missing values",
        "nonfinite": "non-finite values (NaN or ±inf)",
        "negative": "negative values",
        "fraction": "values that are not whole numbers",
        "nonpositive": "values that are zero or negative (a standard error must be positive)",
    }
    for key, count in counts.items():
        if not count:
            continue
        if key == "__excess":
            out.append(
                f"successes: column {columns['successes']!r} exceeds trials column "
                f"{columns['trials']!r} in {count} of {rows} rows"
            )
            continue
        role, what = key.split("__")
        out.append(f"{role}: column {columns[role]!r} has {texts[what]} in {count} of {rows} rows")
    return out


def _aggregations(family: str, columns: dict[str, str]) -> list:
    if family == "normal":
        y = nw.col(columns["y"])
        return [nw.len().alias("n"), y.mean().alias("mean"), y.var(ddof=0).alias("var")]
    if family == "normal_se":
        return [
            nw.len().alias("rows"),
            nw.col(columns["y"]).mean().alias("y"),
            nw.col(columns["se"]).mean().alias("se"),
        ]
    return [nw.len().alias("rows")] + [nw.col(c).sum().alias(role) for role, c in columns.items()]


def _finish(family: str, table: pd.DataFrame, group: str) -> dict[str, np.ndarray]:
    if family == "normal":
        n = table["n"].to_numpy(np.int64)
        var = table["var"].fillna(0.0).to_numpy(np.float64)
        return {"n": n, "mean": table["mean"].to_numpy(np.float64), "m2": var * n}
    if family == "normal_se":
        many = table.loc[table["rows"] > 1, group]
        if len(many):
            raise ValueError(
                f"se: expected one estimate per group, but group {many.iloc[0]!r} has "
                f"{int(table['rows'].max())} rows"
            )
        return {"y": table["y"].to_numpy(np.float64), "se": table["se"].to_numpy(np.float64)}
    out = {}
    for role in ROLES[family]:
        col = table[role]
        kind = ROLES[family][role]
        out[role] = col.round().to_numpy(np.int64) if kind == "count" else col.to_numpy(np.float64)
    return out


def reduce(data: Any, group: str, family: str, columns: dict[str, str]) -> GroupStats:
    """Validate ``columns`` and reduce the rows of ``data`` to per-group statistics.

    ``columns`` maps each role the family reads (``y``, ``se``, ``successes``, ``trials``,
    ``counts``, ``exposure``) to a column name. A Poisson fit without ``exposure`` counts one unit
    of exposure per row.
    """
    frame = _frame(data)
    _check_columns(frame, group, columns, family)
    if family == "poisson" and "exposure" not in columns:
        frame = frame.with_columns(nw.lit(1.0).alias("__exposure"))
        columns = {**columns, "exposure": "__exposure"}
    problems = _problems(frame, group, columns, family)
    if problems:
        raise ValueError("; ".join(problems))
    table = _collect(frame.group_by(group).agg(_aggregations(family, columns)))
    if isinstance(table[group].dtype, pd.CategoricalDtype):
        table[group] = table[group].astype(object)
    table = table.sort_values(group, kind="stable", key=_sort_key).reset_index(drop=True)
    if len(table) < 2:
        raise ValueError(
            f"group: column {group!r} has a single group ({table[group].iloc[0]!r}); "
            "pooling needs at least two groups"
        )
    stats = _finish(family, table, group)
    n_rows = int(table["n"].sum() if family == "normal" else table["rows"].sum())
    return GroupStats(pd.Index(table[group].to_list(), name=group), stats, n_rows, group)


def _sort_key(labels: pd.Series) -> pd.Series:
    try:
        return labels.map(lambda v: (0, v) if not isinstance(v, str) else (1, v))
    except TypeError:
        return labels.astype(str)
