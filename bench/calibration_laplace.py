"""The Laplace engine's rows of CALIBRATION.md: regressions ``1 + x + (1|group)`` by family.

Used by ``bench/calibration.py`` (``run laplace`` runs the jobs; ``report`` writes the section,
or, where the other jobs' results are not at hand, puts it into the existing CALIBRATION.md).
"""

from __future__ import annotations

import numpy as np

from poolwise.simulate_formula import FORMULAS, OPTIONS

# regressions 1 + x + (1|group) fitted by the Laplace engine (poolwise.simulate_formula)
SIZES = {
    "regression": (30,) * 8,  # trials of each of a group's two cells, as the NUTS row
    "regression_bernoulli": (2, 3, 4, 5) * 5,  # rows of 0/1 outcomes per level
    "regression_poisson": (0.5, 1.0, 2.0, 2.0, 5.0, 10.0, 20.0, 50.0),  # exposure per cell
    "regression_normal": (2, 3, 4, 5, 8, 10, 15, 20),  # rows per level
}
WITH_EB = ("regression", "regression_normal")
N_SIMS = 500
HEADING = "## Formula fits by the Laplace engine"
MARK = "- Laplace engine"  # every finding of this section starts so
DESCRIBE = {
    "regression": "8 levels, two cells x = 0 and x = 1 of 30 trials each (as the NUTS row)",
    "regression_bernoulli": "20 levels of 2, 3, 4 and 5 rows (x alternating 0, 1 within a "
    "level); `1|group[0]` is a level of 2 rows, `1|group[19]` one of 5",
    "regression_poisson": "8 levels, two cells x = 0 and x = 1 with exposures 0.5, 1, 2, 2, 5, "
    "10, 20, 50 (both cells of a level alike)",
    "regression_normal": "8 levels of 2, 3, 4, 5, 8, 10, 15, 20 rows (x alternating 0, 1)",
}


def is_laplace(record: dict) -> bool:
    """Whether a result belongs to this section (a regression not fitted by NUTS)."""
    return record["family"] in SIZES and record["method"] != "nuts"


def _family(record: dict) -> str:
    return "binomial" if record["family"] == "regression" else record["family"].split("_")[1]


def _shape(ranks: list[int], L: int) -> str:
    """How ranks depart from uniform: their mean on 0..1 and their share in the outer tenths."""
    r = np.asarray(ranks) / L
    ends = np.mean((r < 0.1) | (r > 0.9))
    side = "above" if r.mean() > 0.5 else "below"
    return (
        f"mean rank {r.mean():.2f} of 1 (the truth lies {side} the posterior's centre more "
        f"often than not), {ends:.0%} of ranks in the outer tenths (uniform: 20%)"
    )


def section(records: dict[str, dict], verdict) -> list[str]:
    """The section's lines: the table, the models, their priors."""
    rows = sorted(
        (r for r in records.values() if is_laplace(r)),
        key=lambda r: (list(SIZES).index(r["family"]), r["method"]),
    )
    lines = [
        HEADING,
        "",
        "Regressions `1 + x + (1|group)` with a binomial, Bernoulli, Poisson (with exposure) and",
        'normal outcome, fitted by `method="laplace"` (the effects by a Laplace approximation given',
        "the variance parameters, integrated over them by quadrature; L draws from that mixture)",
        'and, for two of them, `method="eb"` (checked as the one-factor eb rows: the effects given',
        "the estimated variance parameters, the variance parameters from the asymptotic normal of",
        "their logs). Ranked: the common effects, the group sd (and the residual sd), and the",
        "zero-sum effects of the first and last level.",
        "",
        "| model | engine | levels | sims | L | uniform | smallest p | p-values (chi-square / ECDF) | fits that warned | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p, ok = verdict(r["tests"])
        cells = "; ".join(
            f"{t['parameter']} {t['chi2_p']:.3f} / {t['ecdf_p']:.3f}" for t in r["tests"]
        )
        lines.append(
            f"| {_family(r)} | {r['method']} | {r['groups']} | {r['n_sims']} | {r['draws']} | "
            f"{'yes' if ok else '**no**'} | {p:.2g} | {cells} | {r['warnings']} | "
            f"{r['seconds']:.0f} |"
        )
    lines += ["", "Models (the job's name, the formula and options, the levels):", ""]
    for family, text in DESCRIBE.items():
        f = "binomial" if family == "regression" else family.split("_")[1]
        options = "".join(f', {k}="{v}"' for k, v in OPTIONS[f].items())
        lines.append(f"- {family}: `{FORMULAS[f]}`{options}; {text}.")
    lines += ["", "Priors (the same draw the truth and fit):", ""]
    seen = set()
    for r in rows:
        if r["family"] not in seen:
            seen.add(r["family"])
            priors = ", ".join(f"{k} ~ {v}" for k, v in r["priors"].items())
            lines.append(f"- {r['family']}: {priors}")
    return lines + [""]


def findings(records: dict[str, dict], verdict) -> list[str]:
    """One finding per run: uniform or not, and how the ranks of each failing parameter lean."""
    out = []
    for r in sorted((r for r in records.values() if is_laplace(r)), key=lambda r: r["name"]):
        p, ok = verdict(r["tests"])
        head = f"{MARK}, {_family(r)} ({r['method']}, {r['n_sims']} simulations):"
        if ok:
            out.append(f"{head} uniform (smallest p {p:.2g}).")
            continue
        m = 2 * len(r["tests"])
        bad = [t for t in r["tests"] if min(t["chi2_p"], t["ecdf_p"]) * m <= 0.01]
        parts = [
            f"{t['parameter']} (p {min(t['chi2_p'], t['ecdf_p']):.2g}: "
            f"{_shape(r['ranks'][t['parameter']], r['draws'])})"
            for t in bad
        ]
        out.append(f"{head} **not uniform** in " + "; ".join(parts) + ".")
    return out


def splice(text: str, lines: list[str], found: list[str], plots: list[str]) -> str:
    """``text`` (CALIBRATION.md) with this section, these findings and the plot list replaced."""
    doc = text.rstrip("\n").split("\n")
    doc = [line for line in doc if not line.startswith(MARK)]
    if HEADING in doc:
        i = doc.index(HEADING)
        j = next((k for k in range(i + 1, len(doc)) if doc[k].startswith("## ")), len(doc))
        del doc[i:j]
    i = doc.index("## Findings")
    doc[i:i] = lines
    i = doc.index("## Plots")
    while doc[i - 1] == "":
        i -= 1
    doc[i:i] = found
    i = doc.index("## Plots")
    return "\n".join(doc[: i + 1] + [""] + plots) + "\n"
