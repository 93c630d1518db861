"""Before/after check of one-factor fits: this checkout against another one (by default /work/main).

Fits every bundled example with the family its columns imply, under each pooling, the
50 schools (``tests/reference/fifty_schools.csv``) and a 1,000-school version
of it, in a subprocess per checkout, and prints the largest relative difference of the groups' and
the population's means and sds, and, apart, the largest difference of the HDIs' ends and the
population's medians in posterior sds (they are root-found on the grid's mixtures).

    python bench/check_same_numbers.py                 # against /work/main
    python bench/check_same_numbers.py --other PATH    # against another checkout's src
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FITS = r"""
import json, sys, warnings
import numpy as np, pandas as pd
import poolwise
from poolwise.data import example_path
sys.path.insert(0, sys.argv[1] + "/tests/reference")
import make_fifty_schools as m
warnings.simplefilter("ignore")
ex = lambda name: pd.read_csv(example_path(name))
bb = ex("beta_blockers")
m.N_SCHOOLS = 1000
thousand = m.simulate()[0]
fifty = pd.read_csv(sys.argv[1] + "/tests/reference/fifty_schools.csv")
schools_priors = {"mu": poolwise.Normal(50, 10), "tau": poolwise.Exponential(1),
                  "sigma": poolwise.Exponential(1)}
cases = {
    "eight_schools": (ex("eight_schools"), dict(group="school", y="y", se="sigma")),
    "eight_schools_halfcauchy": (ex("eight_schools"), dict(group="school", y="y", se="sigma",
        priors={"mu": poolwise.Normal(0, 5), "tau": poolwise.HalfCauchy(5)})),
    "beta_blockers": (bb, dict(group="study", y="y_logodds_bda3", se="sigma_bda3")),
    "dyes": (ex("dyes"), dict(group="batch", y="yield_g")),
    "pumps": (ex("pumps"), dict(group="pump", counts="x_failures", exposure="t_thousand_hours")),
    "radon": (ex("radon_mn"), dict(group="county", y="log_radon")),
    "rat_tumors": (ex("rat_tumors"), dict(group="experiment", successes="y", trials="n")),
    "seeds": (ex("seeds"), dict(group="plate", successes="r_germinated", trials="n_seeds")),
    "surgical": (ex("surgical"), dict(group="hospital", successes="r_deaths",
                                      trials="n_operations")),
    "fifty_schools": (fifty, dict(group="school", y="score", priors=schools_priors)),
    "fifty_schools_default": (fifty, dict(group="school", y="score")),
    "thousand_schools": (thousand, dict(group="school", y="score", priors=schools_priors)),
}
out = {}
for name, (df, kw) in cases.items():
    for pooling in ("partial", "complete", "none"):
        fit = poolwise.fit(df, pooling=pooling, seed=1, **kw)
        out[f"{name}/{pooling}"] = {
            "groups": fit.groups[["mean", "sd", "hdi_low", "hdi_high"]].to_numpy().tolist(),
            "population": fit.population[["mean", "sd", "hdi_low", "hdi_high", "median"]]
            .to_numpy().tolist(),
            "method": fit.method,
        }
print("RESULT" + json.dumps(out))
"""


def results(src: Path, root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", FITS, str(root)], capture_output=True, text=True, env=env
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    sys.exit(f"fits failed under {src}: {proc.stderr.strip()[-2000:]}")


def relative(a: list, b: list, columns: slice, table: str) -> tuple[float, str]:
    """Largest relative difference over the columns, and where; an sd is compared on the scale
    of its mean too (the sd of a fixed hyperparameter is rounding noise about zero)."""
    worst, at = 0.0, "-"
    for i, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        for j, (x, y) in enumerate(zip(row_a[columns], row_b[columns], strict=True)):
            floor = 1e-8 * abs(row_a[0]) if columns.start + j == 1 else 0.0
            if x != y and abs(x - y) / max(abs(x), abs(y), floor) > worst:
                worst = abs(x - y) / max(abs(x), abs(y), floor)
                at = f"{table}[{i}, {('mean', 'sd', 'hdi_low', 'hdi_high')[columns.start + j]}]"
    return worst, at


def in_sds(a: list, b: list, table: str) -> tuple[float, str]:
    """Largest difference of the HDIs' ends (and medians) in posterior sds, and where (a
    quarter of the HDI's width where the sd does not exist)."""
    worst, at = 0.0, "-"
    for i, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        scale = row_a[1] if math.isfinite(row_a[1]) else abs(row_a[3] - row_a[2]) / 4
        for j in range(2, len(row_a)):
            x, y = row_a[j], row_b[j]
            if x != y and abs(x - y) / max(scale, 1e-300) > worst:
                worst = abs(x - y) / max(scale, 1e-300)
                at = f"{table}[{i}, {('hdi_low', 'hdi_high', 'median')[j - 2]}]"
    return worst, at


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", type=Path, default=Path("/work/main"))
    args = p.parse_args()
    after = results(ROOT / "src", ROOT)
    before = results(args.other / "src", ROOT)
    print(f"{'case':<36} {'means, sds':>11} {'where':<24} {'HDIs (sd)':>9} {'where':<24}")
    overall = [0.0, 0.0]
    for case, a in after.items():
        b = before[case]
        assert a["method"] == b["method"], case
        moments = max(
            relative(a["groups"], b["groups"], slice(0, 2), "groups"),
            relative(a["population"], b["population"], slice(0, 2), "population"),
        )
        hdis = max(
            in_sds(a["groups"], b["groups"], "groups"),
            in_sds(a["population"], b["population"], "population"),
        )
        overall = [max(overall[0], moments[0]), max(overall[1], hdis[0])]
        print(f"{case:<36} {moments[0]:>11.1e} {moments[1]:<24} {hdis[0]:>9.1e} {hdis[1]:<24}")
    print(f"{'largest':<36} {overall[0]:>11.1e} {'':<24} {overall[1]:>9.1e}")


if __name__ == "__main__":
    main()
