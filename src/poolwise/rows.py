"""One table of row checks and one group-by, for the groups of a factor and the cells of a formula.

A family's :class:`~poolwise.families.Layout` says what each column must satisfy (its rule) and how
rows reduce to statistics; :func:`rule_checks` turns a rule into expressions true on bad rows,
:func:`count_rows` counts them in one pass of the engine that holds the rows, and
:func:`group_rows` runs the layout's aggregations in one group-by there. :mod:`poolwise.data`
(groups) and :mod:`poolwise.glmm.cells` (cells) both read rows through these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._lazy import narwhals as nw
from .families import Family, Layout, RowCheck
from .sources import collect

TEXTS = {
    "null": "missing values",
    "missing": "missing or non-finite values (null, NaN or ±inf)",
    "missing_sd": "missing or non-finite values (null, NaN or ±inf) in rows with n > 1",
    "negative": "negative values",
    "fraction": "values that are not whole numbers",
    "nonpositive": "values that are zero or negative (a standard error must be positive)",
    "small": "values below 1 (each row summarises at least one observation)",
    "nonfinite": "non-finite values (NaN or ±inf)",
    "notbinary": "values other than 0 and 1 (a bernoulli response is 0/1 per row)",
}

# the rules of a layout's roles (see poolwise.families.Layout): the checks each one runs
RULES = {
    "real": (),
    "positive": ("nonpositive",),
    "nonnegative": ("negative",),
    "count": ("fraction", "negative"),
    "size": ("fraction", "small"),
    "sd": ("negative",),
}


def rule_checks(c: Any, rule: str, is_float: bool) -> dict[str, Any]:
    """Expressions true where column ``c`` breaks its ``rule``, by the kind of bad value (missing
    values aside)."""
    checks = {}
    for what in RULES[rule]:
        if what == "fraction":
            if is_float:
                checks["fraction"] = (c != c.round(0)) & c.is_finite()
        else:
            checks[what] = {"negative": c < 0, "nonpositive": c <= 0, "small": c < 1}[what]
    return checks


def family_checks(family: Family, columns: dict[str, str], column: Any = None) -> dict[str, Any]:
    """The family's checks of rows that involve several roles, keyed ``role__check<i>``
    (``column``: a column's expression by name, ``nw.col`` by default)."""
    column = column or nw.col
    return {
        f"{check.role}__check{i}": check.bad(lambda role: column(columns[role]))
        for i, check in enumerate(family.row_checks)
    }


def count_rows(frame, checks: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """One pass of the engine that holds ``frame``: its number of rows, and for each check (an
    expression true on a bad row) the rows where it holds (the checks that hold somewhere)."""
    exprs = [nw.len().alias("__rows")]
    exprs += [e.cast(nw.Int64).sum().alias(key) for key, e in checks.items()]
    counts = collect(frame.select(exprs)).iloc[0].fillna(0).astype(np.int64).to_dict()
    rows = int(counts.pop("__rows"))
    return rows, {key: int(count) for key, count in counts.items() if count}


def key_codes(columns: Iterable[Any], n: int) -> tuple[np.ndarray, list[Any]]:
    """Each of ``n`` rows' code (int64) for its values in ``columns`` (arrays or Series):
    their codes among each column's sorted values (hashed by pandas, then sorted), combined
    lexicographically, the first column most significant; and each column's sorted values.

    Example
    -------
    >>> codes, uniques = key_codes([np.array(["b", "a", "b"]), np.array([2, 1, 1])], 3)
    >>> codes.tolist(), [u.tolist() for u in uniques]
    ([3, 0, 2], [['a', 'b'], [1, 2]])
    """
    codes, uniques = np.zeros(n, dtype=np.int64), []
    for values in columns:
        inverse, unique = pd.factorize(values, sort=True)
        uniques.append(unique)
        codes = codes * len(unique) + inverse
    return codes, uniques


class Values(np.ndarray):
    """A column held in memory, as a numpy array with the expression methods that the row checks
    call besides numpy's operators and ``round``: the checks, written once for ``nw.col``, also
    evaluate on it (see :class:`InMemory`).

    Example
    -------
    >>> c = np.array([1.0, np.nan, 2.5]).view(Values)
    >>> ((c != c.round(0)) & c.is_finite()).tolist(), c.is_null().tolist()
    ([False, False, True], [False, True, False])
    """

    def is_null(self) -> np.ndarray:
        return pd.isna(np.asarray(self))

    def is_finite(self) -> np.ndarray:
        return np.isfinite(np.asarray(self))


@dataclass(frozen=True)
class Kind:
    """A pandas column's type as the checks ask about it (narwhals' dtypes answer the same).

    >>> Kind(np.dtype("float32")).is_float(), Kind(np.dtype(bool)).is_numeric()
    (True, False)
    """

    dtype: Any

    def is_numeric(self) -> bool:
        return isinstance(self.dtype, np.dtype) and self.dtype.kind in "iuf"

    def is_float(self) -> bool:
        return isinstance(self.dtype, np.dtype) and self.dtype.kind == "f"

    def is_boolean(self) -> bool:
        return isinstance(self.dtype, np.dtype) and self.dtype.kind == "b"

    def is_string(self) -> bool:
        return isinstance(self.dtype, pd.StringDtype)


class InMemory:
    """The rows of a pandas frame, checked and grouped by numpy: on rows already in memory a
    translated expression costs far more than the operation itself (and narwhals need not be
    imported). The same checks and the same table as :func:`count_rows` and :func:`group_rows`
    (the keys' groups in sorted order).

    Example
    -------
    >>> rows = InMemory.of(pd.DataFrame({"g": ["b", "a", "b"], "k": [1, 2, 3]}), ["k"])
    >>> rows.count({"neg": rows.col("k") < 2})
    (3, {'neg': 1})
    >>> rows.group(["g"], Layout({"k": "count"}, "sums"), {"k": "k"}).to_dict("list")
    {'g': ['a', 'b'], '__rows': [1, 2], '__k': [2, 4]}
    """

    def __init__(self, native: pd.DataFrame) -> None:
        self.native = native
        self.columns: dict[str, Values] = {}

    @classmethod
    def of(
        cls, data: Any, numbers: Iterable[str] = (), keys: Iterable[str] = ()
    ) -> InMemory | None:
        """The rows of a pandas frame whose columns are numpy arrays or strings, whose columns
        ``numbers`` hold numbers or booleans and whose ``keys`` numbers, booleans or strings;
        None otherwise: other engines, pandas' nullable types (whose missing values numpy
        cannot compare), categories and Python objects (which the engine groups), and frames
        with problems the engine's path words (a column missing or of the wrong type)."""
        if not isinstance(data, pd.DataFrame) or not data.columns.is_unique:
            return None
        if not all(isinstance(d, np.dtype | pd.StringDtype) for d in data.dtypes):
            return None
        numbers, keys = list(numbers), list(keys)
        if not all(c in data for c in numbers + keys):
            return None
        kinds = {c: Kind(data[c].dtype) for c in numbers + keys}
        if not all(kinds[c].is_numeric() or kinds[c].is_boolean() for c in numbers):
            return None
        if not all(
            kinds[c].is_numeric() or kinds[c].is_boolean() or kinds[c].is_string() for c in keys
        ):
            return None
        return cls(data)

    def collect_schema(self) -> dict[str, Kind]:
        """Each column's :class:`Kind` (a narwhals frame's ``collect_schema`` counterpart)."""
        return {name: Kind(dtype) for name, dtype in self.native.dtypes.items()}

    def constant(self, name: str, value: Any) -> InMemory:
        """The rows with a column ``name`` of ``value`` on every row (``nw.lit``)."""
        self.columns[name] = np.full(len(self.native), value).view(Values)
        return self

    def col(self, name: str) -> Values:
        """Column ``name``'s values (``nw.col``'s counterpart)."""
        if name not in self.columns:
            self.columns[name] = np.asarray(self.native[name].to_numpy()).view(Values)
        return self.columns[name]

    def count(self, checks: dict[str, Any]) -> tuple[int, dict[str, int]]:
        """:func:`count_rows` of checks made of :meth:`col`'s values."""
        counts = {key: int(np.count_nonzero(e)) for key, e in checks.items()}
        return len(self.native), {key: count for key, count in counts.items() if count}

    def group(self, keys: list[str], lay: Layout, columns: dict[str, str]) -> pd.DataFrame:
        """:func:`group_rows` of a layout of sums or moments, sorted by the keys."""
        if lay.reduction not in ("sums", "moments"):
            raise ValueError(f"rows in memory group sums and moments, not {lay.reduction}")
        codes, _ = key_codes((self.native[key] for key in keys), len(self.native))
        present, first, codes = np.unique(codes, return_index=True, return_inverse=True)
        table = {key: np.asarray(self.col(key))[first] for key in keys}
        table["__rows"] = np.bincount(codes, minlength=present.size)
        # pandas' own sums, mean and variance (compensated), as the engine's group-by has them
        if lay.reduction == "moments":
            (y,) = columns.values()
            grouped = pd.Series(np.asarray(self.col(y))).groupby(codes)
            table |= {"__mean": grouped.mean(), "__var": grouped.var(ddof=0)}
        else:
            for role, c in columns.items():
                x = np.asarray(self.col(c))
                table[f"__{role}"] = (
                    np.bincount(codes, x, present.size).astype(x.dtype)  # exact below 2^53
                    if x.dtype.kind in "iu"
                    else pd.Series(x).groupby(codes).sum()
                )
        return pd.DataFrame({k: np.asarray(v) for k, v in table.items()})


def row_check_message(check: RowCheck, columns: dict[str, str], count: int, rows: int) -> str:
    """The message of a family's row check that holds in ``count`` of ``rows`` rows."""
    return check.message.format(count=count, rows=rows, **columns)


def _by_rule(lay: Layout, columns: dict[str, str], *rules: str) -> list[Any]:
    """The column expressions of the roles with these rules, in that order."""
    return [nw.col(columns[next(r for r, x in lay.roles.items() if x == rule)]) for rule in rules]


def _aggregations(frame, lay: Layout, columns: dict[str, str]):
    """The frame with any derived columns, and the per-group aggregations of the layout (named
    with a leading ``__``, which no key column can clash with)."""
    rows = nw.len().alias("__rows")
    if lay.reduction == "moments":
        (y,) = _by_rule(lay, columns, "real")
        # a group's n is its rows
        return frame, [rows, y.mean().alias("__mean"), y.var(ddof=0).alias("__var")]
    if lay.reduction == "summaries":
        y, n, sd = _by_rule(lay, columns, "real", "size", "sd")
        # within-row sums of squares (n - 1) sd², and n ȳ and n ȳ² for the between-row part
        frame = frame.with_columns(
            nw.when(n > 1).then((n - 1) * sd * sd).otherwise(0.0).alias("__row_m2"),
            (n * y).alias("__row_s1"),
            (n * y * y).alias("__row_s2"),
        )
        return frame, [
            rows,
            n.sum().alias("__n"),
            y.mean().alias("__y"),
            nw.col("__row_s1").sum().alias("__s1"),
            nw.col("__row_s2").sum().alias("__s2"),
            nw.col("__row_m2").sum().alias("__m2"),
        ]
    if lay.reduction == "single":
        return frame, [rows, *(nw.col(c).mean().alias(f"__{r}") for r, c in columns.items())]
    return frame, [rows, *(nw.col(c).sum().alias(f"__{r}") for r, c in columns.items())]


def group_stats(
    family: Family, lay: Layout, table: pd.DataFrame, group: str
) -> dict[str, np.ndarray]:
    """The family's statistics from the table of :func:`group_rows` (``group`` names the key
    column that error messages show)."""
    rows = table["__rows"].to_numpy(np.int64)
    if lay.reduction == "moments":
        n = rows
        var = table["__var"].fillna(0.0).to_numpy(np.float64)
        return {"n": n, "mean": table["__mean"].to_numpy(np.float64), "m2": var * n}
    if lay.reduction == "summaries":
        n = table["__n"].round().to_numpy(np.int64)
        s1 = table["__s1"].to_numpy(np.float64)
        single = rows == 1
        mean = np.where(single, table["__y"].to_numpy(np.float64), s1 / n)
        # Σ n_i (ȳ_i - ȳ)² = Σ n_i ȳ_i² - n ȳ²: zero for groups given as one row
        between = np.where(single, 0.0, table["__s2"].to_numpy(np.float64) - s1 * s1 / n)
        m2 = table["__m2"].to_numpy(np.float64) + np.maximum(between, 0.0)
        return {"n": n, "mean": mean, "m2": m2}
    if lay.reduction == "single":
        many = np.flatnonzero(rows > 1)
        if many.size:
            raise ValueError(
                f"{list(lay.roles)[-1]}: expected one estimate per group, but group "
                f"{table[group].iloc[many[0]]!r} has {rows[many[0]]} rows"
            )
        return {role: table[f"__{role}"].to_numpy(np.float64) for role in lay.roles}
    out = {}
    for role, rule in lay.roles.items():
        col = table[f"__{role}"]
        out[role] = col.round().to_numpy(np.int64) if rule == "count" else col.to_numpy(np.float64)
    if "rows" in family.statistics:
        out["rows"] = rows
    return out


def with_defaults(frame: Any, lay: Layout, columns: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """The frame (or :class:`InMemory` rows) with a column for each optional role left out (its
    value on every row), and the role → column mapping with them."""
    for role, value in lay.optional.items():
        if role not in columns:
            name = f"__{role}"
            if isinstance(frame, InMemory):
                frame = frame.constant(name, value)
            else:
                frame = frame.with_columns(nw.lit(value).alias(name))
            columns = {**columns, role: name}
    return frame, columns


def group_rows(frame: Any, keys: list[str], lay: Layout, columns: dict[str, str]) -> pd.DataFrame:
    """One group-by of the rows by ``keys`` (none: all rows together) in the engine that holds
    them: the keys, each group's rows (``__rows``) and the layout's aggregates (``__`` names),
    collected into pandas."""
    frame, aggs = _aggregations(frame, lay, columns)
    return collect(frame.group_by(*keys).agg(aggs) if keys else frame.select(aggs))
