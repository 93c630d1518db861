"""Regression by NUTS: poolwise vs PyMC's default sampler and Bambi, same models and priors.

Models: the forum thread's email RCT (6 cells), radon (919 rows, 85 counties, floor), and a crossed
binomial model of 1e6 Bernoulli rows over 50 x 200 levels. For each: wall time of the whole fit
(compilation included), time to the first posterior draw (compilation + warm-up), the smallest
bulk ESS over the parameters, and ESS per second = that ESS / wall time. 4 chains, 1000 warm-up
and 1000 draws each everywhere.

PyMC gets the same model and priors (zero-sum group effects, pm.ZeroSumNormal); Bambi gets the
same formula and priors with its own parametrization of group effects (unconstrained
N(0, sd)). PyMC and Bambi are given the binomial cells of the 1e6-row model (10,000 cells): on the
raw rows they would be far slower, and aggregating is what poolwise does for the user (its time
includes that group-by).

poolwise runs each fit in a fresh process, twice over: ``poolwise-cold`` with an empty
compilation cache (everything compiled in the run), ``poolwise-warm`` with the cache an earlier
process filled (the model traced again but not compiled: what a user sees from the second run of
a model on, and what PyMC's compiledir gives it, warm in every PyMC run here).

PyMC runs as its default sampler (``pymc``: on a machine of 2 CPUs it counts one core and samples
the chains in sequence) and with one process per CPU (``pymc-cores``); poolwise's chains run on
threads that share every CPU.

Run: python bench/bench_glmm.py [--models thread,radon,crossed]
[--tools poolwise-cold,poolwise-warm,pymc,pymc-cores,bambi] [--repeats 3]. Prints a markdown table (median
over repeats) and ratios to PyMC.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "radon_mn.csv")
TUNE, DRAWS, CHAINS = 1000, 1000, 4


def _arviz_ok() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module("matplotlib.style.core")


def thread_data():
    df = pd.DataFrame(
        {
            "trial_control": [0, 1, 0, 1, 0, 1],
            "distribution": [0, 0, 1, 1, 2, 2],
            "sent": [100, 500, 1000, 5000, 10000, 50000],
            "opens": [20, 150, 200, 1500, 2000, 15000],
        }
    )
    return df


def radon_data():
    path = DATA if os.path.exists(DATA) else None
    if path is None:
        import poolwise

        path = poolwise.example_path("radon_mn")
    return pd.read_csv(path)


def crossed_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(50), 200)
    b = np.tile(np.arange(200), 50)
    n = np.full(a.size, 100)
    eta = -1.0 + rng.normal(0, 0.5, 50)[a] + rng.normal(0, 0.3, 200)[b]
    k = rng.binomial(n, 1 / (1 + np.exp(-eta)))
    cells = pd.DataFrame({"a": a, "b": b, "k": k, "n": n})
    y = np.zeros(int(n.sum()), np.int8)
    starts = np.r_[0, np.cumsum(n)[:-1]]
    for s, kk in zip(starts, k, strict=True):
        y[s : s + kk] = 1
    rows = pd.DataFrame(
        {"a": np.repeat(a, n).astype(np.int16), "b": np.repeat(b, n).astype(np.int16), "y": y}
    )
    return rows, cells


def specs():
    import poolwise as pw

    lg = math.log(4)
    return {
        "thread": dict(
            formula="p(opens, sent) ~ 1 + trial_control + (1|distribution)",
            data=thread_data,
            priors={
                "Intercept": pw.Normal(-lg, 0.125),
                "trial_control": pw.Normal(0, 0.5),
                "1|distribution": pw.Normal(0, 0.5),
            },
        ),
        "radon": dict(
            formula="log_radon ~ 1 + floor + (1|county)",
            data=radon_data,
            priors={
                "Intercept": pw.Normal(1.5, 2),
                "floor": pw.Normal(0, 2),
                "1|county_sigma": pw.HalfNormal(1),
                "sigma": pw.HalfNormal(2),
            },
        ),
        "crossed": dict(
            formula="y ~ 1 + (1|a) + (1|b)",
            data=crossed_data,
            priors={
                "Intercept": pw.Normal(0, 2),
                "1|a_sigma": pw.HalfNormal(1),
                "1|b_sigma": pw.HalfNormal(1),
            },
        ),
    }


def min_ess(draws: dict[str, np.ndarray]) -> float:
    """Smallest bulk ESS over every scalar parameter; draws are (chain, draw, ...)."""
    from arviz_stats.base import array_stats

    worst = math.inf
    for x in draws.values():
        x = np.asarray(x, float)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        for j in range(x.shape[2]):
            if np.ptp(x[:, :, j]) == 0:
                continue
            worst = min(worst, float(array_stats.ess(x[:, :, j], method="bulk")))
    return worst


def run_poolwise(name, spec, data, seed):
    """One fit in a fresh process (``--child``), so that nothing compiled in this one counts."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--child", name, "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["wall"], r["first"], r["ess"], r["divergences"]


