"""Benchmark of one-grouping-factor fits: the 50 schools against PyMC, and 1e3 … 1e6 groups.

Every measurement runs in a fresh subprocess, so that its wall time covers the whole process
(interpreter start, imports, reading, fitting) where that is the point, and its peak RSS is its
own. The machine is assumed noisy: times are medians of repeated runs.

    python bench/bench_fit.py                        # both parts
    python bench/bench_fit.py --part schools --repeat 5 --pymc-runs 2
    python bench/bench_fit.py --part scale --sizes 1e3 1e4 --families normal binomial
    python bench/bench_fit.py --part scale --json results.json
    python bench/bench_fit.py --part inprocess --baseline ../other-checkout/src

Part ``inprocess``: the same 50-schools fit (``pd.read_csv`` then ``poolwise.fit``) timed inside
one process: the first call, then the median of ``--inprocess-fits`` more; and the fit of rows of
the same design with 1,000 and 10,000 schools (tests/reference/make_fifty_schools.py: 2 to 99 rows
a school), fewer times (``SCHOOLS_IN_PROCESS``). With ``--baseline SRC`` (another checkout's
``src``) the same runs are made with that code, alternating with this checkout's, and the ratios
baseline / this of the medians are printed, of wall time and of the process's CPU time (which
other jobs on a loaded machine disturb less).

Part ``schools``: the 50-schools partial-pooling fit (mu ~ Normal(50, 10), tau ~ Exponential(1),
sigma ~ Exponential(1); tests/reference/fifty_schools.csv), ``python -c`` that imports poolwise,
reads the CSV and fits, against the same model written for PyMC as the usual centered model on raw
rows and sampled with ``pm.sample()`` defaults but for ``--pymc-chains`` (4, its default on a
machine of 4 CPUs or more; compilation included), the two alternating run by run. Printed: median
wall times, their ratio, and the largest disagreement between the two posteriors in posterior sd (and in
PyMC's Monte Carlo standard errors, to tell disagreement from sampling noise), over mu, tau,
sigma and every theta_j; poolwise is also checked against the long NUTS reference run
tests/reference/fifty_schools_partial.json.

Part ``scale``: per-group statistics of J groups (``GroupStats`` built directly, fixed seed) for
each family, fitted with ``method="auto"`` and ``method="exact"`` (up to ``--max-exact`` groups).
Printed: the method auto chose, median fit time over ``--repeat`` fits in one process (only one
fit when the first takes longer than ``--slow``), RSS before the fit and peak RSS of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "tests" / "reference" / "fifty_schools.csv"
REFERENCE = ROOT / "tests" / "reference" / "fifty_schools_partial.json"
FAMILIES = ("normal", "normal_se", "binomial", "poisson")

POOLWISE_50 = """
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
import poolwise
t1 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
fit = poolwise.fit(df, group="school", y="score", seed=1, priors={
    "mu": poolwise.Normal(50, 10), "tau": poolwise.Exponential(1),
    "sigma": poolwise.Exponential(1)})
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "fit_s": t2 - t1, "method": fit.method, "info": fit.info}
for name in ("mu", "tau", "sigma"):
    out[name] = [float(fit.population.loc[name, "mean"]), float(fit.population.loc[name, "sd"])]
for label, row in fit.groups.iterrows():
    out[f"theta[{label}]"] = [float(row["mean"]), float(row["sd"])]
print("RESULT" + json.dumps(out))
"""

PYMC_50 = """
import json, sys, time
t0 = time.perf_counter()
import matplotlib.style.core  # arviz_plots (imported by pymc through arviz) needs it loaded
import numpy as np
import pandas as pd
import pymc as pm
import arviz as az
t1 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
idx, schools = pd.factorize(df["school"], sort=True)
with pm.Model(coords={"school": schools}):
    mu = pm.Normal("mu", 50, 10)
    tau = pm.Exponential("tau", 1)
    theta = pm.Normal("theta", mu, tau, dims="school")
    sigma = pm.Exponential("sigma", 1)
    pm.Normal("y", theta[idx], sigma, observed=df["score"].to_numpy())
    idata = pm.sample(progressbar=False, random_seed=int(sys.argv[2]), chains=int(sys.argv[3]))
t2 = time.perf_counter()
post = idata.posterior
mcse = az.mcse(idata)
ess = az.ess(idata)
out = {"import_s": t1 - t0, "fit_s": t2 - t1,
       "chains": int(post.sizes["chain"]), "draws": int(post.sizes["draw"]),
       "divergences": int(idata.sample_stats["diverging"].sum())}
def put(key, x, m, e):
    out[key] = [float(x.mean()), float(x.std(ddof=1)), float(m), float(e)]
