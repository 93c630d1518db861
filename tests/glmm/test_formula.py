"""Formula terms with expressions (I(), numpy's functions, literals, nested calls, interactions,
transformed slopes): poolwise's design of the cells, spread back to the rows, is formulae's own
design of the rows; bad terms are refused by name; is_formula tells formulae from paths."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from formulae import design_matrices

import poolwise
from poolwise.glmm import formula as formula_module
from poolwise.glmm.cells import reduce_cells
from poolwise.glmm.design import build_design
from poolwise.glmm.formula import is_formula, parse_formula
from poolwise.glmm.predictive import linear_predictor_of

# R's names for numpy's functions, which poolwise's formulae know
R_NAMES = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}


def _frame(n: int = 240, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.choice([-2.0, -0.5, 0.0, 1.5, 3.0], n),
            "z": rng.choice([0.25, 1.0, 2.0], n),
            "g": rng.choice(["q", "p", "r"], n),
            "h": rng.choice([3, 10, 7], n),
            "T": rng.choice([1, 4], n),  # a column named like formulae's T()
            "y": rng.normal(size=n),
        }
    )


def _design(formula: str, data: pd.DataFrame):
    spec = parse_formula(formula)
    cells = reduce_cells(data, spec)
    return spec, cells, build_design(cells, spec)


def _cell_of_rows(spec, cells, data: pd.DataFrame) -> np.ndarray:
    """The cell of each row, by the cells' key columns."""
    keys = list(spec.keys(data.columns))
    if not keys:
        return np.zeros(len(data), dtype=int)
    index = cells.table[keys].reset_index()
    return data[keys].merge(index, on=keys, how="left")["index"].to_numpy()


# terms formulae accepts that are computed row by row
TERMS = [
    "x + I(x ** 2) + (1|g)",
    "x + np.log(x + 10) + (1|g)",
    "np.log(np.exp(x) + 1) + np.power(z, 2)",
    "I(2 * x - z / 3) + I(x > 0) + I(-x)",
    "np.log(x + 10):z + I(x ** 2):C(h)",
    "0 + C(h) + np.round(z * 3, 1) + np.where(x > 0, x, 0.0)",
    "C(h, Sum) + x:C(g)",
    "1 + C(g) + (1 + np.log(x + 10)|g)",
    "I(x ** 2) + (I(x ** 2)|h) + (1|g:h)",
    "x * z + (0 + np.exp(x / 4)|C(h))",
    "np.log(T + 1) + I(T * x)",
    "log(x + 10) + sqrt(z) + exp(x / 4) + abs(x)",
]


@pytest.mark.parametrize("rhs", TERMS)
def test_design_of_the_cells_is_formulaes_design_of_the_rows(rhs):
    """Each row's design row (its cell's) equals formulae's design matrix of the rows, common
    part and group-specific part (each level's column: the indicator times the term's values)."""
    df = _frame()
    formula = f"y ~ {rhs}"
    spec, cells, design = _design(formula, df)
    assert design.n_cells < len(df) // 4  # the rows were reduced to cells
    ref = design_matrices(formula, df, na_action="error", extra_namespace=R_NAMES)
    cell = _cell_of_rows(spec, cells, df)
    assert (cell >= 0).all()
    assert list(design.terms) == list(ref.common.terms)
    np.testing.assert_allclose(design.X[cell], np.asarray(ref.common.design_matrix), rtol=1e-14)
    assert [t.name for t in design.groups] == list(ref.group.terms if ref.group else [])
    for t in design.groups:
        term = ref.group.terms[t.name]
        present = np.flatnonzero(np.asarray(term.factor.data).any(axis=0))
        assert t.levels == [str(term.groups[i]) for i in present]
        mine = np.zeros((len(df), t.n_levels))
        mine[np.arange(len(df)), t.codes[cell]] = t.values[cell]
        expected = ref.group[t.name].toarray()[:, present]
        np.testing.assert_allclose(mine, expected, rtol=1e-14)


@pytest.mark.parametrize("rhs", TERMS)
def test_prediction_on_new_rows_is_formulaes_design_of_those_rows(rhs):
    """The linear predictor of new rows (what predict and simulate use) is formulae's design
    matrix of those rows times the coefficients, common part and group-specific part."""
    formula = f"y ~ {rhs}"
    _, _, design = _design(formula, _frame())
    new = _frame(80, seed=6)
    rng = np.random.default_rng(2)
    draws = {name: rng.normal(size=(1, 3)) for name in design.names}
    draws |= {t.name: rng.normal(size=(1, 3, t.n_levels)) for t in design.groups}
    fit = SimpleNamespace(design=design, draws=draws, plan=None)
    eta = linear_predictor_of(fit, new, "raise", rng)
    ref = design_matrices(formula, new, na_action="error", extra_namespace=R_NAMES)
    beta = np.array([draws[name][0] for name in design.names]).reshape(len(design.names), 3)
    expected = np.asarray(ref.common.design_matrix) @ beta if design.names else 0.0
    for t in design.groups:
        term = ref.group.terms[t.name]
        present = np.flatnonzero(np.asarray(term.factor.data).any(axis=0))
        labels = [str(term.groups[i]) for i in present]
        b = draws[t.name][0][:, [t.levels.index(label) for label in labels]]
        expected = expected + ref.group[t.name].toarray()[:, present] @ b.T
    np.testing.assert_allclose(eta, np.asarray(expected).T, rtol=1e-12, atol=1e-12)