def _child(name: str, seed: int) -> None:
    """The poolwise fit as users run it: wall time from the call to the result, compilation (or
    loading from jax's persistent cache) included; imports and the data excluded."""
    import json

    # the sampler's and the diagnostics' libraries are imported before the clock starts, as
    # run_pymc imports pymc (which imports arviz_stats)
    import arviz_stats  # noqa: F401
    import jax  # noqa: F401
    import numpyro  # noqa: F401

    from poolwise.glmm import fit_formula

    spec = specs()[name]
    data = spec["data"]()
    kw = {"family": "bernoulli"} if name == "crossed" else {}
    frame = data[0] if name == "crossed" else data
    t0 = time.perf_counter()
    fit = fit_formula(
        spec["formula"],
        frame,
        priors=spec["priors"],
        draws=DRAWS * CHAINS,
        tune=TUNE,
        chains=CHAINS,
        seed=seed,
        progress=False,
        **kw,
    )
    wall = time.perf_counter() - t0
    first = fit.info["time_to_first_draw"] + (wall - fit.info["seconds"])
    result = {
        "wall": wall,
        "first": first,
        "ess": min_ess(fit.draws),
        "divergences": fit.divergences,
    }
    print(json.dumps(result))


class _FirstDraw:
    def __init__(self, t0):
        self.t0, self.first = t0, None

    def __call__(self, trace, draw):
        if self.first is None and not draw.tuning:
            self.first = time.perf_counter() - self.t0


def _pymc_model(name, data):
    import pymc as pm

    lg = math.log(4)
    if name == "thread":
        with pm.Model() as m:
            a = pm.Normal("Intercept", -lg, 0.125)
            b = pm.Normal("trial_control", 0, 0.5)
            u = pm.ZeroSumNormal("u", sigma=0.5, shape=3)
            eta = a + b * data["trial_control"].to_numpy() + u[data["distribution"].to_numpy()]
            pm.Binomial("k", n=data["sent"].to_numpy(), logit_p=eta, observed=data["opens"])
        return m
    if name == "radon":
        codes, levels = pd.factorize(data["county"], sort=True)
        with pm.Model() as m:
            a = pm.Normal("Intercept", 1.5, 2)
            b = pm.Normal("floor", 0, 2)
            tau = pm.HalfNormal("tau", 1)
            sigma = pm.HalfNormal("sigma", 2)
            z = pm.ZeroSumNormal("z", sigma=1, shape=len(levels))
            eta = a + b * data["floor"].to_numpy() + (tau * z)[codes]
            pm.Normal("y", eta, sigma, observed=data["log_radon"].to_numpy())
        return m
    cells = data[1]
    with pm.Model() as m:
        a = pm.Normal("Intercept", 0, 2)
        sa = pm.HalfNormal("sa", 1)
        sb = pm.HalfNormal("sb", 1)
        ua = pm.ZeroSumNormal("ua", sigma=sa, shape=50)
        ub = pm.ZeroSumNormal("ub", sigma=sb, shape=200)
        eta = a + ua[cells["a"].to_numpy()] + ub[cells["b"].to_numpy()]
        pm.Binomial("k", n=cells["n"].to_numpy(), logit_p=eta, observed=cells["k"].to_numpy())
    return m


def run_pymc(name, spec, data, seed, cores=None):
    """PyMC's default sampler; ``cores=None`` is PyMC's own choice (half the CPUs it counts, so
    one process on a 2-CPU machine: the chains in sequence), a number runs that many processes."""
    _arviz_ok()
    import pymc as pm

    t0 = time.perf_counter()
    cb = _FirstDraw(t0)
    with _pymc_model(name, data):
        idata = pm.sample(
            draws=DRAWS,
            tune=TUNE,
            chains=CHAINS,
            random_seed=seed,
            progressbar=False,
            callback=cb,
            compute_convergence_checks=False,
            cores=cores,
        )
    wall = time.perf_counter() - t0
    post = {k: idata.posterior[k].values for k in idata.posterior.data_vars}
    return wall, cb.first, min_ess(post), int(idata.sample_stats["diverging"].sum())


