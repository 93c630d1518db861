"""Regressions from a formula (poolwise.glmm): the thread's leak, reference models, cells, errors.

Tolerances come from Monte Carlo error: |mean_a - mean_b| <= Z * sqrt(mcse_a^2 + mcse_b^2) with
mcse = sd / sqrt(ess_bulk); Z = 4.5 keeps the false-failure rate of ~30 comparisons near 1e-4.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise import HalfNormal, Normal, PoolwiseWarning

from . import REFERENCES, reference_script

Z = 4.5
THREAD = pd.DataFrame(
    {
        "trial_control": [0, 1, 0, 1, 0, 1],
        "distribution": [0, 0, 1, 1, 2, 2],
        "sent": [100, 500, 1000, 5000, 10000, 50000],
        "opens": [20, 150, 200, 1500, 2000, 15000],
    }
)
THREAD_PRIORS = {"Intercept": Normal(-math.log(4), 0.125), "trial_control": Normal(0, 0.5)}
# the stored long runs' script, whose functions build the data sets the runs were made on
references = reference_script("run_glmm_references")
# short chains where Monte Carlo error allows (tolerances follow the ESS): 4 x (500 + 500)
SHORT = {"draws": 2000, "tune": 500, "progress": False}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------ import hygiene
def test_import_poolwise_does_not_import_jax():
    code = "import sys, poolwise; print('jax' in sys.modules, 'numpyro' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------ the thread
@pytest.fixture(scope="module")
def thread_fit():
    return poolwise.fit(
        "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
        data=THREAD,
        priors={**THREAD_PRIORS, "1|distribution": Normal(0, 0.5)},
        seed=11,
        progress=False,
    )


def test_thread_as_written_leaks_and_is_flagged():
    priors = {
        "Intercept": Normal(-math.log(4), 0.125),
        "1|trial_control": Normal(0, 0.5),
        "1|distribution": Normal(0, 0.5),
    }
    with pytest.warns(PoolwiseWarning, match=r"identifiability: .*Intercept, 1\|trial_control"):
        fit = poolwise.fit(
            "p(opens, sent) ~ 1 + (1|trial_control) + (1|distribution)",
            data=THREAD,
            priors=priors,
            parametrization="as-written",
            seed=3,
            progress=False,
        )
    dist = fit.groups.loc["1|distribution", "mean"]
    # the thread's trace: 0.102, 0.105, 0.105 (posterior sd 0.23, so +-0.04 is ~5 MCSE)
    assert np.all(np.abs(dist - 0.105) < 0.04)
    assert any("identifiability" in w for w in fit.warnings)


def test_thread_default_has_no_leak(thread_fit):
    s = thread_fit.summary()
    dist = s.loc[[f"1|distribution[{i}]" for i in range(3)], "mean"]
    assert np.all(np.abs(dist) < 0.02)
    target = _logit(0.3) - _logit(0.2)
    assert abs(target - 0.539) < 5e-4
    assert abs(s.loc["trial_control", "mean"] - target) < 0.03
    assert thread_fit.divergences == 0
    assert (s["r_hat"] < 1.01).all()
    assert not thread_fit.warnings
    assert list(s.columns) == ["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"]


def test_thread_groups_arviz_predict(thread_fit):
    g = thread_fit.groups.loc["1|distribution"]
    assert g["n"].tolist() == [600, 6000, 60000]
    # more trials, less shrinkage
    assert np.all(np.diff(g["shrinkage"].to_numpy()) < 0)
    idata = thread_fit.to_arviz()
    assert idata.posterior["1|distribution"].shape == (4, 1000, 3)
    assert int(idata.sample_stats["diverging"].sum()) == 0
    new = pd.DataFrame({"trial_control": [0, 1, 1], "distribution": [1, 2, 9]})
    with pytest.raises(ValueError, match=r"level\(s\) '9' of 'distribution'.*unseen="):
        thread_fit.predict(new)
    pred = thread_fit.predict(new, unseen="population")
    assert abs(pred["mean"].iloc[0] - 0.2) < 0.005 and abs(pred["mean"].iloc[1] - 0.3) < 0.005
    d1 = thread_fit.predict(new, unseen="draw", seed=5)
    d2 = thread_fit.predict(new, unseen="draw", seed=5)
    pd.testing.assert_frame_equal(d1, d2)
    assert d1["sd"].iloc[2] > pred["sd"].iloc[2]  # a new group's draw adds its sd


def test_one_seed_fixes_draws_whatever_the_progress_display(thread_fit, capsys):
    again = poolwise.fit(
        "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
        data=THREAD,
        priors={**THREAD_PRIORS, "1|distribution": Normal(0, 0.5)},
        seed=11,
        progress=True,
    )
    for k, v in thread_fit.draws.items():
        np.testing.assert_array_equal(v, again.draws[k])


def test_a_refit_reuses_the_compiled_program(thread_fit):
    from poolwise.engines import nuts

    # 4 parameters (intercept, trial effect, two free zero-sum effects): a dense mass matrix
    assert thread_fit.info["dense_mass"] is True
    compiled = dict(nuts._RUNS)
    again = poolwise.fit(
        "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
        data=THREAD.assign(opens=THREAD["opens"] + 1),  # new data of the same shape
        priors={**THREAD_PRIORS, "1|distribution": Normal(0, 0.5)},
        seed=12,
        progress=False,
    )
    assert dict(nuts._RUNS) == compiled  # nothing new was built
    assert again.info["time_to_first_draw"] < again.info["seconds"]
    assert not np.array_equal(again.draws["Intercept"], thread_fit.draws["Intercept"])


def test_exported_programs_serve_a_new_process(thread_fit, tmp_path, monkeypatch):
    """Programs exported to the cache folder are loaded, not traced, by a later process (the
    in-process cache emptied stands in for it), and give the same draws."""
    from poolwise.engines import nuts, programs

    monkeypatch.setenv("POOLWISE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(nuts, "_RUNS", type(nuts._RUNS)())
    kw = dict(
        data=THREAD,
        priors={**THREAD_PRIORS, "1|distribution": Normal(0, 0.5)},
        seed=11,
        progress=False,
    )
    formula = "p(opens, sent) ~ 1 + trial_control + (1|distribution)"
    first = poolwise.fit(formula, **kw)
    assert len(list((tmp_path / "programs").glob("*.jaxexport"))) == 3  # init, advance, constrain
    nuts._RUNS.clear()

    def refuse(*args):
        raise AssertionError("traced again instead of loaded")

    monkeypatch.setattr(programs, "_export", refuse)
    again = poolwise.fit(formula, **kw)
    for k, v in first.draws.items():
        np.testing.assert_array_equal(v, again.draws[k])
        np.testing.assert_array_equal(v, thread_fit.draws[k])  # as from the jitted programs


def test_chains_on_threads_are_the_vectorized_chains():
    """One thread per chain runs each chain's own program: the draws are those of the chains
    vectorized in one program (same keys; sums taken in another order differ in the last
    digits, ~1e-6 after 250 steps here)."""
    import numpyro
    import numpyro.distributions as dist

    from poolwise.engines.nuts import sample_nuts

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 10))
        tau = numpyro.sample("tau", dist.HalfNormal(2))
        numpyro.sample("y", dist.Normal(mu, tau), obs=y)

    y = {"y": np.random.default_rng(3).normal(1.0, 2.0, 50)}
    kw = dict(chains=3, tune=150, draws=100, seed=4)
    threads = sample_nuts(model, y, chain_method="threads", progress=True, **kw)
    vectorized = sample_nuts(model, y, chain_method="vectorized", **kw)
    for k in ("mu", "tau"):
        assert threads.samples[k].shape == (3, 100)
        np.testing.assert_allclose(threads.samples[k], vectorized.samples[k], rtol=1e-4)
    np.testing.assert_array_equal(threads.tree_depth, vectorized.tree_depth)
    assert threads.time_to_first_draw < threads.seconds
    with pytest.raises(ValueError, match="chain_method"):
        sample_nuts(model, y, chain_method="parallel", **kw)


def test_compilation_cache_folder(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from poolwise.engines import nuts

    updates = []
    config = SimpleNamespace(
        jax_compilation_cache_dir=None, update=lambda name, value: updates.append((name, value))
    )
    fake_jax = SimpleNamespace(config=config)
    monkeypatch.setenv("POOLWISE_CACHE_DIR", str(tmp_path))
    nuts._use_disk_cache(fake_jax)
    assert updates == [("jax_compilation_cache_dir", str(tmp_path / "jax"))]
    config.jax_compilation_cache_dir = "/the/users/own"
    nuts._use_disk_cache(fake_jax)  # the user's own cache directory is left alone
    config.jax_compilation_cache_dir = None
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("POOLWISE_CACHE_DIR", str(blocked))
    nuts._use_disk_cache(fake_jax)  # a folder that cannot be made: no disk cache
    monkeypatch.setenv("POOLWISE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POOLWISE_COMPILATION_CACHE", "0")
    nuts._use_disk_cache(fake_jax)  # turned off
    assert len(updates) == 1


# ------------------------------------------------------------------------ references
# long numpyro runs of the same models on the same data, stored by
# tests/reference/run_glmm_references.py (4 x 10,000 draws each)
def _square_ess(draws: np.ndarray) -> float:
    """The ESS of the squared deviations: the one that sets the MC error of an sd (NUTS's
    antithetic draws give a mean's ESS above the number of draws, not a variance's)."""
    from arviz_stats.base import array_stats

    return float(array_stats.ess((draws - draws.mean()) ** 2, method="mean"))


def _mc_close(fit, reference: str, rows: list[str]):
    """Compare posterior means and sds of poolwise's summary rows with a stored reference run;
    a row ``site[level]`` is the level's entry of the reference's array ``site`` (by position
    among the factor's levels)."""
    stored = json.loads((REFERENCES / f"glmm_{reference}.json").read_text())["parameters"]
    s = fit.summary()
    for row in rows:
        name, _, level = row.partition("[")
        r = stored[name]
        mine = fit.draws[name]
        if level:
            position = list(fit.groups.loc[name].index.astype(str)).index(level[:-1])
            r, mine = r[position], mine[..., position]
        p_mcse = s.loc[row, "sd"] / math.sqrt(s.loc[row, "ess_bulk"])
        tol = Z * math.hypot(r["mcse_mean"], p_mcse)
        assert abs(s.loc[row, "mean"] - r["mean"]) < tol, (row, s.loc[row, "mean"], r["mean"], tol)
        # sds agree too: the relative MC error of an sd is sqrt((kurtosis - 1) / (4 ess)), with
        # the ess of squared deviations, large for a skewed group sd, so it is taken from the
        # reference draws' own kurtosis
        ess = 1 / r["ess_square"] + 1 / _square_ess(mine)
        rel = math.sqrt((r["kurtosis"] - 1) / 4 * ess)
        assert abs(s.loc[row, "sd"] / r["sd"] - 1) < Z * rel, (row, s.loc[row, "sd"], r["sd"], rel)


REFERENCE_PRIORS = {
    "Intercept": Normal(0, 2),
    "x": Normal(0, 1),
    "1|a_sigma": HalfNormal(1),
    "1|b_sigma": HalfNormal(1),
}


def test_radon_normal_agrees_with_reference():
    df = references.radon_data()
    priors = {
        "Intercept": Normal(1.5, 2),
        "floor": Normal(0, 2),
        "1|county_sigma": HalfNormal(1),
        "sigma": HalfNormal(2),
    }
    fit = poolwise.fit(
        "log_radon ~ 1 + floor + (1|county)",
        data=df,
        priors=priors,
        seed=5,
        draws=4000,  # the defaults: at SHORT's 2000 draws one county's r_hat sat at 1.014
        tune=1000,
        progress=False,
    )
    codes, levels = pd.factorize(df["county"], sort=True)
    assert list(levels) == list(fit.groups.loc["1|county"].index)
    big = levels[int(np.argmax(np.bincount(codes)))]
    rows = ["Intercept", "floor", "1|county_sigma", "sigma", f"1|county[{levels[0]}]"]
    _mc_close(fit, "radon", [*rows, f"1|county[{big}]"])


def test_binomial_crossed_agrees_with_reference():
    df = references.binomial_crossed_data()
    fit = poolwise.fit(
        "p(k, n) ~ 1 + x + (1|a) + (1|b)", data=df, priors=REFERENCE_PRIORS, seed=5, **SHORT
    )
    assert fit.info["cells"] < len(df)
    rows = ["Intercept", "x", "1|a_sigma", "1|b_sigma", "1|a[0]", "1|b[5]"]
    _mc_close(fit, "binomial_crossed", rows)


def test_poisson_crossed_with_exposure_agrees_with_reference():
    df = references.poisson_crossed_data()
    fit = poolwise.fit(
        "c ~ 1 + x + (1|a) + (1|b) + offset(log(t))",
        data=df,
        priors=REFERENCE_PRIORS,
        seed=5,
        **SHORT,
    )
    assert fit.family.name == "poisson"
    _mc_close(fit, "poisson_crossed", ["Intercept", "x", "1|a_sigma", "1|a[3]"])


# ------------------------------------------------------------------------ cells
def test_million_bernoulli_rows_equal_their_binomial_cells(monkeypatch):
    import formulae

    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(40), 5)
    x = np.tile(np.arange(5), 40)
    trials = rng.multinomial(1_000_000 - 200, np.ones(200) / 200) + 1
    p = 1 / (1 + np.exp(-(-1 + 0.3 * x + rng.normal(0, 0.4, 40)[g])))
    k = rng.binomial(trials, p)
    cells = pd.DataFrame({"g": g, "x": x, "k": k, "n": trials})
    rows = pd.DataFrame(
        {
            "g": np.repeat(g, trials).astype(np.int16),
            "x": np.repeat(x, trials).astype(np.int8),
            "y": np.concatenate(
                [
                    np.r_[np.ones(ki, np.int8), np.zeros(ni - ki, np.int8)]
                    for ki, ni in zip(k, trials, strict=True)
                ]
            ),
        }
    )
    assert len(rows) == 1_000_000
    seen = []
    real = formulae.design_matrices

    def spy(formula, data, *args, **kwargs):
        seen.append(len(data))
        return real(formula, data, *args, **kwargs)

    monkeypatch.setattr(formulae, "design_matrices", spy)
    kw = {"seed": 4, **SHORT, "draws": 4000, "tune": 1000}
    f_rows = poolwise.fit("y ~ 1 + x + (1|g)", data=rows, family="bernoulli", **kw)
    f_cells = poolwise.fit("p(k, n) ~ 1 + x + (1|g)", data=cells, **kw)
    assert seen == []  # a plain formula's design needs no formulae
    for fit in (f_rows, f_cells):  # its matrices, built when read (for predictions)
        assert fit.design.matrices.common is not None
    assert seen == [200, 200]  # formulae only ever sees the 200 cells
    assert f_rows.n_rows == 1_000_000 and f_cells.n_rows == 200
    a, b = f_rows.summary(), f_cells.summary()
    tol = Z * np.sqrt(2) * a["sd"] / np.sqrt(a["ess_bulk"])
    assert (np.abs(a["mean"] - b["mean"]) <= tol).all()


