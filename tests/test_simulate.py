"""simulate(): the generative process; fit.simulate() and fit.check(): its posterior predictive."""

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.simulate import PredictiveCheck

COLUMNS = {
    "normal": {"y": "y"},
    "normal_se": {"y": "y", "se": "se"},
    "binomial": {"successes": "successes", "trials": "trials"},
    "poisson": {"counts": "counts", "exposure": "exposure"},
}
TRUTH = {
    "normal": {"mu": 1.0, "tau": 0.5, "sigma": 1.0},
    "normal_se": {"mu": 1.0, "tau": 0.5},
    "binomial": {"phi": 0.3, "kappa": 20.0},
    "poisson": {"mu": 2.0, "kappa": 5.0},
}


def sizes(family, j, rng):
    if family == "normal":
        return rng.integers(2, 30, j)
    if family == "normal_se":
        return rng.uniform(0.1, 1.0, j)
    if family == "binomial":
        return rng.integers(1, 200, j)
    return rng.uniform(0.5, 20.0, j)


def test_tutorial_three_levels_in_one_call():
    df = poolwise.simulate(
        family="binomial",
        hyperparameters={"phi": 0.6, "kappa": 10},
        group_sizes=[100, 40, 10, 5, 2, 1],
        seed=0,
    )
    assert list(df.columns) == ["group", "successes", "trials", "theta"]
    assert df["trials"].tolist() == [100, 40, 10, 5, 2, 1]
    assert (df["successes"] <= df["trials"]).all() and (df["successes"] >= 0).all()
    assert df.attrs["hyperparameters"] == {"phi": 0.6, "kappa": 10.0, "a": 6.0, "b": 4.0}
    again = poolwise.simulate("binomial", {"a": 6, "b": 4}, [100, 40, 10, 5, 2, 1], seed=0)
    pd.testing.assert_frame_equal(df, again)  # the same population in the other parametrization
    other = poolwise.simulate("binomial", {"a": 6, "b": 4}, [100, 40, 10, 5, 2, 1], seed=1)
    assert not df["theta"].equals(other["theta"])


@pytest.mark.parametrize("family", list(COLUMNS))
def test_columns_are_those_fit_reads(family):
    rng = np.random.default_rng(0)
    size = sizes(family, 5, rng)
    df = poolwise.simulate(family, TRUTH[family], size, seed=0)
    assert list(df.columns) == ["group", *COLUMNS[family], "theta"]
    if family == "normal":  # one row per observation, theta constant within a group
        assert len(df) == size.sum()
        assert df.groupby("group").size().tolist() == size.tolist()
        assert (df.groupby("group")["theta"].nunique() == 1).all()
    else:
        assert len(df) == 5
    fit = poolwise.fit(
        df, group="group", **COLUMNS[family], priors=TRUTH[family], seed=0, draws=100
    )
    assert fit.n_groups == 5


@pytest.mark.parametrize(
    ("family", "given", "mean_name"),
    [
        ("binomial", {"phi": 0.3, "kappa": 20.0}, "phi"),
        ("poisson", {"alpha": 4.0, "beta": 2.0}, "mu"),
        ("normal_se", {"mu": -1.0, "tau": 2.0}, "mu"),
    ],
)
def test_population_moments(family, given, mean_name):
    j = 20_000
    df = poolwise.simulate(family, given, np.ones(j), seed=5)
    hyper = df.attrs["hyperparameters"]
    theta = df["theta"].to_numpy()
    expected_mean = hyper[mean_name]
    if family == "binomial":
        expected_var = hyper["phi"] * (1 - hyper["phi"]) / (hyper["kappa"] + 1)
    elif family == "poisson":
        expected_var = hyper["mu"] ** 2 / hyper["kappa"]
    else:
        expected_var = hyper["tau"] ** 2
    assert abs(theta.mean() - expected_mean) < 4 * np.sqrt(expected_var / j)
    assert theta.var() == pytest.approx(expected_var, rel=0.05)
    if family == "poisson":
        assert hyper == {"mu": 2.0, "kappa": 4.0, "alpha": 4.0, "beta": 2.0}


