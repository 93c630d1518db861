"""One scalar factor by adaptive Gauss–Hermite quadrature against plain Laplace and NUTS, in process.

* ``seed``: the thread's ``p(opens, sent) ~ 1 + trial_control + (1|distribution)`` (6 cells,
  3 levels), default priors; goal 20 ms.
* ``surgical``: BUGS surgical, ``p(r_deaths, n_operations) ~ 1 + (1|hospital)`` (12 hospitals).
* ``seeds``: BUGS seeds, ``p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract +
  (1|plate)`` (21 plates).

``aghq`` is ``method="laplace"`` (which takes these models); ``laplace`` the Laplace engine on
the same prepared model (:func:`poolwise.glmm.laplace.fit_laplace`); ``nuts`` ``method="nuts"``
with its defaults (4 chains of 1,000 draws after 1,000 warm-up), once compiled. Ratios are to
AGHQ in the same run. Run: python bench/bench_aghq.py [--repeats 7]. Prints a markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_glmm import thread_data  # noqa: E402
from timing import parse, timed  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "poolwise" / "examples"
GOALS = {"seed": 0.020}


def models() -> dict:
    import pandas as pd

    return {
        "seed": ("p(opens, sent) ~ 1 + trial_control + (1|distribution)", thread_data()),
        "surgical": (
            "p(r_deaths, n_operations) ~ 1 + (1|hospital)",
            pd.read_csv(EXAMPLES / "surgical.csv"),
        ),
        "seeds": (
            "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
            pd.read_csv(EXAMPLES / "seeds.csv"),
        ),
    }


def main(argv: list[str] | None = None) -> None:
    import poolwise
    from poolwise.glmm.laplace import fit_laplace
    from poolwise.glmm.setup import prepare

    args = parse(__doc__, argv)
    print("| model | aghq ms | laplace ms | nuts ms | laplace / aghq | nuts / aghq | goal ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (formula, data) in models().items():

        def run(method, formula=formula, data=data):
            options = {"progress": False} if method == "nuts" else {}
            return poolwise.fit(formula, data, method=method, seed=1, **options)

        aghq, _, fit = timed(lambda: run("laplace"), args.repeats)
        assert fit.info["engine"] == "aghq"
        laplace, _, _ = timed(
            lambda formula=formula, data=data: fit_laplace(prepare(formula, data), seed=1),
            args.repeats,
        )
        nuts, _, _ = timed(lambda: run("nuts"), 1)
        goal = GOALS.get(name)
        print(
            f"| {name} | {1e3 * aghq:.1f} | {1e3 * laplace:.1f} | {1e3 * nuts:.0f} | "
            f"{laplace / aghq:.2f} | {nuts / aghq:.0f} | {'' if goal is None else f'{1e3 * goal:g}'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
