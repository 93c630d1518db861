"""Hostile and edge inputs: each gives a correct result or a clear error naming the column.

Never NaN in the output, never a hang. One test (or parametrized case) per item of the list.
"""

import time

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise import PoolwiseWarning

# with few groups the default kappa prior leaves kappa's posterior without a mean; the fits say so
pytestmark = pytest.mark.filterwarnings(
    "ignore:the posterior of kappa has so heavy an upper tail:poolwise.errors.PoolwiseWarning"
)

BINOMIAL = {"group": "g", "successes": "k", "trials": "n"}
POISSON = {"group": "g", "counts": "c", "exposure": "e"}
NORMAL = {"group": "g", "y": "y"}
KNOWN_SE = {"group": "g", "y": "y", "se": "se"}


def finite(fit) -> None:
    """Every number of the groups and population tables is finite, but for the means and sds of
    hyperparameters that the fit warns do not exist (shown as missing)."""
    pop = fit.population
    heavy = [
        n for n in pop.index if any(f"posterior of {n} has so heavy" in w for w in fit.warnings)
    ]
    missing = pop[["mean", "sd"]].isna().any(axis=1)
    assert not missing.any() or heavy, pop
    for table in (fit.groups, pop.drop(columns=["mean", "sd"]), pop[~missing]):
        values = table.select_dtypes("number").to_numpy(dtype=float)
        assert np.isfinite(values).all(), table


def binomial(k, n, g=None):
    return pd.DataFrame({"g": g if g is not None else list("abcdefgh"[: len(k)]), "k": k, "n": n})


def poisson(c, e):
    return pd.DataFrame({"g": list("abcdefgh"[: len(c)]), "c": c, "e": e})


def normal(y, g):
    return pd.DataFrame({"g": g, "y": y})


