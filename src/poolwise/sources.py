"""Where the rows live: any supported input as a lazy narwhals frame, and the collect of results.

Dataframes (pandas, polars eager or lazy, pyarrow, DuckDB, Spark, Dask, and whatever else narwhals
reads) are wrapped, not converted; paths and globs of CSV or Parquet files become DuckDB relations
that read the files only when a query runs. Nothing here imports DuckDB, Spark or Dask until an
input needs it.
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ._lazy import narwhals as nw

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PathLike = str | os.PathLike


def _files(path: PathLike | Sequence[PathLike]) -> tuple[list[str], str]:
    """The path strings DuckDB reads, and their format (``"parquet"`` or ``"csv"``)."""
    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not items:
        raise ValueError("data: expected a path, a glob or a list of paths, got an empty list")
    texts = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(f"data: paths must be strings, got {type(item).__name__}")
        text = os.fspath(item)
        if os.path.isdir(text):
            found = [f for f in glob.glob(os.path.join(text, "**", "*"), recursive=True)]
            kinds = {ext for f in found for ext in PARQUET + CSV if f.lower().endswith(ext)}
            ext = ".parquet" if kinds & set(PARQUET) else ".csv"
            text = os.path.join(text, "**", f"*{ext}")
        if not glob.glob(text, recursive=True):
            raise ValueError(f"data: no file matches {text!r}")
        texts.append(text)
    lower = [t.lower() for t in texts]
    if all(t.endswith(PARQUET) for t in lower):
        return texts, "parquet"
    if all(t.endswith(CSV) for t in lower):
        return texts, "csv"
    raise ValueError(
        f"data: expected .csv or .parquet files (all of one kind), got {', '.join(map(repr, texts))}"
    )


def read_path(path: PathLike | Sequence[PathLike], *, connection: Any = None) -> nw.LazyFrame:
    """A lazy DuckDB relation over CSV or Parquet files; nothing is loaded yet.

    ``path`` is a file, a glob (``"visits/*.parquet"``), a directory (its Parquet files, else its
    CSV files, recursively) or a list of those. ``connection`` is the DuckDB connection to read
    with (a new in-memory one by default).

    Example
    -------
    >>> from poolwise.data import example_path
    >>> frame = read_path(example_path("eight_schools"))
    >>> sorted(frame.collect_schema())
    ['school', 'sigma', 'y']
    """
    import duckdb

    texts, kind = _files(path)
    con = duckdb.connect() if connection is None else connection
    source = texts[0] if len(texts) == 1 else texts
    rel = con.read_parquet(source) if kind == "parquet" else con.read_csv(source)
    return nw.from_native(rel)


@dataclass(frozen=True)
class ColumnFacts:
    """What a Parquet file's own statistics prove of a column, for every row of every file."""

    no_nulls: bool
    all_finite: bool
    low: float  # a lower bound of the values (-inf when the statistics do not give one)


def parquet_facts(path: PathLike | Sequence[PathLike], connection: Any) -> dict[str, ColumnFacts]:
    """Facts on each column from the files' row-group statistics (no rows are read).

    Empty unless ``path`` names Parquet files. A fact holds only where every row group of every
    file records it: a column chunk without statistics proves nothing.

    Example
    -------
    >>> import duckdb, tempfile, os, pyarrow as pa, pyarrow.parquet as pq
    >>> file = os.path.join(tempfile.mkdtemp(), "t.parquet")
    >>> pq.write_table(pa.table({"k": [0, 3], "y": [1.5, None]}), file)
    >>> facts = parquet_facts(file, duckdb.connect())
    >>> facts["k"].no_nulls, facts["k"].low, facts["y"].no_nulls
    (True, 0.0, False)
    """
    texts, kind = _files(path)
    if kind != "parquet":
        return {}
    rows = connection.execute(
        """
        SELECT path_in_schema,
               count(*) = count(stats_null_count) AND coalesce(sum(stats_null_count), 0) = 0,
               count(*) = count(stats_nan_count) AND coalesce(sum(stats_nan_count), 0) = 0,
               count(*) = count(TRY_CAST(stats_min_value AS DOUBLE)),
               min(TRY_CAST(stats_min_value AS DOUBLE)),
               max(TRY_CAST(stats_max_value AS DOUBLE))
        FROM parquet_metadata(?) GROUP BY path_in_schema
        """,
        [texts],
    ).fetchall()
    facts = {}
    for name, no_nulls, no_nans, bounded, low, high in rows:
        known = bounded and low is not None and high is not None
        finite = known and -math.inf < low and high < math.inf
        facts[name] = ColumnFacts(
            no_nulls=bool(no_nulls),
            all_finite=bool(no_nulls and no_nans and finite),
            low=float(low) if known else -math.inf,
        )
    return facts


def is_path(data: Any) -> bool:
    """Whether ``data`` names files (a path, a glob, or a list or tuple of them)."""
    if isinstance(data, str | os.PathLike):
        return True
    return (
        isinstance(data, list | tuple)
        and len(data) > 0
        and all(isinstance(d, str | os.PathLike) for d in data)
    )


@contextmanager
def quiet_backends() -> Iterator[None]:
    """Silence notices the backends raise about their own packaging, not about the data."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Dask support is moving out of Narwhals", category=FutureWarning
        )
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
        )
        yield


def to_frame(data: Any, *, connection: Any = None) -> nw.DataFrame | nw.LazyFrame:
    """``data`` as a narwhals frame, without reading rows into Python.

    Example
    -------
    >>> import pandas as pd
    >>> to_frame(pd.DataFrame({"g": [1, 2]})).implementation.name
    'PANDAS'
    """
    if isinstance(data, nw.DataFrame | nw.LazyFrame):
        return data
    if is_path(data):
        return read_path(data, connection=connection)
    try:
        with quiet_backends():
            frame = nw.from_native(data)
    except TypeError:
        raise TypeError(
            "data must be a dataframe (pandas, polars, pyarrow, DuckDB, Spark or Dask) or a path "
            f"to CSV/Parquet files, got {type(data).__name__}"
        ) from None
    if isinstance(frame, nw.DataFrame) and frame.implementation.is_polars():
        # polars' lazy engine aggregates an in-memory frame about twice as fast as its eager one
        return frame.lazy()
    return frame


def collect(frame: nw.DataFrame | nw.LazyFrame) -> pd.DataFrame:
    """Run a (small) query result and return it as pandas.

    Call it only on results whose size does not grow with the rows: a group-by or an aggregate.
    Spark goes through Arrow, the others straight to pandas.

    Example
    -------
    >>> import polars as pl, narwhals as nw
    >>> collect(nw.from_native(pl.LazyFrame({"a": [1, 2]})).select(nw.col("a").sum()))["a"].item()
    3
    """
    if isinstance(frame, nw.LazyFrame):
        impl = frame.implementation
        backend = "pyarrow" if impl.is_spark_like() else "pandas"
        with quiet_backends():
            frame = frame.collect(backend=backend)
    return frame.to_pandas()
