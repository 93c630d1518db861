"""The Laplace engine's rows of CALIBRATION.md: regressions ``1 + x + (1|group)`` by family.

Used by ``bench/calibration.py`` (``run laplace`` runs the jobs; ``report`` writes the section,
or, where the other jobs' results are not at hand, puts it into the existing CALIBRATION.md).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from poolwise.check import _choose_bins, uniformity
from poolwise.simulate_formula import FORMULAS, OPTIONS, PRIORS

# regressions 1 + x + (1|group) fitted by the Laplace engine (poolwise.simulate_formula)
SIZES = {
    "regression": (30,) * 8,  # trials of each of a group's two cells, as the NUTS row
    "regression_bernoulli": (2, 3, 4, 5) * 5,  # rows of 0/1 outcomes per level
    "regression_poisson": (0.5, 1.0, 2.0, 2.0, 5.0, 10.0, 20.0, 50.0),  # exposure per cell
    "regression_normal": (2, 3, 4, 5, 8, 10, 15, 20),  # rows per level
}
WITH_EB = ("regression", "regression_normal")
# Laplace is weakest for binary outcomes in small levels with a large group sd: the Bernoulli
# model again, with the group sd's prior HalfNormal(WIDE_SD) instead of HalfNormal(1)
WIDE_SD = 2.5
N_SIMS = 500
# an engine's share of a run's fits is tested alone from this many fits on
MIN_SPLIT = 50
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


# what explains each run's ranks, by job name (numbers from the runs, and from comparisons with
# long NUTS runs of the same data sets made while writing them, stated where they are used)
EXPLAIN = {
    "regression_laplace": "Cells of 30 trials: AGHQ and, in the fits it declines (the group "
    "sd's posterior reaching sd = sqrt(0.8 x 8) = 2.53, as in the Poisson row), the Laplace "
    "approximation are both close enough here, as NUTS on the same model (the regression row "
    "above).",
    "regression_eb": "As the one-factor eb rows: the effects are drawn given the estimated sd as "
    "if it were known, so the levels' intervals are too narrow; the sd's ranks pile at L "
    "(67 of 500 at exactly 99) because eb puts the sd at its boundary (~0, no standard error) "
    "whenever the levels barely differ, and the truth is then above every draw.",
    "regression_bernoulli_laplace": "Bernoulli rows are reduced to binomial cells of 1 to 3 "
    "trials, and AGHQ fits nearly every data set (under this prior the group sd's posterior "
    "seldom reaches its bound sqrt(0.8 x 20) = 4). The earlier run by the Laplace approximation "
    "(code `0407a15`, the same 500 data sets) passed too, but leaned: the group sd's mean rank "
    "0.534, the posterior below the truth, the known bias of Laplace for binary outcomes in "
    "small clusters (Breslow and Lin 1995; Joe 2008); with AGHQ the group sd's mean rank is "
    "0.496. The Intercept's lean is not that bias: its mean rank was 0.530 under Laplace and is "
    "0.531 here (0.528 in AGHQ's 484 fits alone; ECDF p 0.018, inside the Bonferroni level), "
    "about 0.1 posterior sd if read as a shift. AGHQ draws the common effects from a Gaussian "
    "given the sd, which binary data in 20 small levels make only nearly normal; on one "
    "Bernoulli model of this shape AGHQ's Intercept is 0.02 NUTS posterior sds from NUTS's "
    "(BENCHMARKS.md, bernoulli_small). Not yet compared with NUTS over several of these data "
    "sets.",
    "regression_bernoulli_laplace_wide": "Under this prior the group sd's posterior often "
    "reaches AGHQ's bound sqrt(0.8 x 20) = 4, and AGHQ declines 378 of the 500 fits (declined "
    "before its sd grid is built, where the posterior is clearly beyond the bound), which get "
    "the Laplace approximation with its simplified-Laplace mean correction and the sd's "
    "quadrature weights tilted by the importance-sampled error of its Laplace marginal. The "
    "earlier run, every fit by the plain Laplace approximation (code `0407a15`, the same 500 "
    "data sets), failed (smallest p 0.00047): the sd's posterior sat below the truth (mean "
    "rank 0.549) and the intercept's intervals were too narrow, Laplace's downward bias for "
    "binary data in small levels, which grows with the sd; against long NUTS runs (8,000 "
    "draws) of the first 10 simulated data sets, its group sd's mean was 0.25 +- 0.01 NUTS "
    "posterior sds low and its sd 8 % narrow (`python bench/laplace_vs_nuts.py bernoulli_wide` "
    "at that code). With the correction and AGHQ the run passes. 312 of the 500 fits warned, "
    "mostly the Laplace route's accuracy check (`info['laplace_check']`: separated levels, the "
    'sd\'s shift), on which `method="auto"` samples by NUTS instead.',
    "regression_poisson_laplace": "With 8 levels and the Intercept's Normal(0, 1) prior, "
    "AGHQ's bound is sd = sqrt(0.8 x 8) = 2.53, and the group sd's posterior reaches it (more "
    "than 1e-4 of its mass there) in 266 of the 500 fits, which get the Laplace approximation. "
    "This run's Laplace route carries the simplified-Laplace mean correction of binomial and "
    "Poisson effects (`poolwise.engines.skewness`), and tilts the sd's quadrature weights by "
    "its importance-sampling estimate of the Laplace marginal's error. The same 500 data sets "
    "run before these "
    "(code `521292d`) failed (smallest p 0.0002) through those 266 fits alone (the Intercept's "
    "mean rank 0.426 and the last level's 0.568, by engine not uniform at p 0.0005; AGHQ's 234 "
    "fits had the same ranks as here): without the correction a Poisson log rate's mode lies "
    "above its mean by about 1/(2 x count), and the intercept, the mean of the levels' log "
    "rates, adds these shifts up while its sd shrinks. Against long NUTS runs (8,000 draws) of "
    "the first 12 simulated data sets at that code (`python bench/laplace_vs_nuts.py poisson "
    "poisson_50`), the 5 that AGHQ fitted agree with NUTS (posterior means within 0.05 NUTS "
    "posterior sds: the Intercept +0.043 +- 0.012, the last level -0.026 +- 0.006; sds within "
    "2.4 %), the 7 it declined did not (the Intercept +0.41 +- 0.02 sd, the last level "
    "-0.29 +- 0.03); with an exposure of 50 in every cell AGHQ declined 5 of 6, and those 5 "
    "leaned +0.22 +- 0.01 sd. With the correction the declined fits' Intercept has mean rank "
    "0.540 (2.3 standard errors the other way, p 0.24 and 0.61): no failure at 500 simulations.",
    "regression_normal_laplace": "A normal outcome's effects are exactly Gaussian given theta: "
    "the engine is exact up to quadrature error.",
    "regression_normal_eb": "As the binomial eb run: the levels' intervals too narrow, and the "
    "sd at its boundary in 55 of 500 fits (ranks of exactly 99); the residual sigma, which 67 "
    "rows determine well, is nearly uniform.",
}


def is_laplace(record: dict) -> bool:
    """Whether a result belongs to this section (a regression not fitted by NUTS)."""
    return record["family"] in SIZES and record["method"] != "nuts"


def _family(record: dict) -> str:
    """The outcome family, and the group sd's prior where it is not the family's default."""
    family = _outcome(record["family"])
    sd = record["priors"]["1|group_sigma"]
    return family if sd == repr(PRIORS[family]["1|group_sigma"]) else f"{family}, sd ~ {sd}"


def _engines(record: dict) -> str:
    """The engines that made the run's fits, with their counts where more than one did."""
    engines = Counter(record["engines"]).most_common()
    if len(engines) == 1:
        return engines[0][0]
    return ", ".join(f"{name} {count}" for name, count in engines)