def test_missing_hyperparameters_are_drawn_from_priors():
    a = poolwise.simulate("poisson", None, [1.0, 2.0], seed=1)
    b = poolwise.simulate("poisson", None, [1.0, 2.0], seed=1)
    c = poolwise.simulate("poisson", None, [1.0, 2.0], seed=2)
    assert a.attrs["hyperparameters"] == b.attrs["hyperparameters"]
    assert a.attrs["hyperparameters"] != c.attrs["hyperparameters"]
    # a given value is kept, the other is drawn from the prior given for it
    draws = [
        poolwise.simulate(
            "binomial",
            {"phi": 0.25},
            [10],
            priors={"kappa": poolwise.Gamma(400.0, 20.0)},
            seed=s,
        ).attrs["hyperparameters"]
        for s in range(200)
    ]
    assert {d["phi"] for d in draws} == {0.25}
    kappas = np.array([d["kappa"] for d in draws])
    assert kappas.mean() == pytest.approx(20.0, abs=4 * 1.0 / np.sqrt(200))  # Gamma sd is 1
    named = poolwise.simulate("normal_se", {"mu": 0, "tau": 1}, {"x": 1.0, "y": 2.0}, seed=0)
    assert named["group"].tolist() == ["x", "y"] and named["se"].tolist() == [1.0, 2.0]


def test_simulate_errors():
    with pytest.raises(
        ValueError,
        match="family must be one of 'normal', 'normal_se', 'binomial', 'poisson', got 'gauss'",
    ):
        poolwise.simulate("gauss", {}, [1])
    with pytest.raises(
        ValueError,
        match=r"give the binomial population as \(phi, kappa\) or as \(a, b\), not a mix",
    ):
        poolwise.simulate("binomial", {"phi": 0.5, "a": 2}, [1])
    with pytest.raises(ValueError, match="unknown hyperparameter 'rho' for the poisson family"):
        poolwise.simulate("poisson", {"rho": 1}, [1.0])
    with pytest.raises(
        ValueError, match=r"hyperparameters\['phi'\] must be finite and inside \(0, 1\), got 1.5"
    ):
        poolwise.simulate("binomial", {"phi": 1.5, "kappa": 2}, [1])
    with pytest.raises(
        ValueError, match=r"group_sizes: expected trials per group \(positive integers\), got 2.5"
    ):
        poolwise.simulate("binomial", {"phi": 0.5, "kappa": 2}, [10, 2.5])
    with pytest.raises(
        ValueError, match=r"group_sizes: expected rows per group \(positive integers\), got 0"
    ):
        poolwise.simulate("normal", None, [3, 0])
    with pytest.raises(TypeError, match="group_sizes must be a sequence of sizes or a mapping"):
        poolwise.simulate("poisson", None, 5)
    with pytest.raises(
        ValueError, match=r"give 'b' a value or a prior \(the population is parametrized by a, b\)"
    ):
        poolwise.simulate("binomial", {"a": 2}, [1])
    with pytest.raises(TypeError, match=r"hyperparameters\['tau'\] must be a number, got str"):
        poolwise.simulate("normal_se", {"tau": "1"}, [1.0])
    with pytest.raises(TypeError, match="seed must be an integer or None, got float"):
        poolwise.simulate("normal_se", None, [1.0], seed=1.5)


@pytest.mark.parametrize("family", list(COLUMNS))
def test_simulate_then_fit_recovers_the_hyperparameters(family):
    """Across 4 seeds, each true hyperparameter lies in its 99% posterior interval, and the
    posterior means are unbiased: z = (mean - truth) / sd averages within 3 standard errors
    (3 / sqrt(4) = 1.5) of zero for every hyperparameter that has a mean (a concentration under
    its default Lomax(0.5) prior has none: its tail is the prior's)."""
    zs = {name: [] for name in TRUTH[family]}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        df = poolwise.simulate(family, TRUTH[family], sizes(family, 40, rng), seed=seed)
        fit = poolwise.fit(
            df, group="group", **COLUMNS[family], seed=seed, draws=1000, hdi_prob=0.99
        )
        for name, truth in TRUTH[family].items():
            row = fit.population.loc[name]
            assert row["hdi_low"] <= truth <= row["hdi_high"], (seed, name, row.to_dict())
            if np.isfinite(row["mean"]):
                zs[name].append((row["mean"] - truth) / row["sd"])
    for name, z in zs.items():
        assert not z or abs(np.mean(z)) < 1.5, (name, z)


