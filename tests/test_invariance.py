"""Seeds fix every draw; row order and the type of the group labels change nothing."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import poolwise

# few groups leave kappa's posterior with a heavy tail under the default prior; the fits say so
pytestmark = pytest.mark.filterwarnings(
    "ignore:the posterior of kappa has so heavy an upper tail:poolwise.errors.PoolwiseWarning"
)

SURGICAL = pd.read_csv(poolwise.example_path("surgical"))
ARGS = {"group": "hospital", "successes": "r_deaths", "trials": "n_operations"}


def test_same_seed_same_draws():
    a = poolwise.fit(SURGICAL, **ARGS, seed=7)
    b = poolwise.fit(SURGICAL, **ARGS, seed=7)
    pd.testing.assert_frame_equal(a.groups, b.groups)
    pd.testing.assert_frame_equal(a.population, b.population)
    np.testing.assert_array_equal(a.theta_draws(), b.theta_draws())
    c = poolwise.fit(SURGICAL, **ARGS, seed=8)
    assert not np.array_equal(a.theta_draws(), c.theta_draws())
    # exact moments do not depend on the seed at all
    np.testing.assert_allclose(a.groups["mean"], c.groups["mean"], rtol=1e-12)


def test_row_order_changes_nothing():
    shuffled = SURGICAL.sample(frac=1.0, random_state=3)
    a = poolwise.fit(SURGICAL, **ARGS, seed=1)
    b = poolwise.fit(shuffled, **ARGS, seed=1)
    pd.testing.assert_frame_equal(a.groups, b.groups)
    pd.testing.assert_frame_equal(a.population, b.population)


@pytest.mark.parametrize("kind", ["str", "int", "category"])
def test_label_types_change_nothing(kind):
    df = SURGICAL.copy()
    base = poolwise.fit(df, **ARGS, seed=1)
    labels = {
        "str": df["hospital"],
        "int": df["hospital_index"],
        "category": df["hospital"].astype("category"),
    }[kind]
    df["label"] = labels
    fit = poolwise.fit(df, **{**ARGS, "group": "label"}, seed=1)
    np.testing.assert_allclose(
        fit.groups["mean"].to_numpy(), base.groups["mean"].to_numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(
        fit.groups["hdi_low"].to_numpy(), base.groups["hdi_low"].to_numpy(), rtol=1e-12
    )
    pd.testing.assert_frame_equal(fit.population, base.population)


def test_rows_of_a_group_are_combined():
    # splitting each hospital's operations over two rows gives the same fit
    half = SURGICAL.copy()
    half["n_operations"] = SURGICAL["n_operations"] // 2
    half["r_deaths"] = SURGICAL["r_deaths"] // 2
    rest = SURGICAL.copy()
    rest["n_operations"] -= half["n_operations"]
    rest["r_deaths"] -= half["r_deaths"]
    split = pd.concat([half, rest])
    a = poolwise.fit(SURGICAL, **ARGS, seed=1)
    b = poolwise.fit(split, **ARGS, seed=1)
    pd.testing.assert_frame_equal(a.groups, b.groups)
    assert b.n_rows == 2 * len(SURGICAL)


def test_import_does_not_import_jax():
    code = "import sys, poolwise; print('jax' in sys.modules, 'arviz' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
