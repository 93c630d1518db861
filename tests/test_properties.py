"""Properties that hold for every data set (hypothesis generates the data sets).

Exact-engine results are deterministic mixtures, so invariances hold to rounding (rtol 1e-7);
intervals too, since they come from the mixtures rather than from draws.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import poolwise

# with few groups the default kappa prior leaves kappa's posterior without a mean; the fits say so
pytestmark = pytest.mark.filterwarnings(
    "ignore:the posterior of kappa has so heavy an upper tail:poolwise.errors.PoolwiseWarning"
)
EXACT = ["mean", "sd", "shrinkage", "raw", "n"]


@st.composite
def binomial_data(draw, min_groups=2, max_groups=6):
    j = draw(st.integers(min_groups, max_groups))
    n = draw(st.lists(st.integers(1, 60), min_size=j, max_size=j))
    k = [draw(st.integers(0, m)) for m in n]
    return pd.DataFrame({"g": [f"g{i}" for i in range(j)], "k": k, "n": n})


@st.composite
def poisson_data(draw):
    j = draw(st.integers(2, 6))
    e = draw(st.lists(st.floats(0.2, 30.0), min_size=j, max_size=j))
    c = draw(st.lists(st.integers(0, 40), min_size=j, max_size=j))
    return pd.DataFrame({"g": [f"g{i}" for i in range(j)], "c": c, "e": e})


@st.composite
def normal_rows(draw):
    j = draw(st.integers(2, 5))
    sizes = draw(st.lists(st.integers(2, 6), min_size=j, max_size=j))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, draw(st.floats(0.1, 3.0)), j)
    g = np.repeat([f"g{i}" for i in range(j)], sizes)
    y = np.repeat(theta, sizes) + rng.normal(0, 1, len(g))
    return pd.DataFrame({"g": g, "y": y})


BINOMIAL = {"group": "g", "successes": "k", "trials": "n"}
POISSON = {"group": "g", "counts": "c", "exposure": "e"}


def fit(df, **kw):
    return poolwise.fit(df, seed=1, draws=200, **kw)


# ---------------------------------------------------------------- shrinkage
@given(binomial_data(), st.floats(0.05, 0.95), st.floats(0.5, 200.0))
def test_binomial_mean_between_raw_and_population(df, phi, kappa):
    f = fit(df, **BINOMIAL, priors={"phi": phi, "kappa": kappa})
    raw, mean = f.groups["raw"], f.groups["mean"]
    lo, hi = np.minimum(raw, phi), np.maximum(raw, phi)
    assert ((lo - 1e-12 <= mean) & (mean <= hi + 1e-12)).all()


@given(poisson_data(), st.floats(0.1, 5.0), st.floats(0.5, 50.0))
def test_poisson_mean_between_raw_and_population(df, mu, kappa):
    f = fit(df, **POISSON, priors={"mu": mu, "kappa": kappa})
    raw, mean = f.groups["raw"], f.groups["mean"]
    lo, hi = np.minimum(raw, mu), np.maximum(raw, mu)
    assert ((lo * (1 - 1e-12) <= mean) & (mean <= hi * (1 + 1e-12))).all()


@given(binomial_data(min_groups=3))
def test_eb_mean_between_raw_and_estimated_population(df):
    with warnings.catch_warnings():  # estimates at the edge of their range are reported
        warnings.simplefilter("ignore", poolwise.PoolwiseWarning)
        f = fit(df, **BINOMIAL, method="eb")
    phi = f.population.loc["phi", "mean"]
    raw, mean = f.groups["raw"], f.groups["mean"]
    lo, hi = np.minimum(raw, phi), np.maximum(raw, phi)
    assert ((lo - 1e-9 <= mean) & (mean <= hi + 1e-9)).all()


@given(binomial_data(min_groups=3))
def test_more_data_never_shrinks_more(df):
    # exact engine: shrinkage kappa / (kappa + n) averaged over the posterior falls with n
    f = fit(df, **BINOMIAL, method="exact")
    g = f.groups.sort_values("n")
    assert (np.diff(g["shrinkage"].to_numpy()) <= 1e-12).all()


@given(binomial_data(), st.floats(0.05, 0.95), st.floats(0.5, 200.0), st.integers(2, 5))
def test_more_trials_at_the_same_rate_shrink_less(df, phi, kappa, factor):
    priors = {"phi": phi, "kappa": kappa}
    more = df.assign(k=df["k"] * factor, n=df["n"] * factor)
    a, b = fit(df, **BINOMIAL, priors=priors), fit(more, **BINOMIAL, priors=priors)
    assert (b.groups["shrinkage"] <= a.groups["shrinkage"] + 1e-12).all()


# ---------------------------------------------------------------- invariances
@given(binomial_data(), st.randoms(use_true_random=False))
def test_permuting_rows_and_relabelling_change_nothing(df, random):
    base = fit(df, **BINOMIAL)
    order = list(range(len(df)))
    random.shuffle(order)
    names = {f"g{i}": f"label-{random.random():.9f}-{i}" for i in range(len(df))}
    other = df.iloc[order].assign(g=lambda d: d["g"].map(names))
    f = fit(other, **BINOMIAL)
    back = f.groups.rename(index={v: k for k, v in names.items()}).loc[base.groups.index]
    pd.testing.assert_frame_equal(back, base.groups, check_names=False, rtol=1e-7)
    # every column, intervals too (the exact engine's come from its mixtures); a mean or sd that
    # does not exist is missing in both
    pd.testing.assert_frame_equal(f.population, base.population, rtol=1e-7)


def _split(df, columns, rng):
    """Each row becomes two rows whose ``columns`` add up to the original."""
    first = df.copy()
    for c in columns:
        first[c] = np.floor(df[c] * rng.uniform(0, 1, len(df))).astype(df[c].dtype)
    if "k" in columns:  # successes may not exceed trials in either part
        first["k"] = np.minimum(first["k"], first["n"])
        first["k"] = np.maximum(first["k"], first["n"] - (df["n"] - df["k"]))
    second = df.copy()
    for c in columns:
        second[c] = df[c] - first[c]
    return pd.concat([first, second], ignore_index=True)


@given(binomial_data(), st.integers(0, 2**16))
def test_splitting_rows_binomial(df, seed):
    split = _split(df, ["n", "k"], np.random.default_rng(seed))
    a, b = fit(df, **BINOMIAL), fit(split, **BINOMIAL)
    pd.testing.assert_frame_equal(a.groups, b.groups)


@given(poisson_data(), st.integers(0, 2**16))
def test_splitting_rows_poisson(df, seed):
    rng = np.random.default_rng(seed)
    first = df.assign(c=np.floor(df["c"] * rng.uniform(0, 1, len(df))).astype(int))
    first["e"] = df["e"] / 2
    second = df.assign(c=df["c"] - first["c"], e=df["e"] - first["e"])
    split = pd.concat([first, second], ignore_index=True)
    a, b = fit(df, **POISSON), fit(split, **POISSON)
    pd.testing.assert_frame_equal(a.groups[EXACT], b.groups[EXACT], rtol=1e-9)


@given(normal_rows(), st.integers(0, 2**16))
def test_splitting_rows_normal(df, seed):
    # normal rows summarised per part of a group (n, mean, sd) give the fit of the raw rows
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 2, len(df))
    summary = (
        df.assign(part=part)
        .groupby(["g", "part"])["y"]
        .agg(n="size", mean="mean", sd="std")
        .reset_index()
    )
    a = fit(df, group="g", y="y")
    b = fit(summary, group="g", y="mean", n="n", sd="sd")
    pd.testing.assert_frame_equal(a.groups[EXACT], b.groups[EXACT], rtol=1e-7)


@given(normal_rows(), st.floats(1e-3, 1e3), st.booleans())
def test_scaling_y_scales_locations(df, c, negative):
    c = -c if negative else c
    a = fit(df, group="g", y="y")
    b = fit(df.assign(y=df["y"] * c), group="g", y="y")
    np.testing.assert_allclose(
        b.groups["mean"], c * a.groups["mean"], rtol=1e-5, atol=1e-9 * abs(c)
    )
    np.testing.assert_allclose(b.groups["sd"], abs(c) * a.groups["sd"], rtol=1e-5)
    np.testing.assert_allclose(b.groups["shrinkage"], a.groups["shrinkage"], rtol=1e-5, atol=1e-9)
    pop_a, pop_b = a.population["mean"], b.population["mean"]
    assert pop_b["mu"] == pytest.approx(c * pop_a["mu"], rel=1e-5, abs=1e-9 * abs(c))
    for name in ("tau", "sigma"):
        assert pop_b[name] == pytest.approx(abs(c) * pop_a[name], rel=1e-5)