def rows_for_scale(seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat(list("abcdef"), 10)
    y = np.repeat(rng.normal(size=6), 10) + rng.normal(size=60)
    return g, y


# ---------------------------------------------------------------- missing and non-finite values
@pytest.mark.parametrize(
    ("frame", "args", "column"),
    [
        (binomial([np.nan] * 3, [5, 5, 5]), BINOMIAL, "k"),
        (binomial([1, 2, 3], [np.nan] * 3), BINOMIAL, "n"),
        (poisson([np.nan] * 3, [1.0, 1.0, 1.0]), POISSON, "c"),
        (poisson([1, 2, 3], [np.nan] * 3), POISSON, "e"),
        (normal([np.nan] * 4, list("aabb")), NORMAL, "y"),
        (pd.DataFrame({"g": list("abc"), "y": [1.0, 2, 3], "se": [np.nan] * 3}), KNOWN_SE, "se"),
        (pd.DataFrame({"g": [None] * 3, "y": [1.0, 2, 3]}), NORMAL, "g"),
    ],
)
def test_every_value_missing_in_a_column(frame, args, column):
    n = len(frame)
    with pytest.raises(ValueError, match=rf"column '{column}' has missing.* in {n} of {n} rows"):
        poolwise.fit(frame, **args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("make", "args", "column"),
    [
        (lambda v: normal([1.0, v, 2.0, 3.0], list("aabb")), NORMAL, "y"),
        (lambda v: poisson([1, 2], [1.0, v]), POISSON, "e"),
        (
            lambda v: pd.DataFrame({"g": list("ab"), "y": [1.0, v], "se": [1.0, 1.0]}),
            KNOWN_SE,
            "y",
        ),
        (lambda v: binomial([1, 2], [5.0, v]), BINOMIAL, "n"),
    ],
)
def test_nan_and_infinite_values(make, args, column, bad):
    with pytest.raises(ValueError, match=rf"column '{column}' has missing or non-finite"):
        poolwise.fit(make(bad), **args)


# ---------------------------------------------------------------- impossible counts
@pytest.mark.parametrize(
    ("frame", "args", "message"),
    [
        (binomial([0, 1], [-1, 5]), BINOMIAL, r"trials: column 'n' has negative values in 1 of 2"),
        (binomial([0, 1], [2.5, 5]), BINOMIAL, r"trials: column 'n' has values that are not whole"),
        (binomial([-1, 1], [5, 5]), BINOMIAL, r"successes: column 'k' has negative values"),
        (binomial([0.5, 1], [5, 5]), BINOMIAL, r"successes: column 'k' has values that are not"),
        (poisson([-1, 2], [1.0, 1.0]), POISSON, r"counts: column 'c' has negative values"),
        (poisson([1.5, 2], [1.0, 1.0]), POISSON, r"counts: column 'c' has values that are not"),
        (poisson([1, 2], [-1.0, 1.0]), POISSON, r"exposure: column 'e' has negative values"),
    ],
)
def test_negative_or_fractional_trials_counts_exposure(frame, args, message):
    with pytest.raises(ValueError, match=message):
        poolwise.fit(frame, **args)


def test_fractional_exposure_is_data():
    fit = poolwise.fit(poisson([1, 3, 0], [0.5, 2.25, 1.75]), **POISSON, seed=1, draws=500)
    finite(fit)
    assert fit.groups["raw"].tolist() == [2.0, 3 / 2.25, 0.0]


def test_successes_above_trials():
    with pytest.raises(ValueError, match=r"column 'k' exceeds trials column 'n' in 1 of 2 rows"):
        poolwise.fit(binomial([6, 1], [5, 5]), **BINOMIAL)


def test_zero_trials():
    # a zero-trial row inside a group with trials is harmless: it adds nothing
    fit = poolwise.fit(binomial([0, 1, 3], [0, 5, 6], g=list("aab")), **BINOMIAL, seed=1, draws=500)
    finite(fit)
    assert fit.groups["raw"].tolist() == [1 / 5, 3 / 6]
    # a group with no trials at all has no data and no raw estimate: refused by name
    with pytest.raises(ValueError, match=r"trials: 1 of 3 groups have no trials at all \('a'\)"):
        poolwise.fit(binomial([0, 1, 3], [0, 5, 6]), **BINOMIAL)


def test_counts_over_zero_exposure():
    with pytest.raises(
        ValueError,
        match=r"exposure: column 'e' is zero where counts column 'c' is positive in 1 of 2",
    ):
        poolwise.fit(poisson([1, 2], [0.0, 1.0]), **POISSON)
    with pytest.raises(
        ValueError, match=r"exposure: 1 of 3 groups have no exposure at all \('a'\)"
    ):
        poolwise.fit(poisson([0, 2, 1], [0.0, 1.0, 2.0]), **POISSON)


# ---------------------------------------------------------------- few groups, little data
def test_single_group():
    with pytest.raises(ValueError, match=r"group: column 'g' has a single group \('a'\)"):
        poolwise.fit(binomial([1, 2], [5, 5], g=["a", "a"]), **BINOMIAL)


@pytest.mark.parametrize(
    ("frame", "args"),
    [
        (binomial([1, 4], [5, 5]), BINOMIAL),
        (poisson([1, 4], [2.0, 2.0]), POISSON),
        (normal([1.0, 2.0, 3.0, 4.5], list("aabb")), NORMAL),
        (pd.DataFrame({"g": list("ab"), "y": [1.0, 2.0], "se": [1.0, 1.0]}), KNOWN_SE),
    ],
)
def test_two_groups(frame, args):
    fit = poolwise.fit(frame, **args, seed=1, draws=500)
    assert fit.method == "exact" and fit.n_groups == 2
    finite(fit)
    raw, mean = fit.groups["raw"].to_numpy(), fit.groups["mean"].to_numpy()
    # pooled estimates move towards each other, never past each other
    assert raw[0] <= mean[0] <= mean[1] <= raw[1]


def test_one_observation_per_group_says_where_sigma_comes_from():
    frame = normal([1.0, 2.0, 3.0, 4.0, 5.0, 7.0], list("abcdef"))
    with pytest.warns(PoolwiseWarning, match="single observation"):
        fit = poolwise.fit(frame, **NORMAL, seed=1, draws=500)
    assert any("tau² + sigma²" in w for w in fit.warnings)
    finite(fit)


@pytest.mark.parametrize("outcome", ["successes", "failures"])
def test_all_successes_or_all_failures_in_every_group(outcome):
    n = np.array([5, 6, 7, 8])
    k = n if outcome == "successes" else np.zeros(4, int)
    fit = poolwise.fit(binomial(k, n), **BINOMIAL, seed=1, draws=500)
    finite(fit)
    mean = fit.groups["mean"].to_numpy()
    assert ((mean > 0) & (mean < 1)).all()
    if outcome == "successes":
        assert (mean > 0.5).all() and fit.population.loc["phi", "mean"] > 0.5
    else:
        assert (mean < 0.5).all() and fit.population.loc["phi", "mean"] < 0.5


def test_all_zero_counts():
    fit = poolwise.fit(poisson([0, 0, 0, 0], [5.0, 6, 7, 8]), **POISSON, seed=1, draws=500)
    finite(fit)
    assert (fit.groups["mean"] > 0).all()


def test_constant_y_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"y: the values are identical within every group"):
        poolwise.fit(normal([3.0] * 6, list("aabbcc")), **NORMAL)