def test_keys_are_the_columns_the_terms_read():
    """Inside expressions too; literals, functions and encodings are no columns, and a column
    named like one of formulae's functions is read as the column."""
    spec = parse_formula(
        "y ~ x + I(x ** 2) + np.log(z + 1):C(h) + C(h, Sum) + (1 + np.log(x + 10)|g)"
    )
    assert spec.keys(["y", "x", "z", "h", "g", "w"]) == ("g", "h", "x", "z")
    spec = parse_formula("y ~ np.log(T + 1) + (1|g)")
    assert spec.keys(["y", "T", "g"]) == ("T", "g")


@pytest.mark.parametrize(
    ("rhs", "match"),
    [
        ("x + I(x + nope)", r"no column 'nope' in the data \(term 'I\(x \+ nope\)'\)"),
        ("(1 + np.log(nope)|g)", r"no column 'nope' in the data \(term 'np.log\(nope\)\|g'\)"),
        ("np.lgo(x)", r"term 'np.lgo\(x\)' calls np.lgo\(\), which is not defined"),
        ("x + foo(x + 1) + (1|g)", r"term 'foo\(x \+ 1\)' calls foo\(\), which is not defined"),
        ("np.log(g)", r"term 'np.log\(g\)' cannot be computed"),
        ("np.log(x)", r"term 'np.log\(x\)' is not finite on some rows"),
        ("(1 + np.log(x)|g)", r"term 'np.log\(x\)\|g' is not finite on some rows"),
        ("I(x - np.mean(x))", r"term 'I\(x - np.mean\(x\)\)' is not computed row by row"),
        ("np.cumsum(x)", r"term 'np.cumsum\(x\)' is not computed row by row"),
        ("(np.argsort(x)|g)", r"term 'np.argsort\(x\)\|g' is not computed row by row"),
        ("scale(x)", r"scale\(\) is computed over all rows"),
        ("center(x) + (1|g)", r"center\(\) is computed over all rows"),
        ("standardize(x)", r"standardize\(\) is computed over all rows"),
        ("bs(x, df=3)", r"bs\(\) is computed over all rows"),
        ("poly(x, 2)", r"poly\(\) is computed over all rows"),
        ("(1 + scale(x)|g)", r"scale\(\) is computed over all rows"),
        ("x z", r"could not parse 'y ~ x z': unexpected 'z'"),
    ],
)
def test_bad_terms_are_refused_by_name(rhs, match):
    with pytest.raises(ValueError, match=match):
        _design(f"y ~ {rhs}", _frame())


def test_a_bad_term_is_refused_before_sampling():
    with pytest.raises(ValueError, match=r"no column 'w' in the data \(term 'np.log\(w \+ 1\)'\)"):
        poolwise.fit("y ~ x + np.log(w + 1) + (1|g)", data=_frame(), progress=False)


# short chains: the checks below allow 4.5 posterior sds, far above the Monte Carlo error
FIT = {"seed": 4, "draws": 1000, "tune": 500, "chains": 2, "progress": False}


def test_a_fit_recovers_a_known_quadratic():
    """y ~ x + I(x ** 2) + (1|g) on normal rows around 1 + 0.5 x - 0.3 x^2 plus a group effect:
    each coefficient lies within 4.5 posterior sds of its true value (the intercept's is the mean
    over the groups)."""
    rng = np.random.default_rng(21)
    n, truth = 1500, {"Intercept": 1.0, "x": 0.5, "I(x ** 2)": -0.3}
    x = rng.choice(np.linspace(-2, 2, 9), n)
    g = rng.integers(0, 6, n)
    eta = truth["Intercept"] + truth["x"] * x + truth["I(x ** 2)"] * x**2
    b = rng.normal(0, 0.5, 6)
    y = eta + b[g] + rng.normal(size=n)
    truth["Intercept"] += b.mean()  # the group effects are deviations that sum to zero
    fit = poolwise.fit(
        "y ~ x + I(x ** 2) + (1|g)", data=pd.DataFrame({"x": x, "g": g, "y": y}), **FIT
    )
    assert fit.info["cells"] == 9 * 6
    pop = fit.population
    for name, value in truth.items():
        assert abs(pop.loc[name, "mean"] - value) <= 4.5 * pop.loc[name, "sd"], name
    # prediction evaluates the same terms on new rows: eta of the draws, exactly
    new = pd.DataFrame({"x": [1.5, -2.0], "g": [0, 3]})
    predicted = fit.predict(new)["mean"].to_numpy()
    d = fit.draws
    b0 = d["1|g"].reshape(-1, 6)
    expected = [
        np.mean(d["Intercept"].ravel() + d["x"].ravel() * v + d["I(x ** 2)"].ravel() * v**2
                + b0[:, level])
        for v, level in zip(new["x"], new["g"], strict=True)
    ]  # fmt: skip
    np.testing.assert_allclose(predicted, expected, rtol=1e-12)