# ------------------------------------------------------------------------ one-factor door
@pytest.mark.parametrize(
    ("formula", "kwargs", "direct"),
    [
        ("log_radon ~ 1 + (1|county)", {}, {"group": "county", "y": "log_radon"}),
        (
            "p(y, n) ~ 1 + (1|experiment)",
            {},
            {"group": "experiment", "successes": "y", "trials": "n"},
        ),
        (
            "x_failures ~ 1 + (1|pump)",
            {"exposure": "t_thousand_hours"},
            {"group": "pump", "counts": "x_failures", "exposure": "t_thousand_hours"},
        ),
    ],
)
def test_one_factor_formula_is_the_exact_engine(formula, kwargs, direct):
    name = {"county": None, "experiment": "rat_tumors", "pump": "pumps"}[direct["group"]]
    df = references.radon_data() if name is None else pd.read_csv(poolwise.example_path(name))
    a = poolwise.fit(formula, data=df, seed=3, **kwargs)
    b = poolwise.fit(df, seed=3, **direct)
    assert a.method == b.method != "nuts"
    pd.testing.assert_frame_equal(a.groups, b.groups)
    pd.testing.assert_frame_equal(a.population, b.population)


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("formula", "data", "kwargs", "error", "match"),
    [
        (
            "p(opens, sent) ~ 1 + nope + (1|distribution)",
            THREAD,
            {},
            ValueError,
            "no column 'nope'",
        ),
        ("p(opens, sent) ~ 1 + (1|dist)", THREAD, {}, ValueError, "no column 'dist'"),
        ("p(sent, opens) ~ 1 + (1|distribution)", THREAD, {}, ValueError, "exceeds trials"),
        (
            "opens ~ 1 + (1|distribution)",
            THREAD,
            {"family": "bernoulli"},
            ValueError,
            "other than 0 and 1",
        ),
        (
            "p(k, n) ~ 1 + (1|g)",
            pd.DataFrame({"k": [1.5, 2], "n": [3, 3], "g": ["a", "b"]}),
            {},
            ValueError,
            "not whole numbers",
        ),
        (
            "p(k, n) ~ 1 + (1|g)",
            pd.DataFrame({"k": ["1", "2"], "n": [3, 3], "g": ["a", "b"]}),
            {},
            TypeError,
            "column 'k' must be numeric",
        ),
        ("opens ~ sent ~ 1", THREAD, {}, ValueError, "one '~'"),
        ("p(opens, sent) ~ 1 + (1|", THREAD, {}, ValueError, "could not parse"),
        ("opens ~ 1 + scale(sent)", THREAD, {}, ValueError, r"scale\(\) is computed over all rows"),
        (
            "opens ~ 1 + trial_control",
            THREAD,
            {"family": "tweedie"},
            ValueError,
            "family must be one of",
        ),
        (
            "opens ~ 1 + trial_control",
            THREAD,
            {"priors": {"beta": Normal()}},
            ValueError,
            "no term 'beta'.*valid names are",
        ),
        (
            "opens ~ 1 + trial_control",
            THREAD,
            {"parametrization": "sideways"},
            ValueError,
            "parametrization must be",
        ),
        (
            "opens ~ 1 + (1|np.round(sent))",
            THREAD,
            {},
            ValueError,
            "group by columns",
        ),
        (
            "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
            THREAD.assign(distribution=7),
            {},
            ValueError,
            r"'1\|distribution': the factor 'distribution' has a single level \('7'\)",
        ),
        (
            "opens ~ 1 + (0 + arm|distribution)",
            THREAD.assign(arm=THREAD["trial_control"].map({0: "a", 1: "b"})),
            {},
            ValueError,
            r"'arm\|distribution' has a categorical expression.*\(1\|g\) \+ \(0 \+ x\|g\)",
        ),
        (
            "opens ~ 1 + trial_control + (1|distribution)",
            THREAD,
            {"method": "exact"},
            ValueError,
            "needs method='laplace', 'eb', 'nuts'",
        ),
    ],
)
def test_bad_formulas_and_columns(formula, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        poolwise.fit(formula, data=data, progress=False, **kwargs)


def test_group_sd_prior_must_be_a_scale():
    with pytest.raises(
        ValueError, match=r"priors\['1\|distribution'\]: group effects are Normal\(0, sd\)"
    ):
        poolwise.fit(
            "p(opens, sent) ~ 1 + (1|distribution)",
            data=THREAD,
            priors={"1|distribution": Normal(1, 1)},
            method="nuts",
            progress=False,
        )


@pytest.mark.parametrize("lazy", [False, True])
def test_polars_rows_fit_and_are_checked_as_pandas_rows(lazy):
    """A polars frame (eager or lazy) gives the pandas rows' fit, and its bad rows the same
    refusal naming the columns."""
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"g": np.repeat(list("abcde"), 6), "x": rng.normal(size=30).round(1)})
    df["n"] = 20
    df["k"] = rng.binomial(20, 1 / (1 + np.exp(-np.repeat([-1.5, -0.5, 0, 0.5, 1.5], 6))))

    def polars(frame):
        out = pl.from_pandas(frame)
        return out.lazy() if lazy else out

    formula = "p(k, n) ~ 1 + x + (1|g)"
    expected = poolwise.fit(formula, df, method="laplace", seed=1).population
    got = poolwise.fit(formula, polars(df), method="laplace", seed=1).population
    pd.testing.assert_frame_equal(got, expected)
    bad = df.assign(k=df["k"].where(df.index != 3, 21))
    with pytest.raises(ValueError, match="column 'k' exceeds trials column 'n' in 1 of 30 rows"):
        poolwise.fit(formula, polars(bad), method="laplace")