def _outcome(name: str) -> str:
    return "binomial" if name == "regression" else name.split("_")[1]


def _shape(ranks: list[int], L: int) -> str:
    """How ranks depart from uniform: their mean on 0..1 (and which way the posterior leans, where
    the mean is more than two standard errors from 1/2) and their share in the outer tenths."""
    r = np.asarray(ranks) / L
    ends = np.mean((r < 0.1) | (r > 0.9))
    z = (r.mean() - 0.5) / np.sqrt(1 / 12 / r.size)
    out = f"mean rank {r.mean():.3f}"
    if abs(z) > 2:
        side = "below" if z > 0 else "above"
        out += f", {abs(z):.1f} standard errors from 1/2: the posterior sits {side} the truth"
    out += f"; {ends:.0%} of ranks in the outer tenths against 20%"
    if abs(ends - 0.2) > 3 * np.sqrt(0.16 / r.size):
        out += ", intervals too " + ("narrow" if ends > 0.2 else "wide")
    return out


def _by_engine(record: dict, verdict) -> str:
    """The run's ranks split by the engine that made each fit. Which engine fits is decided by
    the data, and ranks stay uniform given any condition on the data where the posterior is
    exact, so each engine's share is a calibration of its own."""
    engines = np.asarray(record["engines"])
    L = record["draws"]
    parts = []
    for name, count in Counter(record["engines"]).most_common():
        if count < MIN_SPLIT:
            parts.append(f"{name}'s {count} fits (too few to test)")
            continue
        tests = []
        for parameter, ranks in record["ranks"].items():
            ranks = np.asarray(ranks)[engines == name]
            _, chi2_p, ecdf_p = uniformity(ranks, L, _choose_bins(count, L))
            tests.append({"parameter": parameter, "chi2_p": chi2_p, "ecdf_p": ecdf_p, "r": ranks})
        p, ok = verdict(tests)
        low = [
            f"{t['parameter']} mean rank {np.mean(t['r']) / L:.3f}"
            for t in tests
            if min(t["chi2_p"], t["ecdf_p"]) < 0.05
        ]
        text = f"{name}'s {count} fits {'uniform' if ok else '**not uniform**'} (smallest p {p:.2g}"
        parts.append(text + (f"; {', '.join(low)})" if low else ")"))
    return "By engine: " + "; ".join(parts) + "."