for name in ("mu", "tau", "sigma"):
    put(name, post[name].values, mcse[name].values, ess[name].values)
th, mt, et = post["theta"].values, mcse["theta"].values, ess["theta"].values
for j, label in enumerate(schools):
    put(f"theta[{label}]", th[:, :, j], mt[j], et[j])
print("RESULT" + json.dumps(out))
"""

SCALE = """
import json, resource, sys, time
import numpy as np
import pandas as pd
import psutil
from poolwise.api import fit_stats
from poolwise.data import GroupStats

family, J, method, repeat, slow = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(20240611)
if family == "normal":  # n ~ 1 + Poisson(20), theta ~ N(5, 2), y ~ N(theta, 3)
    n = 1 + rng.poisson(20, J)
    theta = 5 + 2 * rng.standard_normal(J)
    mean = theta + 3 * rng.standard_normal(J) / np.sqrt(n)
    m2 = np.where(n > 1, 9 * rng.chisquare(np.maximum(n - 1, 1)), 0.0)
    stats = {"n": n.astype(np.int64), "mean": mean, "m2": m2}
elif family == "normal_se":  # se ~ U(0.5, 3), theta ~ N(5, 2), y ~ N(theta, se)
    se = rng.uniform(0.5, 3.0, J)
    stats = {"y": 5 + 2 * rng.standard_normal(J) + se * rng.standard_normal(J), "se": se}
elif family == "binomial":  # trials ~ 1 + Poisson(50), p ~ Beta(3, 7)
    trials = 1 + rng.poisson(50, J)
    stats = {"successes": rng.binomial(trials, rng.beta(3, 7, J)).astype(np.int64),
             "trials": trials.astype(np.int64)}
else:  # exposure ~ 10 Gamma(2, 1), rate ~ Gamma(shape 4, rate 2)
    exposure = 10 * rng.gamma(2.0, 1.0, J)
    stats = {"counts": rng.poisson(rng.gamma(4.0, 0.5, J) * exposure).astype(np.int64),
             "exposure": exposure}
gs = GroupStats(pd.RangeIndex(J, name="g"), stats, J, "g")
rss0 = psutil.Process().memory_info().rss
times = []
for i in range(repeat):
    t = time.perf_counter()
    fit = fit_stats(gs, family, method=method, seed=1)
    times.append(time.perf_counter() - t)
    if times[-1] > slow:
        break
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT" + json.dumps({"times": times, "chosen": fit.method, "rss0": rss0, "peak": peak,
                             "grid": fit.info.get("grid_points")}))
"""


IN_PROCESS = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import pandas as pd
import poolwise
import make_fifty_schools as design
schools, fits = int(sys.argv[2]), int(sys.argv[3])
priors = {"mu": poolwise.Normal(50, 10), "tau": poolwise.Exponential(1),
          "sigma": poolwise.Exponential(1)}
if schools == 50:
    def data():
        return pd.read_csv(sys.argv[4])
else:
    design.N_SCHOOLS = schools
    rows = design.simulate()[0]
    def data():
        return rows
times, cpu = [], []
for i in range(fits + 1):
    t, c = time.perf_counter(), time.process_time()
    fit = poolwise.fit(data(), group="school", y="score", priors=priors, seed=1)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print("RESULT" + json.dumps({"first": times[0], "times": times[1:], "cpu": cpu[1:],
                             "rows": int(fit.n_rows), "grid": fit.info.get("grid_points")}))
"""
# schools, and fits per process after the first (50 schools: --inprocess-fits)
SCHOOLS_IN_PROCESS = {50: None, 1000: 10, 10000: 5}


def run(
    code: str, *args: str, timeout: float, src: Path | None = None
) -> tuple[float, dict | None, str]:
    """Wall time of ``python -c code args`` and the JSON it printed after RESULT (``src``: the
    poolwise to import, by default the installed one)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t, None, f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return wall, json.loads(line[6:]), ""
    return wall, None, (proc.stderr.strip().splitlines() or ["no output"])[-1]


def disagreement(a: dict, b: dict, keys: list[str]) -> dict:
    """Largest |mean difference| in posterior sd and in b's Monte Carlo standard errors."""
    z_sd = {k: abs(a[k][0] - b[k][0]) / a[k][1] for k in keys}
    z_mc = {k: abs(a[k][0] - b[k][0]) / b[k][2] for k in keys if len(b[k]) > 2}
    sd_ratio = {k: b[k][1] / a[k][1] - 1 for k in keys}
    worst = max(z_sd, key=z_sd.get)
    worst_sd = max(sd_ratio, key=lambda k: abs(sd_ratio[k]))
    out = {
        "max_dmean_sd": z_sd[worst],
        "at": worst,
        "max_sd_rel": sd_ratio[worst_sd],
        "sd_at": worst_sd,
    }
    if z_mc:
        out["max_dmean_mcse"] = max(z_mc.values())
        out["dmean_mcse_at_worst"] = z_mc[worst]
    return out


