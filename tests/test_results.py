"""PoolFit: ArviZ data, predictions and printed tables agree with the exact numbers."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import poolwise

SCHOOLS = pd.read_csv(poolwise.example_path("eight_schools"))
PRIORS = {"mu": poolwise.Normal(0, 5), "tau": poolwise.HalfCauchy(5)}


@pytest.fixture(scope="module")
def schools_fit():
    return poolwise.fit(SCHOOLS, group="school", y="y", se="sigma", priors=PRIORS, seed=11)


def test_arviz_draws_agree_with_exact_moments(schools_fit):
    idata = schools_fit.to_arviz()
    post = idata.posterior
    assert dict(post.sizes) == {"chain": 4, "draw": 1000, "school": 8}
    assert list(post["school"].values) == list("ABCDEFGH")
    theta = post["theta"].values.reshape(4000, 8)
    exact = schools_fit.groups
    # independent draws: the mean of 4000 is within 4 standard errors (false alarm ~ 1e-4 each)
    assert np.all(
        np.abs(theta.mean(0) - exact["mean"].to_numpy())
        < 4 * exact["sd"].to_numpy() / np.sqrt(4000)
    )
    mu = post["mu"].values.ravel()
    pop = schools_fit.population.loc["mu"]
    assert abs(mu.mean() - pop["mean"]) < 4 * pop["sd"] / np.sqrt(4000)
    np.testing.assert_array_equal(idata.observed_data["y"].values, SCHOOLS["y"].to_numpy())


def test_predict_a_new_group_under_a_fixed_population():
    df = pd.DataFrame({"g": list("abc"), "k": [3, 5, 1], "n": [10, 10, 10]})
    fit = poolwise.fit(df, group="g", successes="k", trials="n", priors={"a": 3, "b": 7}, seed=0)
    out = fit.predict(2, size=20)
    assert list(out.index) == ["new_0", "new_1"]
    beta = stats.beta(3, 7)
    # 4000 draws: 4 standard errors
    assert abs(out.loc["new_0", "theta_mean"] - beta.mean()) < 4 * beta.std() / np.sqrt(4000)
    assert out.loc["new_0", "theta_sd"] == pytest.approx(beta.std(), rel=0.1)
    bb = stats.betabinom(20, 3, 7)
    assert abs(out.loc["new_1", "data_mean"] - bb.mean()) < 4 * bb.std() / np.sqrt(4000)


def test_predict_new_school_under_partial_pooling(schools_fit):
    out = schools_fit.predict(["Z"], seed=3)
    draws_mu = schools_fit.hyper_draws["mu"]
    assert out.loc["Z", "theta_mean"] == pytest.approx(draws_mu.mean(), abs=0.5)
    # a new school varies more than the population mean does
    assert out.loc["Z", "theta_sd"] > schools_fit.population.loc["mu", "sd"]


def test_summary_and_printed_tables(schools_fit):
    table = schools_fit.summary()
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert list(table.index[:2]) == ["mu", "tau"] and "theta[A]" in table.index
    text = repr(schools_fit)
    assert "pooling: partial; method: exact" in text
    assert "tau ~ HalfCauchy(beta=5)" in text
    assert "<table" in schools_fit._repr_html_()


def test_predict_rejects_an_empty_request(schools_fit):
    with pytest.raises(ValueError, match="new_groups: ask for at least one new group"):
        schools_fit.predict([])
