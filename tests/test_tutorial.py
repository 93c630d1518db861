"""The tutorial's six students under a fixed Beta(6, 4) population (seed 002)."""

import numpy as np
import pandas as pd
import pytest

import poolwise

STUDENTS = pd.DataFrame(
    {
        "student": ["Alyssa", "Ben", "Carmen", "Diego", "Emi", "Farid"],
        "k": [70, 28, 6, 3, 2, 0],
        "n": [100, 40, 10, 5, 2, 1],
    }
)
SHIFTS = {
    "Alyssa": -0.009,
    "Ben": -0.020,
    "Carmen": 0.0,
    "Diego": 0.0,
    "Emi": -0.333,
    "Farid": 0.545,
}


@pytest.mark.parametrize("priors", [{"a": 6, "b": 4}, {"phi": 0.6, "kappa": 10}])
def test_posterior_means_are_the_closed_form(priors):
    fit = poolwise.fit(STUDENTS, group="student", successes="k", trials="n", priors=priors, seed=0)
    k = STUDENTS.set_index("student")["k"]
    n = STUDENTS.set_index("student")["n"]
    expected = (6 + k) / (10 + n)
    np.testing.assert_allclose(
        fit.groups["mean"], expected.loc[fit.groups.index], rtol=0, atol=1e-12
    )
    shift = (fit.groups["mean"] - fit.groups["raw"]).round(3)
    assert shift.to_dict() == pytest.approx(SHIFTS, abs=1e-12)
    # the shrinkage weight is kappa / (kappa + n)
    np.testing.assert_allclose(
        fit.groups["shrinkage"], (10 / (10 + n)).loc[fit.groups.index], atol=1e-12
    )
    assert fit.population.loc["phi", "mean"] == pytest.approx(0.6)
    assert fit.population.loc["a", "mean"] == pytest.approx(6.0)


def test_posterior_sd_and_interval_are_those_of_the_beta_posterior():
    from scipy import stats

    fit = poolwise.fit(
        STUDENTS, group="student", successes="k", trials="n", priors={"a": 6, "b": 4}, seed=0
    )
    emi = stats.beta(6 + 2, 4 + 0)
    assert fit.groups.loc["Emi", "sd"] == pytest.approx(emi.std(), rel=1e-12)
    lo, hi = fit.groups.loc["Emi", ["hdi_low", "hdi_high"]]
    assert emi.cdf(hi) - emi.cdf(lo) == pytest.approx(0.94, abs=1e-9)
    assert emi.pdf(hi) == pytest.approx(emi.pdf(lo), rel=1e-6)