def schools(args) -> dict:
    print(f"== 50 schools, whole process ({len(os.sched_getaffinity(0))} cores) ==", flush=True)
    pw_walls, pw, pm_walls, pm_runs = [], None, [], []
    # alternating, so that a change in the machine's load falls on both alike
    for i in range(max(args.repeat, args.pymc_runs)):
        if i < args.repeat:
            wall, res, err = run(POOLWISE_50, str(CSV), timeout=300)
            if res is None:
                sys.exit(f"poolwise run failed: {err}")
            pw_walls.append(wall)
            pw = res
            print(
                f"  poolwise run {i + 1}: {wall:6.2f} s  (import {res['import_s']:.2f} s, "
                f"read+fit {res['fit_s']:.2f} s)",
                flush=True,
            )
        if i >= args.pymc_runs:
            continue
        chains = str(args.pymc_chains)
        wall, res, err = run(PYMC_50, str(CSV), str(i + 1), chains, timeout=590)
        if res is None:
            print(f"  pymc run {i + 1}: failed: {err}", flush=True)
            continue
        pm_walls.append(wall)
        pm_runs.append(res)
        print(
            f"  pymc run {i + 1}: {wall:6.2f} s  (import {res['import_s']:.2f} s, "
            f"build+compile+sample {res['fit_s']:.2f} s; {res['chains']} chains x "
            f"{res['draws']} draws, {res['divergences']} divergences)",
            flush=True,
        )
    keys = [k for k in pw if k in ("mu", "tau", "sigma") or k.startswith("theta[")]
    ref = json.loads(REFERENCE.read_text())["parameters"]
    ref = {k: [v["mean"], v["sd"], v["mcse_mean"]] for k, v in ref.items() if k in keys}
    out = {
        "poolwise_walls": pw_walls,
        "pymc_walls": pm_walls,
        "poolwise": pw,
        "vs_reference": disagreement(pw, ref, list(ref)),
    }
    pw_med = statistics.median(pw_walls)
    print(
        f"  poolwise median {pw_med:.2f} s over {len(pw_walls)} runs; grid "
        f"{pw['info'].get('grid_points')} points"
    )
    r = out["vs_reference"]
    print(
        f"  poolwise vs long NUTS reference: max |dmean| {r['max_dmean_sd']:.3f} sd ({r['at']}, "
        f"{r['dmean_mcse_at_worst']:.1f} ref mcse), max sd rel. diff {r['max_sd_rel']:+.2%} "
        f"({r['sd_at']})"
    )
    if pm_walls:
        pm_med = statistics.median(pm_walls)
        out["ratio"] = pm_med / pw_med
        out["vs_pymc"] = [disagreement(pw, res, keys) for res in pm_runs]
        print(f"  pymc median {pm_med:.2f} s over {len(pm_walls)} runs")
        print(f"  ratio pymc / poolwise (whole process): {out['ratio']:.1f}x")
        for i, d in enumerate(out["vs_pymc"]):
            print(
                f"  pymc run {i + 1} vs poolwise: max |dmean| {d['max_dmean_sd']:.3f} sd "
                f"({d['at']}, = {d['dmean_mcse_at_worst']:.1f} pymc mcse; largest in mcse "
                f"{d['max_dmean_mcse']:.1f}), max sd rel. diff {d['max_sd_rel']:+.1%} "
                f"({d['sd_at']})"
            )
    return out


def scale(args) -> list[dict]:
    print(f"== groups from per-group statistics (median of {args.fits} fits) ==", flush=True)
    header = (
        f"{'family':<10} {'groups':>9} {'method':>6} {'chose':>6} {'median s':>9} "
        f"{'runs':>4} {'RSS before MB':>13} {'peak RSS MB':>11} {'grid':>7}"
    )
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for family in args.families:
        for size in args.sizes:
            j = int(float(size))
            for method in args.methods:
                if method == "exact" and not args.min_exact <= j <= args.max_exact:
                    continue
                wall, res, err = run(
                    SCALE,
                    family,
                    str(j),
                    method,
                    str(args.fits),
                    str(args.slow),
                    timeout=args.timeout,
                )
                if res is None:
                    row = {"family": family, "groups": j, "method": method, "error": err}
                    print(f"{family:<10} {j:>9.0e} {method:>6} {'':>6} {err}", flush=True)
                else:
                    row = {
                        "family": family,
                        "groups": j,
                        "method": method,
                        **res,
                        "median_s": statistics.median(res["times"]),
                    }
                    print(
                        f"{family:<10} {j:>9.0e} {method:>6} {res['chosen']:>6} "
                        f"{row['median_s']:>9.2f} {len(res['times']):>4} "
                        f"{res['rss0'] / 2**20:>13.0f} {res['peak'] / 2**20:>11.0f} "
                        f"{res['grid'] or '-':>7}",
                        flush=True,
                    )
                rows.append(row)
    return rows


