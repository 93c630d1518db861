"""``method="laplace"`` against long NUTS runs on the calibration's first simulated data sets.

    python bench/laplace_vs_nuts.py poisson poisson_50 bernoulli_wide

For each case and data set: the engine ``method="laplace"`` used (``aghq`` or ``laplace``), then
(its posterior mean - NUTS's) in NUTS posterior sds, and the ratio of the posterior sds, for the
Intercept, x, the group sd and the first and last level's effect; then their means over the data
sets with standard errors, over all and by engine. The numbers quoted in CALIBRATION.md's
Laplace findings.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

import poolwise
import poolwise.check as pc
from poolwise import HalfNormal
from poolwise.simulate_formula import FORMULAS, OPTIONS, PRIORS

CASES = {  # name: (family, group sizes, priors, data sets)
    "poisson": ("poisson", (0.5, 1.0, 2.0, 2.0, 5.0, 10.0, 20.0, 50.0), PRIORS["poisson"], 12),
    "poisson_50": ("poisson", (50.0,) * 8, PRIORS["poisson"], 6),
    "bernoulli_wide": (
        "bernoulli",
        (2, 3, 4, 5) * 5,
        {**PRIORS["bernoulli"], "1|group_sigma": HalfNormal(2.5)},
        10,
    ),
}
NAMES = ("Intercept", "x", "1|group_sigma", "1|group[0]", "1|group[-1]")


def _flat(fit, name: str) -> np.ndarray:
    if name.startswith("1|group["):
        return fit.draws["1|group"][..., int(name[8:-1])].ravel()
    return fit.draws[name].ravel()


def compare(case: str) -> tuple[np.ndarray, np.ndarray]:
    """Each data set's shifts and sd ratios (a row), and the engine that fitted it."""
    family, sizes, priors, n = CASES[case]
    rows, engines = [], []
    for s in range(n):
        df, _, _ = pc.simulate_regression(sizes, priors, pc._sim_seed(2018, s), family)
        kw = dict(data=df, priors=priors, seed=1, **OPTIONS[family])
        la = poolwise.fit(FORMULAS[family], method="laplace", draws=4000, **kw)
        nu = poolwise.fit(FORMULAS[family], method="nuts", draws=8000, **kw)
        row = []
        for name in NAMES:
            a, b = _flat(la, name), _flat(nu, name)
            row += [(a.mean() - b.mean()) / b.std(), a.std() / b.std()]
        rows.append(row)
        engines.append(la.info["engine"])
        print(case, s, engines[-1], np.round(row, 3), flush=True)
    return np.array(rows), np.array(engines)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    for case in sys.argv[1:] or list(CASES):
        rows, engines = compare(case)
        for engine in ["all", *sorted(set(engines))]:
            o = rows if engine == "all" else rows[engines == engine]
            m, se = o.mean(0), o.std(0) / np.sqrt(len(o))
            for i, name in enumerate(NAMES):
                print(
                    f"{case} {engine} ({len(o)}) {name}: mean shift {m[2 * i]:+.3f} +- "
                    f"{se[2 * i]:.3f} sd, sd ratio {m[2 * i + 1]:.3f} +- {se[2 * i + 1]:.3f}"
                )