def test_posterior_predictive_replicates():
    df = pd.read_csv(poolwise.example_path("pumps"))
    fit = poolwise.fit(
        df, group="pump", counts="x_failures", exposure="t_thousand_hours", seed=0, draws=1000
    )
    rep = fit.simulate(draws=3, seed=1)
    assert list(rep.columns) == ["draw", "pump", "counts", "exposure", "theta"]
    assert rep["draw"].tolist() == [0] * 10 + [1] * 10 + [2] * 10
    np.testing.assert_allclose(rep["exposure"], np.tile(fit.observed["exposure"], 3))
    pd.testing.assert_frame_equal(rep, fit.simulate(draws=3, seed=1))
    # replicated counts scatter around the posterior predictive mean theta * exposure
    many = fit.simulate(draws=1000, seed=2)
    ratio = many.groupby("pump")["counts"].mean() / (
        many.groupby("pump")["theta"].mean() * fit.observed["exposure"]
    )
    np.testing.assert_allclose(ratio, 1.0, atol=0.1)
    with pytest.raises(
        ValueError, match="draws: the fit holds 1000 posterior draws, got draws=1001"
    ):
        fit.simulate(draws=1001)


def test_normal_rows_replicates_have_the_observed_rows():
    df = poolwise.simulate("normal", TRUTH["normal"], [3, 4, 5, 6, 7, 8, 9, 10], seed=0)
    fit = poolwise.fit(df, group="group", y="y", priors={"sigma": 1.0, "tau": 0.5}, seed=0)
    rep = fit.simulate(draws=2, seed=0)
    assert len(rep) == 2 * 52
    assert rep[rep["draw"] == 0].groupby("group").size().tolist() == list(range(3, 11))


def test_check_finds_overdispersion_that_complete_pooling_misses():
    df = pd.read_csv(poolwise.example_path("rat_tumors"))
    columns = {"group": "experiment", "successes": "y", "trials": "n", "seed": 0, "draws": 1000}
    partial = poolwise.fit(df, **columns).check(seed=0)
    complete = poolwise.fit(df, pooling="complete", **columns).check(seed=0)
    assert isinstance(partial, PredictiveCheck)
    assert partial.observed == complete.observed == pytest.approx(0.10427, abs=1e-5)
    assert len(partial.replicated) == 1000
    assert 0.1 < partial.p_value < 0.9  # seen 0.63
    assert complete.p_value < 0.01  # seen 0.000: one shared rate cannot spread the groups out
    assert "p = 0.000, 1000 replicates" in repr(complete)
    for statistic in ("max", "min", "mean"):
        assert 0 <= poolwise.fit(df, **columns).check(statistic, draws=50).p_value <= 1
    with pytest.raises(
        ValueError, match="statistic must be one of 'sd', 'max', 'min', 'mean', got 'iqr'"
    ):
        partial_fit = poolwise.fit(df, **columns)
        partial_fit.check("iqr")


def test_cli_simulate_writes_csv(tmp_path, capsys):
    from poolwise.cli import main

    out = tmp_path / "sim.csv"
    code = main(
        ["simulate", "--family", "binomial", "--hyperparameters", "phi=0.6,kappa=10",
         "--sizes", "100,40,10,5,2,1", "--seed", "0", "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    df = pd.read_csv(out)
    expected = poolwise.simulate(
        "binomial", {"phi": 0.6, "kappa": 10}, [100, 40, 10, 5, 2, 1], seed=0
    )
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    assert main(["simulate", "--family", "poisson", "--sizes", "1.5,2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "group,counts,exposure,theta"
    assert main(["simulate", "--family", "binomial", "--hyperparameters", "phi:0.6"]) == 2
    assert "hyperparameters: expected NAME=VALUE pairs" in capsys.readouterr().err
