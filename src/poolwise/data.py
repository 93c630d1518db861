"""The data layer: validate the columns and reduce rows to per-group statistics, engine-side.

The only passes over raw rows are one aggregation (the checks: how many rows are bad, and why) and
one group-by (the statistics), both run by the engine that holds the data — pandas, polars,
pyarrow, DuckDB (also for CSV and Parquet paths), Spark or Dask, through narwhals. Only their
results, one row and one row per group, are collected into Python.
"""

from __future__ import annotations

import functools
import operator
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd

from ._lazy import narwhals as nw
from .families import Family, Layout, family_of
from .rows import (
    TEXTS,
    count_rows,
    family_checks,
    group_rows,
    group_stats,
    row_check_message,
    rule_checks,
    with_defaults,
)
from .sources import (
    ColumnFacts,
    is_path,
    parquet_facts,
    quiet_backends,
    read_path,
    to_frame,
)

__all__ = ["GroupStats", "example_path", "read_path", "reduce"]

Progress = Callable[[str, float | None], None]


@dataclass(frozen=True)
class GroupStats:
    """Per-group sufficient statistics, in a fixed (sorted) group order.

    ``n_rows`` counts the rows read (for the normal family from raw rows: the observations).

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


def example_path(name: str) -> str:
    """Path of a bundled example data set (``eight_schools``, ``pumps``, ``rat_tumors``, ...).

    Example
    -------
    >>> example_path("pumps").endswith("pumps.csv")
    True
    """
    path = files("poolwise") / "examples" / f"{name}.csv"
    if not path.is_file():
        known = sorted(
            p.name[:-4]
            for p in (files("poolwise") / "examples").iterdir()
            if p.name.endswith(".csv")
        )
        raise ValueError(f"no bundled example {name!r}; examples are {', '.join(known)}")
    return str(path)


def layout(family: str | Family, columns: dict[str, str]) -> Layout:
    """How the rows hold the family's data: the family's layout whose roles ``columns`` name
    (normal ``y`` with ``n`` and ``sd`` is per-group summaries).

    Example
    -------
    >>> layout("normal", {"y": "mean", "n": "size", "sd": "sd"}).reduction
    'summaries'
    """
    fam = family_of(family)
    for option in fam.layouts:
        if option.reads(set(columns)):
            return option
    reads = " or ".join(", ".join(option.roles) for option in fam.layouts)
    raise ValueError(
        f"columns: the {fam.name} family reads {reads}, got {', '.join(sorted(columns)) or 'none'}"
    )


def _check_columns(frame, group: str, columns: dict[str, str]) -> None:
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


def _checks(schema, group: str, columns: dict[str, str], family: Family, lay: Layout):
    """Boolean expressions that are true on bad rows, keyed ``role__what``."""
    checks: dict[str, Any] = {"group__null": nw.col(group).is_null()}
    for role, name in columns.items():
        c, rule, is_float = nw.col(name), lay.roles[role], schema[name].is_float()
        missing = (c.is_null() | ~c.is_finite()) if is_float else c.is_null()
        if rule == "sd":
            size = next(r for r, rule in lay.roles.items() if rule == "size")
            checks[f"{role}__missing_sd"] = missing & (nw.col(columns[size]) > 1)
        else:
            checks[f"{role}__{'missing' if is_float else 'null'}"] = missing
        checks.update({f"{role}__{what}": e for what, e in rule_checks(c, rule, is_float).items()})
    return checks | family_checks(family, columns)


# which column facts (from a Parquet file's statistics) rule out each kind of bad value
RULED_OUT: dict[str, Callable[[ColumnFacts], bool]] = {
    "null": lambda f: f.no_nulls,
    "missing": lambda f: f.all_finite,
    "missing_sd": lambda f: f.all_finite,
    "negative": lambda f: f.low >= 0,
    "nonpositive": lambda f: f.low > 0,
    "small": lambda f: f.low >= 1,
}


def _problems(
    frame,
    group: str,
    columns: dict[str, str],
    family: Family,
    lay: Layout,
    facts: dict[str, ColumnFacts],
) -> list[str]:
    """One engine-side pass counting bad rows; the messages, in a fixed order.

    Checks that ``facts`` rule out for every row are left out of the pass. The pass counts the
    rows where any check holds (one aggregate, not one a check); only where there are such rows,
    a second pass counts each check's.
    """
    checks = _checks(frame.collect_schema(), group, columns, family, lay)
    names = {"group": group, **columns}
    for key in list(checks):
        role, what = key.split("__")
        fact = facts.get(names[role])
        if fact is not None and what in RULED_OUT and RULED_OUT[what](fact):
            del checks[key]
    anywhere = {"any": functools.reduce(operator.or_, checks.values())} if checks else {}
    rows, counts = count_rows(frame, anywhere)
    if counts:
        rows, counts = count_rows(frame, checks)
    if rows == 0:
        return ["data: the table has no rows"]
    out = []
    for key, count in counts.items():
        role, what = key.split("__")
        if key == "group__null":
            out.append(f"group: column {group!r} has missing labels in {count} of {rows} rows")
        elif what.startswith("check"):
            check = family.row_checks[int(what[5:])]
            out.append(row_check_message(check, columns, count, rows))
        else:
            out.append(
                f"{role}: column {columns[role]!r} has {TEXTS[what]} in {count} of {rows} rows"
            )
    return out


@contextmanager
def _watch(con: Any, progress: Progress | None, stage: str) -> Iterator[None]:
    """Report ``stage`` to ``progress``, with DuckDB's own completion fraction when it is known."""
    if progress is None:
        yield
        return
    progress(stage, None)
    if con is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            try:
                pct = con.query_progress()
            except Exception:  # the query finished or the connection is busy: keep the bar
                continue
            if pct is not None and pct >= 0:
                progress(stage, min(float(pct), 100.0) / 100.0)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        progress(stage, 1.0)


