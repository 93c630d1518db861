"""Bad input gets a clear error naming the column and the problem."""

import numpy as np
import pandas as pd
import pytest

import poolwise

GOOD = pd.DataFrame(
    {"g": ["a", "a", "b", "c"], "k": [1, 2, 3, 0], "n": [4, 5, 6, 2], "y": [1.0, 2.0, 3.0, 4.0]}
)


def binomial(df, **kw):
    return poolwise.fit(df, group="g", successes="k", trials="n", **kw)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"k": [1, None, 3, 0]}, ValueError, r"successes: column 'k' has missing .*in 1 of 4 rows"),
        (
            {"n": [4, -5, 6, 2]},
            ValueError,
            r"trials: column 'n' has negative values in 1 of 4 rows",
        ),
        (
            {"k": [1, 9, 3, 0]},
            ValueError,
            r"successes: column 'k' exceeds trials column 'n' in 1 of 4 rows",
        ),
        (
            {"n": [4.5, 5, 6, 2]},
            ValueError,
            r"trials: column 'n' has values that are not whole numbers in 1",
        ),
        (
            {"n": [4, np.inf, 6, 2]},
            ValueError,
            r"trials: column 'n' has .*non-finite values .*in 1 of 4 rows",
        ),
        ({"k": ["1", "2", "3", "0"]}, TypeError, r"successes: column 'k' must be numeric"),
        (
            {"g": ["a", None, "b", "c"]},
            ValueError,
            r"group: column 'g' has missing labels in 1 of 4 rows",
        ),
    ],
)
def test_bad_values_name_the_column(change, error, pattern):
    df = GOOD.assign(**change)
    with pytest.raises(error, match=pattern):
        binomial(df)


def test_missing_column():
    with pytest.raises(
        ValueError, match=r"trials: no column 'nope' in the data; columns are 'g', 'k', 'n', 'y'"
    ):
        poolwise.fit(GOOD, group="g", successes="k", trials="nope")


def test_empty_table():
    with pytest.raises(ValueError, match="data: the table has no rows"):
        binomial(GOOD.iloc[:0])


def test_single_group():
    with pytest.raises(ValueError, match=r"group: column 'g' has a single group \('a'\)"):
        binomial(GOOD.iloc[:2])


def test_infinite_outcome():
    with pytest.raises(ValueError, match=r"y: column 'y' has .*non-finite values .*in 1 of 4 rows"):
        poolwise.fit(GOOD.assign(y=[1.0, np.inf, 2.0, 3.0]), group="g", y="y")


def test_nonpositive_standard_error():
    with pytest.raises(ValueError, match=r"se: column 'n' has values that are zero or negative"):
        poolwise.fit(GOOD.assign(n=[1, 1, 0, 1]).drop_duplicates("g"), group="g", y="y", se="n")


def test_known_se_needs_one_row_per_group():
    with pytest.raises(
        ValueError, match=r"se: expected one estimate per group, but group 'a' has 2 rows"
    ):
        poolwise.fit(GOOD, group="g", y="y", se="n")


def test_columns_of_no_family():
    with pytest.raises(TypeError, match="name the outcome columns of one family"):
        poolwise.fit(GOOD, group="g", y="y", trials="n")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"pooling": "some"}, ValueError, "pooling must be one of"),
        ({"method": "mcmc"}, ValueError, "method must be one of"),
        ({"draws": 0}, ValueError, "draws must be a positive integer"),
        ({"hdi_prob": 1.5}, ValueError, "hdi_prob must lie strictly between 0 and 1"),
        ({"seed": "x"}, TypeError, "seed must be an integer"),
        (
            {"priors": {"tau": poolwise.HalfNormal(1)}},
            ValueError,
            r"priors: unknown hyperparameter 'tau' for the binomial family; valid names are a, b, kappa, phi",
        ),
        (
            {"priors": {"kappa": poolwise.Normal(0, 1)}},
            ValueError,
            r"priors\['kappa'\]: Normal\(mu=0, sigma=1\) has support",
        ),
        (
            {"priors": {"a": 1.0, "phi": 0.5}},
            ValueError,
            r"priors: give the binomial population as \(phi, kappa\) or as \(a, b\), not a mix",
        ),
        ({"priors": {"a": poolwise.Gamma(1, 1)}}, ValueError, r"give a prior for 'b' too"),
        ({"priors": {"kappa": -1}}, ValueError, r"priors\['kappa'\]: a fixed value must be finite"),
        ({"priors": {"kappa": "big"}}, TypeError, r"priors\['kappa'\] must be a poolwise prior"),
        ({"priors": [1]}, TypeError, "priors must be a dict"),
    ],
)
def test_bad_options(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        binomial(GOOD, **kwargs)


def test_bad_prior_parameters():
    with pytest.raises(
        ValueError, match="HalfCauchy: beta must be a positive finite number, got -1"
    ):
        poolwise.HalfCauchy(-1)
    with pytest.raises(ValueError, match="Uniform: need finite lower < upper"):
        poolwise.Uniform(1, 0)


def test_data_of_the_wrong_type():
    with pytest.raises(TypeError, match="data must be a dataframe"):
        poolwise.fit([1, 2, 3], group="g", y="y")
    with pytest.raises(ValueError, match="data: no file matches 'missing.csv'"):
        poolwise.fit("missing.csv", group="g", y="y")
