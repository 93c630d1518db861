"""The front door: a formula is recognised by parsing it, and an option the chosen path does
not use is refused by name."""

import pandas as pd
import pytest

import poolwise

DF = pd.DataFrame({"g": list("aabbcc"), "k": [3, 6, 2, 5, 4, 7], "n": [10] * 6})


@pytest.mark.parametrize("option", ["chains", "tune", "target_accept", "progress"])
def test_one_factor_fit_refuses_options_of_nuts(option):
    value = {"chains": 2, "tune": 10, "target_accept": 0.9, "progress": False}[option]
    with pytest.raises(TypeError, match=rf"fit: {option} not used here"):
        poolwise.fit(DF, group="g", successes="k", trials="n", **{option: value})


def test_one_factor_fit_refuses_a_family_and_a_parametrization():
    with pytest.raises(TypeError, match="family, parametrization not used here"):
        poolwise.fit(
            DF, group="g", successes="k", trials="n", family="binomial", parametrization="centered"
        )


def test_formula_fit_refuses_column_options():
    with pytest.raises(TypeError, match="group, trials not used here"):
        poolwise.fit("p(k, n) ~ 1 + (1|g)", data=DF, group="g", trials="n")


def test_exact_formula_fit_refuses_options_of_nuts():
    with pytest.raises(TypeError, match="tune not used by method='exact'"):
        poolwise.fit("p(k, n) ~ 1 + (1|g)", data=DF, method="exact", tune=10)


def test_a_path_with_a_tilde_is_read_as_a_path(tmp_path, monkeypatch):
    # "~/..." and "a~1.csv" are files, not formulas: read as data when they exist
    monkeypatch.chdir(tmp_path)
    DF.to_csv("data~1.csv", index=False)
    priors = {"a": 2, "b": 3}
    by_path = poolwise.fit("data~1.csv", group="g", successes="k", trials="n", priors=priors)
    direct = poolwise.fit(DF, group="g", successes="k", trials="n", priors=priors)
    pd.testing.assert_frame_equal(by_path.groups, direct.groups)
    with pytest.raises(ValueError, match="no file matches '~/visits.csv'"):
        poolwise.fit("~/visits.csv", group="g", y="y")


def test_intercept_only_formula_is_the_one_factor_fit():
    by_formula = poolwise.fit("p(k, n) ~ 1 + (1|g)", data=DF, seed=1, priors={"a": 2, "b": 3})
    by_column = poolwise.fit(
        DF, group="g", successes="k", trials="n", seed=1, priors={"a": 2, "b": 3}
    )
    pd.testing.assert_frame_equal(by_formula.groups, by_column.groups)


def test_results_are_frozen():
    fit = poolwise.fit(DF, group="g", successes="k", trials="n", seed=1, priors={"a": 2, "b": 3})
    with pytest.raises(AttributeError):
        fit.method = "eb"
