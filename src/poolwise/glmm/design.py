"""Design of the cells by formulae: common columns, and integer codes for each group term.

Group-specific terms are kept as (codes, values) pairs: cell i gets ``b[codes[i]] * values[i]``,
an index into the effect vector. formulae evaluates the common terms and the slopes'
expressions; the group factors' codes are found from the cells' columns that the parsed formula
names, in formulae's order of levels (each column's sorted values, combined lexicographically),
so that no (cells x levels) indicator matrix is ever built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..rows import key_codes
from .cells import Cells
from .formula import FormulaSpec, components, describe, environment


@dataclass
class GroupTerm:
    """One group-specific term ``expr|factor`` on the cells.

    ``codes`` index the ``levels`` (only levels present in the data), ``values`` multiply the
    effect (1 for an intercept, the column for a slope); ``zero_sum`` says the effects are
    deviations that sum to zero (set when the common part holds the same term).
    """

    name: str
    expr: str
    factor: str
    factor_columns: tuple[str, ...]
    levels: list[str]
    codes: np.ndarray
    values: np.ndarray
    zero_sum: bool = False
    centered: bool = False

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def sums_to_zero(self) -> bool:
        """Whether the effects are constrained to sum to zero (one level has nothing to sum)."""
        return self.zero_sum and self.n_levels > 1

    @property
    def sigma_name(self) -> str:
        return f"{self.name}_sigma"


@dataclass(frozen=True)
class Block:
    """A correlated block: the group terms of one ``(1 + x|g)`` (lme4's and brms' default for
    several coefficients of one factor), whose effects of each level are drawn together from a
    multivariate normal with one sd per term and a correlation matrix (LKJ prior).

    ``name`` is the block's coefficients and factor (``"1 + x|g"``), ``terms`` the names of its
    group terms in :attr:`Design.groups` (``("1|g", "x|g")``).
    """

    name: str
    terms: tuple[str, ...]

    @property
    def corr_name(self) -> str:
        """The name of the block's correlations (draws, tables, the LKJ prior's key)."""
        return f"{self.name}_corr"

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The (row, column) of each correlation below the diagonal, row by row."""
        return [(i, j) for i in range(len(self.terms)) for j in range(i)]

    @property
    def pair_labels(self) -> list[str]:
        """Each correlation's label, ``"1, x"`` (its coefficients' expressions)."""
        exprs = [t.split("|", 1)[0] for t in self.terms]
        return [f"{exprs[j]}, {exprs[i]}" for i, j in self.pairs]


@dataclass
class Design:
    """Common design matrix of the cells (dense, cells x columns), offset and group terms;
    ``keys`` the cells' columns as the data held them (one row per cell), ``response`` the
    formula's outcome columns by role (``successes``, ``trials``; ``counts``, ``exposure``; ``y``).

    ``blocks`` marks the correlated blocks among the group terms (empty when every group term
    is independent); :attr:`correlated` says whether there is any, for engines that do not
    handle them yet.
    """

    X: np.ndarray
    names: list[str]
    terms: dict[str, list[str]]
    intercept: bool
    spans_constant: bool
    offset: np.ndarray
    groups: list[GroupTerm]
    matrices: Any
    keys: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    response: dict[str, str] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def correlated(self) -> bool:
        """Whether some group terms form a correlated block (``(1 + x|g)``)."""
        return bool(self.blocks)


def _labels(frame: pd.DataFrame | dict[str, pd.Series], columns: tuple[str, ...]) -> np.ndarray:
    parts = [frame[c].astype(str).to_numpy(object) for c in columns]
    out = parts[0]
    for p in parts[1:]:
        out = out + ":" + p
    return out


def _failure(spec: FormulaSpec, table: pd.DataFrame, err: Exception) -> str:
    """Why formulae could not build the design: the first term whose expression fails on the
    cells, else formulae's own message."""
    env = environment()
    for term in describe(spec.formula).terms:
        for comp in components(term):
            call = getattr(comp, "call", None)
            try:
                if call is not None:
                    call.eval(table, env)
            except Exception as inner:  # whatever the expression's functions raise
                return f"formula: term {term.name!r} cannot be computed: {inner}"
    return f"formula: formulae could not build {spec.formula!r}: {err}"


