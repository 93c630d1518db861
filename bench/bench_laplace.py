"""Formula fits by the Laplace engine, in process: the seed model and radon.

* ``seed``: the thread's ``p(opens, sent) ~ 1 + trial_control + (1|distribution)`` (6 cells),
  default priors; goal 20 ms.
* ``radon``: ``log_radon ~ floor + (1|county)`` (919 homes, 85 counties), default priors;
  goal 50 ms.

Each fit is timed after a first (warm-up) fit in the same process, median of ``--repeats``;
``method="eb"`` alongside. Run: python bench/bench_laplace.py [--repeats 7]. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_glmm import radon_data, thread_data  # noqa: E402

GOALS = {("seed", "laplace"): 0.020, ("radon", "laplace"): 0.050}
MODELS = {
    "seed": ("p(opens, sent) ~ 1 + trial_control + (1|distribution)", thread_data),
    "radon": ("log_radon ~ floor + (1|county)", radon_data),
}


def main(argv: list[str] | None = None) -> None:
    import poolwise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print("| model | method | median ms | fastest ms | goal ms | met | grid points |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (formula, make) in MODELS.items():
        data = make()
        for method in ("laplace", "eb"):
            times = []
            for _ in range(args.repeats + 1):
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = poolwise.fit(formula, data, method=method, seed=1)
                times.append(time.perf_counter() - t)
            med, fast = statistics.median(times[1:]), min(times[1:])
            goal = GOALS.get((name, method))
            met = "" if goal is None else ("yes" if med <= goal else "no")
            print(
                f"| {name} | {method} | {1e3 * med:.1f} | {1e3 * fast:.1f} | "
                f"{'' if goal is None else f'{1e3 * goal:g}'} | {met} | {fit.info['grid_points']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
