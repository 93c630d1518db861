"""The regressions that calibration draws: each family's data follow its model given the truth,
the truth follows the priors, and the group effects are ZeroSumNormal(sigma)."""

import numpy as np
import pytest

from poolwise.simulate_formula import FORMULAS, PRIORS, SIZES, simulate_regression

# big groups, so that the standardized residuals test the generative model
BIG = {
    "binomial": (400,) * 6,
    "bernoulli": (400,) * 6,
    "poisson": (40.0,) * 6,
    "normal": (400,) * 6,
}


def _residuals(family, df, truth, b):
    group = df["group"].str[1:].astype(int).to_numpy()
    eta = truth["Intercept"] + truth["x"] * df["x"].to_numpy() + b[group]
    if family in ("binomial", "bernoulli"):
        p = 1 / (1 + np.exp(-eta))
        n = df["trials"].to_numpy() if family == "binomial" else 1
        y = df["successes"] if family == "binomial" else df["y"]
        return ((y - n * p) / np.sqrt(n * p * (1 - p))).to_numpy()
    if family == "poisson":
        mean = df["exposure"].to_numpy() * np.exp(eta)
        return ((df["counts"] - mean) / np.sqrt(mean)).to_numpy()
    return ((df["y"] - eta) / truth["sigma"]).to_numpy()


@pytest.mark.parametrize("family", list(FORMULAS))
def test_data_follow_the_model_given_the_truth(family):
    z = np.concatenate(
        [
            _residuals(family, *simulate_regression(BIG[family], PRIORS[family], s, family))
            for s in range(40)
        ]
    )
    # standardized residuals have mean 0 and variance 1: within 5 standard errors
    assert abs(z.mean()) < 5 * z.std() / np.sqrt(z.size)
    assert abs(np.mean(z**2) - 1) < 5 * np.std(z**2) / np.sqrt(z.size)


@pytest.mark.parametrize("family", list(FORMULAS))
def test_layout_of_each_family(family):
    df, truth, b = simulate_regression((2, 5, 3), PRIORS[family], 7, family)
    counts = df.groupby("group").size().to_numpy()
    if SIZES[family] == "rows":  # x alternates 0, 1, 0, ... within a group
        assert counts.tolist() == [2, 5, 3]
        assert df["x"].tolist()[:7] == [0, 1, 0, 1, 0, 1, 0]
    else:  # two cells x = 0, 1 per group, each of the group's size
        assert counts.tolist() == [2, 2, 2]
        size = df["trials"] if family == "binomial" else df["exposure"]
        assert size.tolist() == [2, 2, 5, 5, 3, 3]
    assert abs(b.sum()) < 1e-12 and set(truth) == set(PRIORS[family])


def test_truth_follows_the_priors_and_effects_are_zero_sum_normal():
    j, n = 4, 2000
    draws = [simulate_regression((1,) * j, PRIORS["normal"], s, "normal") for s in range(n)]
    intercept = np.array([t["Intercept"] for _, t, _ in draws])
    sigma = np.array([t["sigma"] for _, t, _ in draws])
    # Normal(0, 1) and HalfNormal(1): mean 0 and sqrt(2/pi), within 5 standard errors
    assert abs(intercept.mean()) < 5 / np.sqrt(n)
    assert abs(sigma.mean() - np.sqrt(2 / np.pi)) < 5 * sigma.std() / np.sqrt(n)
    # ZeroSumNormal(sd): each effect has variance sd^2 (J - 1) / J
    z = np.concatenate([b / t["1|group_sigma"] for _, t, b in draws]) * np.sqrt(j / (j - 1))
    assert abs(np.mean(z**2) - 1) < 5 * np.std(z**2) / np.sqrt(z.size)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        simulate_regression((2, 2), PRIORS["normal"], 1, "gamma")