def run_bambi(name, spec, data, seed):
    _arviz_ok()
    import bambi as bmb

    lg = math.log(4)
    if name == "thread":
        formula = "p(opens, sent) ~ 1 + trial_control + (1|distribution)"
        priors = {
            "Intercept": bmb.Prior("Normal", mu=-lg, sigma=0.125),
            "trial_control": bmb.Prior("Normal", mu=0, sigma=0.5),
            # Bambi needs a hyperprior on a group sd: HalfNormal(0.5) stands in for the fixed 0.5
            "1|distribution": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=0.5)),
        }
        frame, family = data, "binomial"
    elif name == "radon":
        formula = "log_radon ~ 1 + floor + (1|county)"
        priors = {
            "Intercept": bmb.Prior("Normal", mu=1.5, sigma=2),
            "floor": bmb.Prior("Normal", mu=0, sigma=2),
            "1|county": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=1)),
            "sigma": bmb.Prior("HalfNormal", sigma=2),
        }
        frame, family = data, "gaussian"
    else:
        formula = "p(k, n) ~ 1 + (1|a) + (1|b)"
        priors = {
            "Intercept": bmb.Prior("Normal", mu=0, sigma=2),
            "1|a": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=1)),
            "1|b": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=1)),
        }
        frame, family = data[1].astype({"a": str, "b": str}), "binomial"
    t0 = time.perf_counter()
    cb = _FirstDraw(t0)
    model = bmb.Model(formula, frame, family=family, priors=priors)
    idata = model.fit(
        draws=DRAWS,
        tune=TUNE,
        chains=CHAINS,
        random_seed=seed,
        progressbar=False,
        callback=cb,
        compute_convergence_checks=False,
    )
    wall = time.perf_counter() - t0
    post = {
        k: idata.posterior[k].values
        for k in idata.posterior.data_vars
        if "__obs__" not in str(idata.posterior[k].dims) and not k.endswith("_mean")
    }
    return wall, cb.first, min_ess(post), int(idata.sample_stats["diverging"].sum())


def _runs_in_new_cache(fill: bool):
    """A poolwise runner whose processes share a new, empty compilation cache; with ``fill``,
    one earlier process (another seed) fills it first."""
    import tempfile

    def runner(name, spec, data, seed):
        with tempfile.TemporaryDirectory() as folder:
            os.environ["POOLWISE_CACHE_DIR"] = folder
            try:
                if fill:
                    run_poolwise(name, spec, data, seed + 1000)
                return run_poolwise(name, spec, data, seed)
            finally:
                del os.environ["POOLWISE_CACHE_DIR"]

    return runner


RUNNERS = {
    # cold: everything compiled in the run; warm: the programs of an earlier process in the
    # cache (as PyMC's compiled C code is in its compiledir), traced but not compiled again
    "poolwise-cold": _runs_in_new_cache(fill=False),
    "poolwise-warm": _runs_in_new_cache(fill=True),
    "pymc": run_pymc,
    # every CPU, one chain per process (PyMC's multiprocess sampling), as poolwise's threads
    "pymc-cores": functools.partial(run_pymc, cores=min(os.cpu_count() or 1, CHAINS)),
    "bambi": run_bambi,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="thread,radon,crossed")
    parser.add_argument("--tools", default="poolwise-cold,poolwise-warm,pymc,pymc-cores,bambi")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.seed)
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("pymc").setLevel(logging.ERROR)
    all_specs = specs()
    rows = []
    for name in args.models.split(","):
        spec = all_specs[name]
        data = spec["data"]()
        for tool in args.tools.split(","):
            runs = []
            for r in range(args.repeats):
                runs.append(RUNNERS[tool](name, spec, data, seed=100 + r))
                w, f, e, d = runs[-1]
                print(
                    f"  {name:8s} {tool:13s} run {r}: wall {w:7.2f}s first draw {f:7.2f}s "
                    f"min ESS {e:7.0f} ESS/s {e / w:8.1f} divergences {d}",
                    file=sys.stderr,
                    flush=True,
                )
            wall = statistics.median(r[0] for r in runs)
            first = statistics.median(r[1] for r in runs)
            ess = statistics.median(r[2] for r in runs)
            eps = statistics.median(r[2] / r[0] for r in runs)
            div = statistics.median(r[3] for r in runs)
            rows.append((name, tool, wall, first, ess, eps, div))
    table = pd.DataFrame(
        rows,
        columns=[
            "model",
            "tool",
            "wall_s",
            "first_draw_s",
            "min_ess_bulk",
            "ess_per_s",
            "divergences",
        ],
    )
    for tool in ("pymc", "pymc-cores"):
        base = table[table.tool == tool].set_index("model")["ess_per_s"]
        table[f"vs_{tool.replace('-', '_')}"] = [
            r.ess_per_s / base[r.model] if r.model in base else float("nan")
            for r in table.itertuples()
        ]
    print(
        f"\nmedian of {args.repeats} runs; {CHAINS} chains x ({TUNE} warm-up + {DRAWS} draws); "
        f"{os.cpu_count()} CPUs\n"
    )
    print(markdown(table))


def markdown(table: pd.DataFrame) -> str:
    """A markdown table (no tabulate needed)."""

    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
