"""Formula fits by the Laplace engine, in process: the seed model, radon and radon's slopes.

* ``seed``: the thread's ``p(opens, sent) ~ 1 + trial_control + (1|distribution)`` (6 cells),
  default priors; goal 20 ms.
* ``radon``: ``log_radon ~ floor + (1|county)`` (919 homes, 85 counties), default priors;
  goal 50 ms.
* ``radon_slopes``: ``log_radon ~ floor + (1 + floor | county)`` (Gelman and Hill's M3: a
  correlated county intercept and floor slope, 4 variance parameters on a pruned grid), default
  priors; goal 50 ms.

Each fit is timed after a first (warm-up) fit in the same process, median of ``--repeats``;
``method="eb"`` alongside. Run: python bench/bench_laplace.py [--repeats 7]. Prints a markdown
table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_glmm import radon_data, thread_data  # noqa: E402
from timing import parse, timed  # noqa: E402

GOALS = {
    ("seed", "laplace"): 0.020,
    ("radon", "laplace"): 0.050,
    ("radon_slopes", "laplace"): 0.050,
}
MODELS = {
    "seed": ("p(opens, sent) ~ 1 + trial_control + (1|distribution)", thread_data),
    "radon": ("log_radon ~ floor + (1|county)", radon_data),
    "radon_slopes": ("log_radon ~ floor + (1 + floor | county)", radon_data),
}


def main(argv: list[str] | None = None) -> None:
    import poolwise

    args = parse(__doc__, argv)
    print("| model | method | median ms | fastest ms | goal ms | met | grid points |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (formula, make) in MODELS.items():
        data = make()
        for method in ("laplace", "eb"):
            med, fast, fit = timed(
                lambda formula=formula, data=data, method=method: poolwise.fit(
                    formula, data, method=method, seed=1
                ),
                args.repeats,
            )
            goal = GOALS.get((name, method))
            met = "" if goal is None else ("yes" if med <= goal else "no")
            print(
                f"| {name} | {method} | {1e3 * med:.1f} | {1e3 * fast:.1f} | "
                f"{'' if goal is None else f'{1e3 * goal:g}'} | {met} | "
                f"{fit.info.get('grid_points', '')} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