def reduce(
    data: Any,
    group: str,
    family: str,
    columns: dict[str, str],
    *,
    progress: Progress | None = None,
) -> GroupStats:
    """Validate ``columns`` and reduce the rows of ``data`` to per-group statistics, engine-side.

    ``data`` is a dataframe (pandas, polars eager or lazy, pyarrow, DuckDB, Spark, Dask) or a
    path, glob or list of CSV or Parquet files (read by DuckDB, out of core). ``columns`` maps each
    role the family reads to a column name: normal ``y`` (raw rows) or ``y``, ``n``, ``sd`` (one
    row per group or per part of a group: its size, mean and sample sd, ddof=1); ``y`` and ``se``;
    ``successes`` and ``trials``; ``counts`` and optional ``exposure`` (one unit per row when it
    is left out). Rows of the same group are combined. ``progress``, when given, is called with a
    stage name (``"checking rows"``, ``"grouping"``) and the completed fraction, or None when the
    engine does not tell.

    Example
    -------
    >>> import polars as pl
    >>> rows = pl.LazyFrame({"g": [1, 1, 2, 2], "y": [1.0, 3.0, 5.0, 6.0]})
    >>> stats = reduce(rows, "g", "normal", {"y": "y"})
    >>> stats.stats["mean"].tolist(), stats.stats["m2"].tolist(), stats.n_rows
    ([2.0, 5.5], [2.0, 0.5], 4)
    """
    family = family_of(family)
    lay = layout(family, columns)
    table = _sound_pandas_rows(data, group, columns, lay)
    if table is not None:
        return _stats(family, lay, table, group)
    con, facts = None, {}
    if is_path(data):
        import duckdb

        con = duckdb.connect()
        facts = parquet_facts(data, con)
        if progress is not None:
            con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")
    try:
        with quiet_backends():
            frame = to_frame(data, connection=con)
            _check_columns(frame, group, columns)
            frame, columns = with_defaults(frame, lay, columns)
            with _watch(con, progress, "checking rows"):
                problems = _problems(frame, group, columns, family, lay, facts)
            if problems:
                raise ValueError("; ".join(problems))
            with _watch(con, progress, "grouping"):
                table = group_rows(frame, [group], lay, columns)
    finally:
        if con is not None:
            con.close()
    return _stats(family, lay, table, group)