def _row_by_row(common, table: pd.DataFrame, what: str | None) -> None:
    """Refuse a term whose value on a cell depends on the other cells (a mean, a rank, a running
    sum): a cell stands for any number of identical rows, so its value would not be the rows'.
    The cells are evaluated again, reversed and with one of them twice."""
    probe = np.r_[np.arange(len(table))[::-1], 0]
    again = common.evaluate_new_data(table.iloc[probe].reset_index(drop=True))
    for name, sl in common.slices.items():
        first = np.asarray(common.design_matrix[:, sl], dtype=np.float64)[probe]
        second = np.asarray(again.design_matrix[:, sl], dtype=np.float64)
        if not np.allclose(first, second, rtol=1e-12, atol=0.0):
            raise ValueError(
                f"formula: term {what or name!r} is not computed row by row (its value on one "
                "row depends on the other rows), but poolwise fits cells of identical rows; "
                "compute it as a column before fitting"
            )


def _common(
    formula: str, spec: FormulaSpec, table: pd.DataFrame, check: bool, what: str | None = None
):
    """formulae's design of ``formula`` on the cells, its values finite; ``check`` says to make
    sure that each term gives every cell its own value (see :func:`_row_by_row`)."""
    from formulae import design_matrices

    try:
        with np.errstate(all="ignore"):  # a log of zero is refused below, by its term's name
            dm = design_matrices(formula, table, na_action="error", env=environment())
    except Exception as err:  # formulae and the expressions' functions raise their own errors
        raise ValueError(_failure(spec, table, err)) from None
    common = dm.common
    if common is not None:
        for name, sl in common.slices.items():
            if getattr(common.terms[name], "kind", None) == "offset":  # checked as the exposure
                continue
            if not np.isfinite(np.asarray(common.design_matrix[:, sl], dtype=np.float64)).all():
                raise ValueError(
                    f"formula: term {what or name!r} is not finite on some rows (a log of zero, "
                    "a division by zero, ...)"
                )
        if check:
            _row_by_row(common, table, what)
    return dm


def _evaluate(expr: str, name: str, spec: FormulaSpec, table: pd.DataFrame) -> np.ndarray:
    """A slope's expression on the cells (formulae evaluates it)."""
    dm = _common(f"0 + {expr}", spec, table, name in spec.row_checks, name)
    values = np.asarray(dm.common.design_matrix, dtype=np.float64)
    if values.shape[1] != 1:
        raise ValueError(
            f"formula: group term {name!r} has a categorical expression; write one "
            "term per numeric column, e.g. (1|g) + (0 + x|g), or (1 + x|g) for a correlated pair"
        )
    return values.reshape(-1)


