"""The design of the cells: group codes found from the cells' columns are formulae's levels."""

import numpy as np
import pandas as pd
import pytest
from formulae import design_matrices

from poolwise.glmm import design as design_module
from poolwise.glmm.cells import reduce_cells
from poolwise.glmm.design import build_design
from poolwise.glmm.formula import parse_formula
from poolwise.rows import InMemory


@pytest.mark.parametrize(
    "rhs",
    [
        "1 + x + (1|a)",
        "(1|a) + (x|b)",
        "0 + x + (1|b) + (1|a:b)",
        "1 + x + (1 + x|f) + (1|t)",
        "1 + C(a) + (1|a:t) + (log(w)|b)",
        "1 + (1|C(b)) + (1|C(a):t)",
    ],
)
def test_group_codes_are_formulae_levels(rhs):
    """Codes found from the cells' columns give formulae's own levels and indicator matrix
    (which poolwise no longer builds), for integer, string, float and boolean factors."""
    rng = np.random.default_rng(4)
    n = 300
    df = pd.DataFrame(
        {
            "a": rng.choice([9, 10, 100, 3], n),
            "b": rng.choice(["q", "p", "r", "aa"], n),
            "f": rng.choice([0.5, 1.0, 2.0], n),
            "t": rng.choice([True, False], n),
            "x": rng.normal(size=n).round(1),
            "w": rng.uniform(1, 2, n).round(1),
            "y": rng.normal(size=n),
        }
    )
    spec = parse_formula(f"y ~ {rhs}")
    cells = reduce_cells(df, spec)
    design = build_design(cells, spec)
    ref = design_matrices(rhs, cells.table, extra_namespace={"log": np.log})
    assert [t.name for t in design.groups] == list(ref.group.terms)
    for t in design.groups:
        term = ref.group.terms[t.name]
        dense = np.asarray(term.factor.data)
        present = np.flatnonzero(dense.any(axis=0))
        assert t.levels == [str(term.groups[i]) for i in present]
        np.testing.assert_array_equal(present[t.codes], dense.argmax(axis=1))
        np.testing.assert_allclose(t.values, np.asarray(term.expr.data, float).reshape(-1))
    np.testing.assert_allclose(design.X, np.asarray(ref.common.design_matrix))


@pytest.mark.parametrize(
    ("formula", "options"),
    [
        ("p(k, n) ~ 1 + x + (1|a) + (1|b)", {}),
        ("c ~ x + (1|a:b)", {"exposure": "w"}),
        ("c ~ x + (1|b)", {"family": "poisson"}),
        ("y ~ x + f + (1 + x|a)", {}),
        ("k01 ~ x + (1|t)", {"family": "bernoulli"}),
        ("p(k, n) ~ x + (1|o)", {}),
    ],
)
def test_pandas_cells_are_the_engines(formula, options, monkeypatch):
    """A pandas frame's cells, checked and grouped by numpy, are those the engine's path makes
    of the same rows (pandas through narwhals): keys, order, statistics, dtypes; and bad rows
    get the same messages."""
    rng = np.random.default_rng(7)
    n = 200
    df = pd.DataFrame(
        {
            "a": rng.choice(["u", "v", "w"], n),
            "b": rng.integers(0, 4, n),
            "t": rng.random(n) < 0.5,
            "f": rng.choice([0.5, 1.5], n),
            "x": rng.integers(0, 3, n).astype(float),
            "n": rng.integers(5, 9, n),
            "w": rng.random(n) + 0.5,
            "y": rng.normal(size=n),
        }
    )
    df["k"] = rng.binomial(df["n"], 0.3)
    df["c"] = rng.poisson(2.0, n)
    df["k01"] = (df["k"] > 2).astype(int)
    df["o"] = df["a"].astype(object)  # (Python objects: the engine's path either way)
    bad = df.assign(x=df["x"].where(df.index % 7 > 0), k=df["k"] + 9 * (df.index == 3))
    bad.loc[5, "c"] = -1
    spec = parse_formula(formula, **options)

    def cells_and_message():
        with pytest.raises(ValueError) as err:
            reduce_cells(bad, spec)
        return reduce_cells(df, spec), str(err.value)

    ours, message = cells_and_message()
    monkeypatch.setattr(InMemory, "of", classmethod(lambda cls, *args: None))
    theirs, engine_message = cells_and_message()
    pd.testing.assert_frame_equal(ours.table, theirs.table, check_exact=True)
    assert ours.n_rows == theirs.n_rows == n
    assert message == engine_message


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ 1 + x + (1|a)",
        "y ~ 0 + x + w + (x|b)",
        "y ~ w + x + w + 0",
        "y ~ (1|a)",
        "y ~ 0 + (1|b)",
    ],
)
def test_a_plain_design_is_formulaes(formula, monkeypatch):
    """Numeric columns of a plain formula (and of its slopes) are taken as they are, in
    formulae's order; formulae's own matrices (for predictions on new rows) are built when
    first read, and are the same."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "a": rng.choice(list("pqr"), 60),
            "b": rng.integers(0, 3, 60),
            "x": rng.integers(0, 4, 60),
            "w": rng.normal(size=60).round(1),
            "y": rng.normal(size=60),
        }
    )
    spec = parse_formula(formula)
    cells = reduce_cells(df, spec)
    ours = build_design(cells, spec)
    monkeypatch.setattr(design_module, "_numbers", lambda table, columns: False)
    theirs = build_design(cells, spec)
    for ours_term, their_term in zip(ours.groups, theirs.groups, strict=True):
        np.testing.assert_array_equal(ours_term.values, their_term.values)  # slopes too
    assert isinstance(ours.matrices, design_module.Later)
    assert (ours.names, ours.terms, ours.intercept) == (
        theirs.names,
        theirs.terms,
        theirs.intercept,
    )
    np.testing.assert_array_equal(ours.X, theirs.X)
    if theirs.matrices.common is None:
        assert ours.matrices.common is None
    else:
        np.testing.assert_array_equal(
            np.asarray(ours.matrices.common.design_matrix),
            np.asarray(theirs.matrices.common.design_matrix),
        )