def _sound_pandas_rows(
    data: Any, group: str, columns: dict[str, str], lay: Layout
) -> pd.DataFrame | None:
    """The group-by of raw normal rows in a pandas frame, by pandas itself (no narwhals to import
    and translate through: the commonest fit, several times faster), as :func:`group_rows` makes
    it; None, for the general path, unless every row is sound (a label, a finite number): that
    path counts the bad rows and says what is wrong."""
    if type(data) is not pd.DataFrame or lay.reduction != "moments" or len(data) == 0:
        return None
    (y,) = columns.values()
    names = data.columns
    if not (isinstance(group, str) and isinstance(y, str) and names.is_unique):
        return None
    if group not in names or y not in names or group == y:
        return None
    values, labels = data[y], data[group]
    if not (isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf"):
        return None
    if labels.isna().any() or not np.isfinite(values.to_numpy()).all():
        return None
    # the keywords narwhals groups pandas rows with
    grouped = values.groupby(labels, sort=False, dropna=False, observed=True)
    table = pd.DataFrame(
        {"__rows": grouped.size(), "__mean": grouped.mean(), "__var": grouped.var(ddof=0)}
    )
    return table.reset_index()


def _stats(family: Family, lay: Layout, table: pd.DataFrame, group: str) -> GroupStats:
    if isinstance(table[group].dtype, pd.CategoricalDtype):
        table[group] = table[group].astype(object)
    table = _sorted(table, group)
    if len(table) < 2:
        raise ValueError(
            f"group: column {group!r} has a single group ({table[group].iloc[0]!r}); "
            "pooling needs at least two groups"
        )
    stats = group_stats(family, lay, table, group)
    _check_groups_hold_data(family.empty_role, stats, table[group])
    n_rows = int(table["__rows"].sum())
    return GroupStats(_labels(table[group]), stats, n_rows, group)


def _labels(column: pd.Series) -> pd.Index:
    """The group labels as an index: whole numbers as int64, others as Python would see them."""
    values = column.to_numpy()
    if values.dtype.kind in "iu":
        return pd.Index(values.astype(np.int64), name=column.name)
    if values.dtype.kind == "f":
        return pd.Index(values.astype(np.float64), name=column.name)
    return pd.Index(column.to_list(), name=column.name)


def _check_groups_hold_data(
    role: str | None, stats: dict[str, np.ndarray], labels: pd.Series
) -> None:
    """A group whose ``role`` (the family's size of its data) is zero holds no data at all."""
    if role is None:
        return
    empty = np.flatnonzero(stats[role] == 0)
    if empty.size:
        shown = ", ".join(repr(v) for v in labels.iloc[empty[:5]])
        more = ", ..." if empty.size > 5 else ""
        raise ValueError(
            f"{role}: {empty.size} of {labels.size} groups have no {role} at all "
            f"({shown}{more}): such a group holds no data and has no raw estimate; drop it, "
            "and use fit.predict() for a group not yet observed"
        )


def _sorted(table: pd.DataFrame, group: str) -> pd.DataFrame:
    """Rows in label order: numbers before strings, each in its natural order."""
    labels = table[group]
    if labels.dtype.kind in "iuf":
        # the labels of a group-by are distinct, so any sort gives the one order
        order = np.argsort(labels.to_numpy(), kind="quicksort")
        return table.take(order).reset_index(drop=True)
    if labels.dtype != object:
        return table.sort_values(group, kind="stable").reset_index(drop=True)
    try:
        key = labels.map(lambda v: (0, v) if not isinstance(v, str) else (1, v))
        order = np.argsort(key.to_numpy(), kind="stable")
    except TypeError:
        order = np.argsort(labels.astype(str).to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)
