"""Simulation-based calibration of every family x engine, a regression, and eb against group count.

    python bench/calibration.py run one_factor   # 1000 simulations per family x engine
    python bench/calibration.py run regression   # 200 simulations of a binomial regression
    python bench/calibration.py run eb_groups    # empirical Bayes as the number of groups grows
    python bench/calibration.py run laplace      # 500 simulations per regression family, Laplace
    python bench/calibration.py run KIND NAME... # only these jobs of KIND, in this order
    python bench/calibration.py run KIND NAME... --sims N  # the first N simulations only
    python bench/calibration.py report           # CALIBRATION.md and the plots, from the results

Each job writes its ranks and tests to bench/calibration_results/<job>.json and its plot to
docs/calibration/<job>.png; ``report`` collects them. Jobs can run side by side (one core each).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import matplotlib

matplotlib.use("Agg")
import calibration_laplace as lp  # noqa: E402
import numpy as np  # noqa: E402

import poolwise.check as pc  # noqa: E402
from poolwise import HalfNormal  # noqa: E402
from poolwise.simulate_formula import PRIORS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "calibration_results"
PLOTS = ROOT / "docs" / "calibration"
LEVEL = 0.01  # a run is called uniform when every p-value, Bonferroni-adjusted, exceeds this

# 8 groups of unequal sizes: theta[0] is the smallest group, theta[7] the largest
SIZES = {
    "normal": (2, 3, 4, 5, 8, 10, 15, 20),
    "normal_se": (3.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.3, 0.2),
    "binomial": (5, 10, 10, 20, 20, 50, 100, 200),
    "poisson": (0.5, 1.0, 2.0, 2.0, 5.0, 10.0, 20.0, 50.0),
}
N_ONE_FACTOR = 1000
N_REGRESSION = 200
EB_GROUPS = (5, 10, 30, 100, 1000)
N_EB_GROUPS = 200


def jobs(kind: str) -> dict[str, tuple[pc.CalibrationSpec, int]]:
    out = {}
    if kind == "one_factor":
        for family, sizes in SIZES.items():
            for method in ("exact", "eb", "nuts"):
                spec = pc.CalibrationSpec(family, sizes, method=method, draws=99, tune=400, thin=5)
                out[f"{family}_{method}"] = (spec, N_ONE_FACTOR)
    elif kind == "regression":
        spec = pc.CalibrationSpec(
            "regression", (30,) * 8, method="nuts", draws=49, tune=400, thin=4
        )
        out["regression_nuts"] = (spec, N_REGRESSION)
    elif kind == "eb_groups":
        for family, size in (("normal_se", 1.0), ("binomial", 20)):
            for j in EB_GROUPS:
                spec = pc.CalibrationSpec(family, (size,) * j, method="eb", draws=99)
                out[f"eb_{family}_J{j}"] = (spec, N_EB_GROUPS)
        # where method="auto" starts to use eb
        spec = pc.CalibrationSpec("normal_se", (1.0,) * 20_001, method="eb", draws=99)
        out["eb_normal_se_J20001"] = (spec, 100)
    elif kind == "laplace":
        for family, sizes in lp.SIZES.items():
            for method in ("laplace", "eb") if family in lp.WITH_EB else ("laplace",):
                spec = pc.CalibrationSpec(family, sizes, method=method, draws=99)
                out[f"{family}_{method}"] = (spec, lp.N_SIMS)
        wide = {**PRIORS["bernoulli"], "1|group_sigma": HalfNormal(lp.WIDE_SD)}
        spec = pc.CalibrationSpec(
            "regression_bernoulli", lp.SIZES["regression_bernoulli"], "laplace", wide, draws=99
        )
        out["regression_bernoulli_laplace_wide"] = (spec, lp.N_SIMS)
    else:
        raise SystemExit(f"unknown job kind {kind!r}")
    return out


REGRESSION_CHUNK = 20


def _regression_chunk(spec: pc.CalibrationSpec, chunk: int) -> None:
    """One chunk of the regression's simulations (each fit compiles its own model, and a long
    process runs out of code memory: chunks run as separate processes)."""
    path = RESULTS / f"regression_chunk{chunk:02d}.json"
    if path.exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cal = pc.calibration(spec, n_sims=REGRESSION_CHUNK, seed=2018 + chunk)
    record = {
        "ranks": {c: cal.ranks[c].tolist() for c in cal.ranks.columns},
        "warnings": cal.warnings,
        "divergences": cal.divergences,
        "seconds": cal.seconds,
    }
    path.write_text(json.dumps(record))


def _progress(name: str):
    """Prints the job's progress every 50 simulations (wall time so far)."""
    start = time.perf_counter()

    def show(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(f"{name}: {done}/{total} in {time.perf_counter() - start:.0f}s", flush=True)

    return show


def _calibration(name: str, spec: pc.CalibrationSpec, n_sims: int) -> pc.Calibration:
    if spec.family != "regression" or spec.method != "nuts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return pc.calibration(spec, n_sims=n_sims, seed=2018, progress=_progress(name))
    import subprocess

    import pandas as pd

    chunks = []
    for chunk in range(n_sims // REGRESSION_CHUNK):
        path = RESULTS / f"regression_chunk{chunk:02d}.json"
        if not path.exists():
            subprocess.run([sys.executable, __file__, "chunk", str(chunk)], check=True)
        chunks.append(json.loads(path.read_text()))
    ranks = pd.concat([pd.DataFrame(c["ranks"]) for c in chunks], ignore_index=True)
    bins = pc._choose_bins(len(ranks), spec.draws)
    tests = pd.DataFrame(
        [pc.uniformity(ranks[c].to_numpy(), spec.draws, bins) for c in ranks.columns],
        index=pd.Index(ranks.columns, name="parameter"),
        columns=["chi2", "chi2_p", "ecdf_p"],
    )
    return pc.Calibration(
        spec=spec,
        ranks=ranks,
        tests=tests,
        bins=bins,
        warnings=sum(c["warnings"] for c in chunks),
        divergences=sum(c["divergences"] for c in chunks),
        seconds=sum(c["seconds"] for c in chunks),
        engines=["nuts"] * len(ranks),
    )


def _commit() -> str:
    """The code's commit (with "+changes" where the working tree differs from it)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = git("status", "--porcelain", "--untracked-files=no", "src").strip()
    return git("rev-parse", "HEAD").strip() + (" +changes" if dirty else "")


def run(kind: str, names: list[str], sims: int | None = None) -> None:
    """Run the jobs of ``kind`` not yet done (of ``names`` only, in that order, where given;
    ``sims`` simulations each instead of the job's number, where given)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    PLOTS.mkdir(parents=True, exist_ok=True)
    todo = jobs(kind)
    for name in names or list(todo):
        spec, n_sims = todo[name]
        n_sims = sims or n_sims
        path = RESULTS / f"{name}.json"
        if path.exists():
            continue
        start, commit = time.perf_counter(), _commit()  # the code as the job starts
        cal = _calibration(name, spec, n_sims)
        record = {
            "name": name,
            "family": spec.family,
            "method": spec.method,
            "groups": len(spec.group_sizes),
            "group_sizes": list(spec.group_sizes)[:8],
            "priors": {k: repr(v) for k, v in spec.used_priors().items()},
            "draws": spec.draws,
            "n_sims": n_sims,
            "bins": cal.bins,
            "warnings": cal.warnings,
            "divergences": cal.divergences,
            "engines": cal.engines,
            "commit": commit,
            "seconds": cal.seconds if name == "regression_nuts" else time.perf_counter() - start,
            "tests": cal.tests.reset_index().to_dict("records"),
            "ranks": {c: cal.ranks[c].tolist() for c in cal.ranks.columns},
        }
        path.write_text(json.dumps(record))
        if not name.startswith("eb_") or name.endswith(("_J5", "_J1000")):
            plain = name == f"{spec.family}_{spec.method}"
            fig = cal.plot(None if plain else f"{name}: {n_sims} simulations")
            fig.savefig(PLOTS / f"{name}.png", dpi=72)
            matplotlib.pyplot.close(fig)
        print(f"{name}: {record['seconds']:.0f}s, min p {cal.min_p:.3g}", flush=True)


def _verdict(tests: list[dict]) -> tuple[float, bool]:
    p = min(min(t["chi2_p"], t["ecdf_p"]) for t in tests)
    m = 2 * len(tests)
    return p, p * m > LEVEL


def _findings(records: dict[str, dict]) -> list[str]:
    main = {n: r for n, r in records.items() if not n.startswith("eb_")}
    calibrated = [n for n, r in main.items() if r["method"] != "eb" and _verdict(r["tests"])[1]]
    others = [n for n, r in main.items() if r["method"] != "eb" and n not in calibrated]
    eb_bad = [n for n, r in main.items() if r["method"] == "eb" and not _verdict(r["tests"])[1]]
    out = [
        f"- Exact and NUTS: {len(calibrated)} of {len(calibrated) + len(others)} runs uniform"
        + (f"; not uniform: {', '.join(others)}." if others else "."),
        f"- Empirical Bayes with 8 groups is miscalibrated in {len(eb_bad)} of "
        f"{sum(r['method'] == 'eb' for r in main.values())} families: the groups' ranks pile up "
        "at both ends (intervals too narrow), because the groups are drawn given the estimated "
        "hyperparameters as if they were known, and the estimate often sits at the edge (tau = 0 "
        "or kappa = infinity: the fits that warned). Its standard errors for the hyperparameters "
        "(an asymptotic normal) are miscalibrated too.",
    ]
    for family in sorted({r["family"] for n, r in records.items() if n.startswith("eb_")}):
        rows = sorted(
            (r for n, r in records.items() if n.startswith("eb_") and r["family"] == family),
            key=lambda r: r["groups"],
        )
        bad = [r["groups"] for r in rows if not _verdict(r["tests"])[1]]
        good = [r["groups"] for r in rows if _verdict(r["tests"])[1]]
        out.append(
            f"- eb, {family}: miscalibrated at {', '.join(map(str, bad)) or 'no size tried'} "
            f"groups; uniform at {', '.join(map(str, good)) or 'no size tried'}."
        )
    out += [
        "- Why eb stays miscalibrated for normal_se even with 1000 groups: when tau is small "
        "next to the standard errors, eb estimates tau = 0 (a singular fit, in the 'fits that "
        "warned' column), every group is pooled completely and its interval collapses onto the "
        "estimated mu, so the truth ranks at 0 or L. This happens at any number of groups when "
        "tau is small enough; at 20,001 groups the run is uniform overall, but its singular fits "
        "still give extreme ranks.",
        '- `method="auto"` uses eb only above 20,000 groups (`poolwise.onefactor.AUTO_EB_GROUPS`), '
        "beyond every size at which eb was miscalibrated here, and leaves eb for the exact "
        "engine whenever eb's fit is singular (a hyperparameter at the edge of its range). With "
        "that, the threshold is right as a choice of speed: below it the exact engine costs "
        "little and is calibrated; above it eb's non-singular fits are calibrated.",
        "- Exact runs that warned carry the note that kappa's posterior has no mean (the default "
        "Lomax(0.5, 1) prior's tail); the regression's fits warn of low effective sample size "
        "(196 draws per fit in 2 chains, thinned to 49; the group sd's ESS was about 35), which "
        "makes the ranks slightly correlated, not biased.",
    ]
    out.append(
        "- The ECDF test's p-value comes from 2,000 simulated uniform rank sets, so its smallest "
        "possible value is 1/2001 = 0.0005 (read 0.0005 as 'at most 0.0005')."
    )
    return out


def report() -> None:
    """CALIBRATION.md from every job's results; where only the Laplace jobs' results are at hand
    (the others' are not kept in the repository), their section goes into the existing file."""
    records = {
        p.stem: json.loads(p.read_text())
        for p in sorted(RESULTS.glob("*.json"))
        if not p.stem.startswith("regression_chunk")
    }
    laplace = {n: r for n, r in records.items() if lp.is_laplace(r)}
    records = {n: r for n, r in records.items() if n not in laplace}
    plots = []
    for png in sorted(PLOTS.glob("*.png")):
        plots += [f"![{png.stem}](docs/calibration/{png.name})", ""]
    section = lp.section(laplace, _verdict) if laplace else []
    found = lp.findings(laplace, _verdict)
    if not records:
        text = (ROOT / "CALIBRATION.md").read_text()
        (ROOT / "CALIBRATION.md").write_text(lp.splice(text, section, found, plots))
        print("wrote the Laplace section into CALIBRATION.md")
        return
    lines = [
        "# Calibration",
        "",
        "Simulation-based calibration (Talts et al. 2018) of every family and engine, produced by",
        "`python bench/calibration.py` with `poolwise.check.calibration`. Each simulation draws the",
        "hyperparameters from the priors, the groups' parameters from the population and the data",
        "from the groups, fits with the same priors, and ranks each true value among L posterior",
        "draws. If the posterior is right, every rank is uniform on 0..L.",
        "",
        "Two tests per parameter: chi-square on equal bins of the ranks, and the ECDF test (smallest",
        "pointwise binomial tail probability of the rank ECDF, calibrated by simulating uniform",
        "ranks). A run is called uniform when its smallest p-value times the number of tests",
        f"(Bonferroni over parameters and both tests) exceeds {LEVEL}.",
        "",
        "Empirical Bayes is checked on what it reports: group draws given the estimated",
        "hyperparameters, and the asymptotic normal approximation of the estimate (its standard",
        "errors) for the hyperparameters. NUTS runs on the collapsed model",
        "(`poolwise.engines.collapsed_nuts`: numpyro samples the hyperparameters with the groups",
        "integrated out, then each group's parameter is drawn from its exact conditional).",
        "",
        "## Every family x engine, 8 groups",
        "",
        "| family | engine | sims | L | uniform | smallest p | p-values (chi-square / ECDF) | fits that warned | divergences | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in records.items():
        if name.startswith("eb_"):
            continue
        first = [r["family"], r["method"], r["n_sims"], r["draws"]]
        last = [r["warnings"], r["divergences"], f"{r['seconds']:.0f}"]
        lines.append(lp.table_row(first, r, _verdict, last))
    lines += ["", "Group sizes (theta[0] is the smallest group, theta[7] the largest):", ""]
    for family, sizes in SIZES.items():
        lines.append(f"- {family}: {', '.join(f'{s:g}' for s in sizes)}")
    lines += [
        "- regression: `p(successes, trials) ~ 1 + x + (1|group)`, 8 groups, cells x = 0 and",
        "  x = 1 of 30 trials each; group effects are zero-sum deviations as in the fitted model.",
        "",
        "Priors (the same draw the truth and fit):",
        "",
    ]
    seen = set()
    for r in records.values():
        if r["family"] in seen or r["name"].startswith("eb_"):
            continue
        seen.add(r["family"])
        lines.append(f"- {r['family']}: " + ", ".join(f"{k} ~ {v}" for k, v in r["priors"].items()))
    lines += [
        "",
        "## Empirical Bayes against the number of groups",
        "",
        "Equal groups (normal_se: se = 1; binomial: 20 trials), 200 simulations per row (100 at",
        "20,001 groups).",
        "",
        "| family | groups | uniform | smallest p (hyperparameters) | smallest p (groups) | fits that warned |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    eb = [r for n, r in records.items() if n.startswith("eb_")]
    eb.sort(key=lambda r: (r["family"], r["groups"]))
    for r in eb:
        p, ok = _verdict(r["tests"])
        hyper = [t for t in r["tests"] if not t["parameter"].startswith("theta")]
        groups = [t for t in r["tests"] if t["parameter"].startswith("theta")]
        ph = min(min(t["chi2_p"], t["ecdf_p"]) for t in hyper)
        pg = min(min(t["chi2_p"], t["ecdf_p"]) for t in groups)
        lines.append(
            f"| {r['family']} | {r['groups']} | {'yes' if ok else '**no**'} | {ph:.2g} | "
            f"{pg:.2g} | {r['warnings']} |"
        )
    lines += ["", *section, "## Findings", "", *_findings(records), *found, "", "## Plots", ""]
    lines += plots
    (ROOT / "CALIBRATION.md").write_text("\n".join(lines) + "\n")
    print("wrote CALIBRATION.md")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "report":
        report()
    elif len(sys.argv) == 3 and sys.argv[1] == "chunk":
        np.seterr(all="ignore")
        _regression_chunk(jobs("regression")["regression_nuts"][0], int(sys.argv[2]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        np.seterr(all="ignore")
        args, sims = sys.argv[3:], None
        if "--sims" in args:
            i = args.index("--sims")
            sims = int(args[i + 1])
            del args[i : i + 2]
        run(sys.argv[2], args, sims)
    else:
        raise SystemExit(__doc__)