# an ESS near 200 leaves a Monte Carlo error near sd / 14, far inside the 4.5 sds allowed
@pytest.mark.filterwarnings("ignore:low effective sample size")
def test_a_fit_with_transformed_terms_and_slope_recovers_them():
    """p(k, n) ~ np.log(x + 1) + (1 + I(x - 2)|g): binomial rows whose logit is
    -0.5 + 0.8 log(x + 1) plus a group intercept and a group slope on x - 2 (a correlated
    block; the slope's effects do not sum to zero, no common term holds it); the common
    coefficients lie within 4.5 posterior sds of their true values (the intercept's is the mean
    over the groups)."""
    rng = np.random.default_rng(8)
    rows, truth = 800, {"Intercept": -0.5, "np.log(x + 1)": 0.8}
    x = rng.integers(0, 5, rows)
    g = rng.integers(0, 8, rows)
    a, b = rng.normal(0, 0.4, 8), rng.normal(0, 0.3, 8)
    eta = truth["Intercept"] + truth["np.log(x + 1)"] * np.log(x + 1) + a[g] + b[g] * (x - 2)
    k = rng.binomial(40, 1 / (1 + np.exp(-eta)))
    truth["Intercept"] += a.mean()  # the group intercepts are deviations that sum to zero
    df = pd.DataFrame({"x": x, "g": g, "k": k, "n": 40})
    # (1 + I(x - 2)|g) is a correlated block; at 500 warm-up steps one chain of two has not
    # settled (r_hat 1.01-1.017 over seeds), at 1000 it has (1.005)
    fit = poolwise.fit(
        "p(k, n) ~ np.log(x + 1) + (1 + I(x - 2)|g)", data=df, **{**FIT, "tune": 1000}
    )
    assert fit.info["cells"] == 5 * 8
    pop = fit.population
    for name, value in truth.items():
        assert abs(pop.loc[name, "mean"] - value) <= 4.5 * pop.loc[name, "sd"], name
    assert {"1|g", "I(x - 2)|g"} <= set(fit.groups.index.get_level_values(0))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("y ~ 1 + (1|g)", True),
        ("p(k, n) ~ 1 + x + I(x ** 2) + (1 + np.log(x + 1)|g)", True),
        ("Sepal.Length ~ Petal.Width", True),
        ("y~x", True),
        ("a~b.csv", True),  # b.csv may be a column, as Sepal.Length is
        ("~/visits.csv", False),
        ("data~1.csv", False),
        ("runs/y~x.parquet", False),
        ("s3://bucket/a~b/c.parquet", False),
        ("C:\\data\\y~x.csv", False),
        ("my data~1.csv", False),
        ("visits.csv", False),
        ("x + z", False),
        ("~ x", False),
        ("y ~", False),
        ("y ~ x +", False),
        ("", False),
        (None, False),
        (3, False),
        (pd.DataFrame({"y": [1.0]}), False),
    ],
)
def test_is_formula(spec, expected):
    assert is_formula(spec) is expected


PLAIN = {
    "p(opens, sent) ~ 1 + trial_control + (1|distribution)": (True, ("trial_control",)),
    "log_radon ~ floor + (1 + floor | county)": (True, ("floor",)),
    "y ~ (1|g) + x": (True, ("x",)),
    "y ~ x + x + (1|g)": (True, ("x",)),
    "y ~ 0 + x + (x|g)": (False, ("x",)),
    "y ~ -1 + z + x": (False, ("z", "x")),
    "y ~ 0 + (1|g)": (False, ()),
    "c ~ x + offset(log(t)) + (1|g)": (True, ("x",)),
}
NOT_PLAIN = ["y ~ log(x) + (1|g)", "y ~ x:z + (1|g)", "y ~ x*z", "y ~ C(x) + (1|g)"]


@pytest.mark.parametrize("formula", PLAIN)
def test_a_common_part_of_plain_columns_is_named(formula):
    """Where formulae finds only an intercept and bare columns among the common terms, the
    spec names them in formulae's order (their design is then the columns as they are)."""
    assert formula_module.parse_formula(formula).plain == PLAIN[formula]


@pytest.mark.parametrize("formula", NOT_PLAIN)
def test_any_other_common_part_is_left_to_formulae(formula):
    assert formula_module.parse_formula(formula).plain is None