def in_process(args) -> list[dict]:
    """The 50-schools fit and its 1,000- and 10,000-school versions, timed inside a process."""
    print(
        f"== 50-schools design in one process ({args.inprocess_runs} processes of each; "
        f"medians over all their fits after the first) ==",
        flush=True,
    )
    sides = {"this": ROOT / "src"}
    if args.baseline:
        sides = {"baseline": args.baseline.resolve(), **sides}
    header = (
        f"{'schools':>8} {'rows':>8} {'code':>9} {'first call ms':>14} {'median ms':>10} "
        f"{'fastest ms':>10} {'cpu ms':>7} {'fits':>5}"
    )
    print(header + (f" {'baseline / this':>16} {'in cpu':>7}" if args.baseline else ""))
    print("-" * (len(header) + (25 if args.baseline else 0)), flush=True)
    rows = []
    for schools, fits in SCHOOLS_IN_PROCESS.items():
        got: dict[str, dict] = {side: {"first": [], "times": [], "cpu": []} for side in sides}
        for _ in range(args.inprocess_runs):  # alternate, so that both see the same load
            for side, src in sides.items():
                _, res, err = run(
                    IN_PROCESS,
                    str(ROOT / "tests" / "reference"),
                    str(schools),
                    str(args.inprocess_fits if schools == 50 else fits),
                    str(CSV),
                    timeout=args.timeout,
                    src=src,
                )
                if res is None:
                    sys.exit(f"{side} run failed: {err}")
                got[side]["first"].append(res["first"])
                got[side]["times"] += res["times"]
                got[side]["cpu"] += res["cpu"]
                got[side]["rows"] = res["rows"]
        medians = {side: statistics.median(g["times"]) for side, g in got.items()}
        cpus = {side: statistics.median(g["cpu"]) for side, g in got.items()}
        for side, g in got.items():
            row = {
                "schools": schools,
                "rows": g["rows"],
                "code": side,
                "first_s": statistics.median(g["first"]),
                "median_s": medians[side],
                "fastest_s": min(g["times"]),
                "cpu_s": cpus[side],
                "fits": len(g["times"]),
            }
            ratio = ""
            if side == "this" and args.baseline:
                row["ratio"] = medians["baseline"] / medians["this"]
                row["cpu_ratio"] = cpus["baseline"] / cpus["this"]
                ratio = f" {row['ratio']:>15.2f}x {row['cpu_ratio']:>6.2f}x"
            print(
                f"{schools:>8} {g['rows']:>8} {side:>9} {row['first_s'] * 1e3:>14.1f} "
                f"{row['median_s'] * 1e3:>10.1f} {row['fastest_s'] * 1e3:>10.1f} "
                f"{row['cpu_s'] * 1e3:>7.1f} {row['fits']:>5}{ratio}",
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("schools", "scale", "inprocess", "all"), default="all")
    p.add_argument("--repeat", type=int, default=5, help="poolwise runs of the 50 schools")
    p.add_argument("--fits", type=int, default=3, help="fits per size (median)")
    p.add_argument("--pymc-runs", type=int, default=2)
    p.add_argument(
        "--pymc-chains", type=int, default=4, help="PyMC's chains (4: its default on 4 CPUs)"
    )
    p.add_argument("--sizes", nargs="+", default=["1e3", "1e4", "1e5", "1e6"])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--methods", nargs="+", default=["auto", "exact"], choices=("auto", "exact"))
    p.add_argument("--min-exact", type=float, default=0, help="exact only from this many groups")
    p.add_argument("--max-exact", type=float, default=1e5)
    p.add_argument("--slow", type=float, default=30.0, help="no repeats after a fit this slow")
    p.add_argument("--timeout", type=float, default=590.0, help="per subprocess, seconds")
    p.add_argument("--inprocess-fits", type=int, default=20, help="50-schools fits per process")
    p.add_argument("--inprocess-runs", type=int, default=3, help="processes per size and code")
    p.add_argument("--baseline", type=Path, help="another checkout's src, to compare with")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    results = {}
    if args.part in ("schools", "all"):
        results["schools"] = schools(args)
    if args.part in ("scale", "all"):
        results["scale"] = scale(args)
    if args.part in ("inprocess", "all"):
        results["inprocess"] = in_process(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
