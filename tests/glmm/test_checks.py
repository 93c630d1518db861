"""Identifiability: the directions of the coefficients that no cell's prediction depends on."""

import numpy as np
import pandas as pd
import pytest

from poolwise.glmm import checks
from poolwise.glmm.cells import reduce_cells
from poolwise.glmm.design import build_design
from poolwise.glmm.formula import parse_formula

from . import reference_script

references = reference_script("run_glmm_references")


@pytest.mark.parametrize(
    ("formula", "zero_sum", "extra", "null", "reported"),
    [
        ("p(k, n) ~ 1 + x + (1|a) + (1|b)", True, None, 0, False),
        # as written: a and b each trade level with the intercept
        ("p(k, n) ~ 1 + x + (1|a) + (1|b)", False, None, 2, True),
        ("p(k, n) ~ 1 + x + (x|a)", True, None, 0, False),
        # nested: a:b's effects can hold a's (8 levels, 7 directions), a variance partition
        ("p(k, n) ~ 1 + x + (1|a) + (1|a:b)", True, None, 7, False),
        ("p(k, n) ~ 1 + x + x2 + (1|b)", True, 2.0, 1, True),  # x2 = 2 x
    ],
)
def test_identifiability_is_the_dense_designs_null_space(formula, zero_sum, extra, null, reported):
    """The cross-product built from the group codes is A'A of the dense design, and the
    directions are its null space (the dense SVD's rank); those that move a common effect are
    reported."""
    rng = np.random.default_rng(9)
    a, b, x, _, _ = references.crossed_design(rng, 400)
    df = pd.DataFrame({"a": a, "b": b, "x": x, "k": 1, "n": 3})
    if extra is not None:
        df["x2"] = extra * df["x"]
    spec = parse_formula(formula)
    design = build_design(reduce_cells(df, spec), spec)
    blocks = [design.X]
    for t in design.groups:
        t.zero_sum = zero_sum
        Z = np.eye(t.n_levels)[t.codes] * t.values[:, None]
        blocks.append(Z @ checks._zero_sum_basis(t.n_levels) if zero_sum else Z)
    A = np.hstack(blocks)
    np.testing.assert_allclose(checks._gram(design), A.T @ A, atol=1e-9)
    assert A.shape[1] - np.linalg.matrix_rank(A) == null
    problems, skipped = checks.identifiability(design)
    assert skipped is None
    assert len(problems) == reported
    if reported:
        assert f"{null} direction" in problems[0]