def test_constant_y_with_a_fixed_sigma():
    fit = poolwise.fit(
        normal([3.0] * 6, list("aabbcc")), **NORMAL, priors={"sigma": 1.0}, seed=1, draws=500
    )
    finite(fit)
    np.testing.assert_allclose(fit.groups["mean"], 3.0, rtol=1e-9)


def test_constant_estimates_with_known_se():
    frame = pd.DataFrame({"g": list("abc"), "y": [3.0] * 3, "se": [1.0] * 3})
    fit = poolwise.fit(frame, **KNOWN_SE, seed=1, draws=500)
    finite(fit)
    np.testing.assert_allclose(fit.groups["mean"], 3.0, rtol=1e-9)


@pytest.mark.parametrize("scale", [1e9, 1e-9])
def test_y_on_extreme_scales(scale):
    g, y = rows_for_scale()
    base = poolwise.fit(normal(y, g), **NORMAL, seed=1, draws=500)
    fit = poolwise.fit(normal(y * scale, g), **NORMAL, seed=1, draws=500)
    finite(fit)
    for column in ("mean", "sd"):
        np.testing.assert_allclose(fit.groups[column], base.groups[column] * scale, rtol=1e-5)
    np.testing.assert_allclose(fit.population["mean"], base.population["mean"] * scale, rtol=1e-5)


# ---------------------------------------------------------------- labels
def test_a_million_distinct_labels():
    rng = np.random.default_rng(3)
    j = 1_000_000
    n = rng.integers(1, 30, j)
    rate = rng.beta(6.0, 14.0, j)  # mean 0.3; the groups differ, so eb is not singular
    frame = pd.DataFrame({"g": np.arange(j), "k": rng.binomial(n, rate), "n": n})
    start = time.perf_counter()
    fit = poolwise.fit(frame, **BINOMIAL, seed=1, draws=100)
    assert time.perf_counter() - start < 120
    assert fit.n_groups == j and fit.method == "eb"
    finite(fit)
    assert abs(fit.population.loc["phi", "mean"] - 0.3) < 0.01


def test_nan_labels():
    frame = binomial([1, 2, 3], [5, 5, 5], g=["a", np.nan, "b"])
    with pytest.raises(ValueError, match=r"group: column 'g' has missing labels in 1 of 3 rows"):
        poolwise.fit(frame, **BINOMIAL)


@pytest.mark.parametrize(
    "labels",
    [["a", "", "b"], ["é", "日本", "🙂"], ["a", 1, 2.5], [True, False, None]],
    ids=["empty", "unicode", "mixed", "bool-with-null"],
)
def test_odd_labels(labels):
    frame = binomial([1, 2, 3], [5, 6, 7], g=labels)
    if None in labels:
        with pytest.raises(ValueError, match="missing labels"):
            poolwise.fit(frame, **BINOMIAL)
        return
    fit = poolwise.fit(frame, **BINOMIAL, seed=1, draws=500)
    finite(fit)
    assert fit.n_groups == 3
    assert set(fit.groups.index) == set(labels)
    by_label = dict(zip(labels, [1 / 5, 2 / 6, 3 / 7], strict=True))
    for label in labels:
        assert fit.groups.loc[label, "raw"] == pytest.approx(by_label[label])