def _factor_codes(table: pd.DataFrame, columns: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """The levels present (``a:b`` labels) and each cell's code among them, in formulae's order:
    every column's sorted values, combined lexicographically."""
    combined, uniques = key_codes((table[c].to_numpy() for c in columns), len(table))
    codes, present = pd.factorize(combined, sort=True)
    digits = {}
    for c, unique in zip(reversed(columns), reversed(uniques), strict=True):
        digits[c] = pd.Series(np.asarray(unique)[present % len(unique)])
        present = present // len(unique)
    labels = _labels(digits, columns)
    return list(labels), codes.reshape(-1).astype(np.int32)


class Later:
    """formulae's design matrices, built when first read (``make()``): a plain formula's
    design needs none of them, only a prediction on new rows does."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    @functools.cached_property
    def common(self) -> Any:
        """The common terms' design matrix (formulae's ``DesignMatrices.common``)."""
        return self._make().common


def _numbers(table: pd.DataFrame, columns: list[str]) -> bool:
    """Whether the columns all hold numbers, which formulae takes as they are (it encodes the
    rest: strings, booleans, categories)."""
    dtypes = [table[c].dtype for c in columns]
    return all(isinstance(d, np.dtype) and d.kind in "iuf" for d in dtypes)


def _plain_columns(spec: FormulaSpec, table: pd.DataFrame) -> tuple[bool, list[str]] | None:
    """The intercept and columns of a common part of plain columns
    (:attr:`~poolwise.glmm.formula.FormulaSpec.plain`) that hold numbers; else None."""
    if spec.plain is None or spec.row_checks or not _numbers(table, list(spec.plain[1])):
        return None
    return spec.plain[0], list(spec.plain[1])


def build_design(cells: Cells, spec: FormulaSpec) -> Design:
    """Evaluate the right-hand side of ``spec`` on the cells with formulae.

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.formula import parse_formula
    >>> from poolwise.glmm.cells import reduce_cells
    >>> df = pd.DataFrame({"k": [2, 3, 4], "n": [9, 9, 9], "g": ["a", "b", "a"]})
    >>> spec = parse_formula("p(k, n) ~ 1 + (1|g)")
    >>> d = build_design(reduce_cells(df, spec), spec)
    >>> d.names, d.groups[0].codes.tolist()
    (['Intercept'], [0, 1])
    """
    table = cells.table
    if "exposure" in spec.response:  # offset(log(col)) evaluates on the cell's total exposure
        table = table.assign(**{spec.response["exposure"]: table["__exposure"]})
    names: list[str] = []
    terms: dict[str, list[str]] = {}
    cols = []
    intercept = False
    plain = _plain_columns(spec, table)
    if plain is not None:  # formulae's design, without formulae until something reads it
        intercept, columns = plain
        names = ["Intercept"] * intercept + columns
        terms = {name: [name] for name in names}
        cols = [np.ones((len(table), 1))] * intercept
        cols += [table[c].to_numpy(np.float64).reshape(-1, 1) for c in columns]
        dm: Any = Later(lambda: _common(spec.common, spec, table, False))
        common = None
    else:
        dm = _common(spec.common, spec, table, bool(spec.row_checks))
        common = dm.common
    if common is not None:
        X_all = np.asarray(common.design_matrix, dtype=np.float64)
        for term_name, term in common.terms.items():
            if getattr(term, "kind", None) == "offset":
                continue
            sl = common.slices[term_name]
            labels = list(getattr(term, "labels", None) or [term_name])
            if term_name == "Intercept":
                intercept = True
                labels = ["Intercept"]
            elif sl.stop - sl.start == 1:
                labels = [term_name]
            names.extend(labels)
            terms[term_name] = labels
            cols.append(X_all[:, sl])
    X = np.hstack(cols) if cols else np.zeros((len(table), 0))
    offset = np.zeros(len(table))
    if cells.likelihood == "poisson":
        exposure = table["__exposure"].to_numpy(np.float64)
        if (exposure <= 0).any():
            raise ValueError("exposure: some cells have zero total exposure")
        offset = np.log(exposure)
    spans_constant = intercept
    if not intercept and X.shape[1]:
        coef, *_ = np.linalg.lstsq(X, np.ones(len(table)), rcond=None)
        spans_constant = bool(np.allclose(X @ coef, 1.0, atol=1e-8))
    groups = []
    factors: dict[tuple[str, ...], tuple[list[str], np.ndarray]] = {}  # once for all its terms
    for name, factor_cols in spec.groups:
        expr = "1" if name.startswith("1|") else name.split("|", 1)[0]
        if expr == "1":
            values = np.ones(len(table))
        elif expr in table and _numbers(table, [expr]):
            values = table[expr].to_numpy(np.float64)  # (a column of numbers, as it is)
        else:
            values = _evaluate(expr, name, spec, table)
        if factor_cols not in factors:
            factors[factor_cols] = _factor_codes(table, factor_cols)
        levels, codes = factors[factor_cols]
        zero_sum = spans_constant if expr == "1" else expr in terms
        groups.append(
            GroupTerm(
                name=name,
                expr=expr,
                factor=name.split("|", 1)[1],
                factor_columns=factor_cols,
                levels=levels,
                codes=codes,
                values=values,
                zero_sum=zero_sum,
            )
        )
    # (by position: selecting by labels costs twice as much on a small table)
    keys = cells.table.iloc[:, [i for i, c in enumerate(cells.table.columns) if c[:2] != "__"]]
    blocks = [Block(name, members) for name, members in spec.blocks]
    response = dict(spec.response)
    return Design(
        X, names, terms, intercept, spans_constant, offset, groups, dm, keys, response, blocks
    )


def slope_values(term: GroupTerm, frame: pd.DataFrame) -> np.ndarray:
    """What ``term``'s effects multiply on the rows of ``frame``: 1 for an intercept, else its
    expression evaluated by formulae (a ValueError names a column the rows lack).

    Example
    -------
    >>> t = GroupTerm("I(x ** 2)|g", "I(x ** 2)", "g", ("g",), ["a"], np.zeros(1), np.ones(1))
    >>> slope_values(t, pd.DataFrame({"x": [2.0, 3.0]})).tolist()
    [4.0, 9.0]
    """
    if term.expr == "1":
        return np.ones(len(frame))
    from formulae import design_matrices

    for comp in components(describe(f"0 + {term.expr}").terms[0]):
        for name in sorted(comp.var_names - {""}):
            if name not in frame and name not in environment().namespace:
                raise ValueError(f"no column {name!r} in the new data (term {term.name!r})")
    dm = design_matrices(f"0 + {term.expr}", frame, na_action="error", env=environment())
    return np.asarray(dm.common.design_matrix, dtype=np.float64).reshape(-1)


def new_codes(term: GroupTerm, frame: pd.DataFrame) -> np.ndarray:
    """Codes of ``frame``'s rows in ``term`` (-1 for a level not seen in the fit)."""
    labels = _labels(frame, term.factor_columns)
    index = pd.Index(term.levels)
    return index.get_indexer(labels).astype(np.int64)