def table_row(first: list, record: dict, verdict, last: list) -> str:
    """A table row: ``first``, the verdict, the smallest p, every p-value, then ``last``."""
    p, ok = verdict(record["tests"])
    cells = "; ".join(
        f"{t['parameter']} {t['chi2_p']:.3f} / {t['ecdf_p']:.3f}" for t in record["tests"]
    )
    middle = ["yes" if ok else "**no**", f"{p:.2g}", cells]
    return "| " + " | ".join(str(c) for c in [*first, *middle, *last]) + " |"


def section(records: dict[str, dict], verdict) -> list[str]:
    """The section's lines: the table, the models, their priors."""
    rows = sorted(
        (r for r in records.values() if is_laplace(r)),
        key=lambda r: (list(SIZES).index(r["family"]), r["method"] == "eb"),
    )
    lines = [
        HEADING,
        "",
        "Regressions `1 + x + (1|group)` with a binomial, Bernoulli, Poisson (with exposure) and",
        'normal outcome, fitted by `method="laplace"` (by AGHQ or the Laplace approximation, below;',
        "L draws from the fit)",
        'and, for two of them, `method="eb"` (checked as the one-factor eb rows: the effects given',
        "the estimated variance parameters, the variance parameters from the asymptotic normal of",
        "their logs). Ranked: the common effects, the group sd (and the residual sd), and the",
        "zero-sum effects of the first and last level. The Bernoulli model runs again under a",
        f"wider prior on the group sd, HalfNormal({WIDE_SD}). `python bench/calibration.py run",
        "laplace` runs the jobs; the seconds are each run's wall time on a shared 2-core machine.",
        "",
        '`method="laplace"` fits one scalar factor of a binomial or Poisson model (the binomial,',
        "Bernoulli, reduced to binomial cells, and Poisson rows) by adaptive Gauss–Hermite quadrature",
        "of each level (`poolwise.glmm.aghq`, engine `aghq`), except where the group sd's posterior",
        "reaches sd^2 = 0.8 x levels x the intercept's prior variance (beyond it the zero-sum effects",
        "have no independent form): those fits it leaves to the Laplace approximation (engine",
        "`laplace`), as it does a normal outcome (exact there). The engines column counts the fits",
        'each engine made (`fit.info["engine"]`). The engine is chosen from the data, so a run checks',
        "what a user gets; and since ranks stay uniform given any condition on the data where the",
        "posterior is exact, its ranks split by engine (in the findings) check each engine alone.",
        "The code column is the commit each run measured: `45c9ee3` and `2db3f64`, the same source",
        "(main at `668f7a9`, with the Laplace route's simplified-Laplace mean correction, and each",
        "fit's engine recorded), and `d5c5a3c` for the Bernoulli model under",
        f"HalfNormal({WIDE_SD}) (later code: AGHQ's tables from its quadrature, and its early",
        "decline of a posterior far beyond the bound). The runs at `0407a15` were made before",
        'AGHQ, when `method="laplace"` fitted every model by the Laplace approximation; they stand',
        "where a row was not run again: normal and eb, which still take that route (the binomial",
        "eb fits carry the mean correction now, a normal outcome needs none). In the earlier",
        "runs the Laplace approximation failed for",
        "that Bernoulli model (its row) and for the Poisson model (smallest p 0.001: the Intercept's",
        "mean rank 0.437, the last level's 0.563): the failures AGHQ was to replace. AGHQ fits the",
        "Poisson model only where it takes it; the rest of the row's fits are the Laplace",
        "approximation's, with the simplified-Laplace mean correction at its code (its finding",
        "gives the run before that correction).",
        "",
        "| model | method | engines (fits) | code | levels | sims | L | uniform | smallest p | p-values (chi-square / ECDF) | fits that warned | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        first = [_family(r), r["method"], _engines(r), f"`{r['commit'][:7]}`"]
        first += [r["groups"], r["n_sims"], r["draws"]]
        lines.append(table_row(first, r, verdict, [r["warnings"], f"{r['seconds']:.0f}"]))
    lines += ["", "Models (the job's name, the formula and options, the levels):", ""]
    for family, text in DESCRIBE.items():
        f = _outcome(family)
        options = "".join(f', {k}="{v}"' for k, v in OPTIONS[f].items())
        lines.append(f"- {family}: `{FORMULAS[f]}`{options}; {text}.")
    lines += ["", "Priors (the same draw the truth and fit):", ""]
    seen = set()
    for r in rows:
        if _family(r) not in seen:
            seen.add(_family(r))
            priors = ", ".join(f"{k} ~ {v}" for k, v in r["priors"].items())
            lines.append(f"- {_family(r)}: {priors}")
    return lines + [""]


def findings(records: dict[str, dict], verdict) -> list[str]:
    """One finding per run: uniform or not, how the ranks of each parameter with an unadjusted
    p-value under 0.05 lean, and what explains it (:data:`EXPLAIN`)."""
    out = []
    runs = (r for r in records.values() if is_laplace(r))
    for r in sorted(runs, key=lambda r: (list(SIZES).index(r["family"]), r["method"] == "eb")):
        p, ok = verdict(r["tests"])
        by = f"; fitted by {_engines(r)}" if len(set(r["engines"])) > 1 else ""
        head = f"{MARK}, {_family(r)} ({r['method']}, {r['n_sims']} simulations{by}):"
        low = [t for t in r["tests"] if min(t["chi2_p"], t["ecdf_p"]) < 0.05]
        parts = [
            f"{t['parameter']} (p {min(t['chi2_p'], t['ecdf_p']):.2g}: "
            f"{_shape(r['ranks'][t['parameter']], r['draws'])})"
            for t in low
        ]
        text = f"{head} uniform (smallest p {p:.2g})" if ok else f"{head} **not uniform**"
        if parts:
            text += ("; but " if ok else " in ") + "; ".join(parts)
        split = _by_engine(r, verdict) + " " if by else ""
        out.append(text + ". " + split + EXPLAIN.get((r["name"]), ""))
    return [line.rstrip() for line in out]


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