def test_empty_table():
    frame = pd.DataFrame(
        {
            "g": pd.Series([], dtype=object),
            "k": pd.Series([], dtype=int),
            "n": pd.Series([], dtype=int),
        }
    )
    with pytest.raises(ValueError, match="the table has no rows"):
        poolwise.fit(frame, **BINOMIAL)


def test_strings_for_y():
    with pytest.raises(TypeError, match=r"y: column 'y' must be numeric"):
        poolwise.fit(normal(["1", "2", "3", "4"], list("aabb")), **NORMAL)


# ---------------------------------------------------------------- improper posteriors
@pytest.mark.parametrize(
    ("frame", "args", "priors"),
    [
        (
            pd.DataFrame({"g": list("ab"), "y": [1.0, 2.0], "se": [1.0, 1.0]}),
            KNOWN_SE,
            {"mu": poolwise.Flat(), "tau": poolwise.Flat()},
        ),
        (binomial([1, 4], [5, 5]), BINOMIAL, {"phi": poolwise.Flat(), "kappa": poolwise.Flat()}),
    ],
)
def test_exact_refuses_improper_posteriors(frame, args, priors):
    with pytest.raises(ValueError, match="improper"):
        poolwise.fit(frame, **args, priors=priors, method="exact")


@pytest.mark.parametrize("offset", [1e9, -1e9])
def test_y_far_from_zero(offset):
    # sums of squares about zero would lose every digit of the spread at 1e9
    g, y = rows_for_scale()
    base = poolwise.fit(normal(y, g), **NORMAL, seed=1, draws=500)
    fit = poolwise.fit(normal(y + offset, g), **NORMAL, seed=1, draws=500)
    finite(fit)
    np.testing.assert_allclose(fit.groups["mean"] - offset, base.groups["mean"], atol=1e-5)
    np.testing.assert_allclose(fit.groups["sd"], base.groups["sd"], rtol=1e-5)
    np.testing.assert_allclose(
        fit.population.loc[["tau", "sigma"], "mean"],
        base.population.loc[["tau", "sigma"], "mean"],
        rtol=1e-5,
    )


def test_eb_with_all_successes_draws_theta():
    # phi is estimated at 1, so b rounds to 0: the draws must still come (a point mass at 1)
    n = np.array([5, 6, 7, 8])
    with pytest.warns(PoolwiseWarning, match="edge of its range"):
        fit = poolwise.fit(binomial(n, n), **BINOMIAL, method="eb", seed=1, draws=200)
    draws = fit.theta_draws()
    assert np.isfinite(draws).all() and ((draws > 0.9) & (draws <= 1)).all()


def test_conditional_draws_when_a_population_parameter_rounds_to_zero():
    from poolwise.families import Binomial

    params = Binomial().complete({"phi": np.array([[1.0]]), "kappa": np.array([[3.0]])})
    stats = {"successes": np.array([3, 0]), "trials": np.array([3, 2])}
    draws = Binomial().sample_conditional(params, stats, np.random.default_rng(0))
    assert draws[0, 0] == 1.0 and 0 < draws[0, 1] <= 1


def test_auto_leaves_a_singular_eb_fit_for_quadrature():
    # many groups, no between-group variation: eb would put tau at 0 and collapse every interval
    rng = np.random.default_rng(0)
    j = 20_001
    frame = pd.DataFrame({"g": np.arange(j), "y": rng.normal(0, 0.9, j), "se": np.ones(j)})
    fit = poolwise.fit(frame, **KNOWN_SE, seed=1, draws=100)
    assert fit.method == "exact" and "singular fit" in fit.method_reason
    finite(fit)
    assert (fit.groups["hdi_high"] - fit.groups["hdi_low"] > 0).all()
    with pytest.warns(PoolwiseWarning, match="tau was estimated at the edge"):
        poolwise.fit(frame, **KNOWN_SE, seed=1, draws=100, method="eb")
