"""What every route of a formula fit shares: the cells, design and priors of a model, its plan,
and the table of its levels.

:func:`prepare` reads the data once (formula → cells → design → priors → plan, with the
identifiability check); the NUTS route (:mod:`poolwise.glmm.sampling`) and the deterministic
route (:mod:`poolwise.glmm.laplace`) fit the :class:`Prepared` model and summarise its levels
with :func:`groups_table`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from ..errors import PoolwiseWarning
from ..priors import Flat, HalfNormal, Normal, Prior
from .blocks import block_plans, block_priors, unify_centering
from .cells import Cells, reduce_cells
from .checks import identifiability
from .design import Design, build_design
from .formula import FormulaSpec, parse_formula
from .model import (
    LINKS,
    GlmmFamily,
    ModelPlan,
    Scales,
    TermPlan,
    data_scales,
    default_common_prior,
    default_sd_prior,
    prior_scale,
)

PARAMETRIZATIONS = ("auto", "non-centered", "centered", "as-written")
# a group factor is sampled centered when every level's likelihood is at least this many
# times as informative as the prior scale of its effects (precision x scale^2)
CENTERED_RATIO = 10.0
DESCRIPTIONS = {
    "binomial": "binomial successes out of trials, logit link",
    "bernoulli": "bernoulli 0/1 rows (as binomial cells), logit link",
    "poisson": "poisson counts with exposure, log link",
    "normal": "normal outcome, identity link",
}


def _weighted_sd(x: np.ndarray, w: np.ndarray) -> float:
    m = float((w * x).sum() / w.sum())
    return float(np.sqrt((w * (x - m) ** 2).sum() / w.sum()))


def _level_information(cells: Cells, design: Design, scales: Scales, t) -> np.ndarray:
    """Fisher information of each level's effect at the pooled estimate (likelihood only)."""
    s = cells.stats()
    if cells.likelihood == "binomial":
        p = 1.0 / (1.0 + np.exp(-scales.loc))
        w = s["trials"] * p * (1 - p)
    elif cells.likelihood == "poisson":
        w = s["exposure"] * np.exp(scales.loc)
    else:
        w = s["n"] / scales.sd_y**2
    return np.bincount(t.codes, weights=w * t.values**2, minlength=t.n_levels)


def resolve_priors(
    priors: dict | None, design: Design, cells: Cells, scales: Scales, parametrization: str
) -> tuple[tuple[Prior, ...], list[tuple[float | None, Prior | None]], Prior | None, dict]:
    if priors is None:
        priors = {}
    if not isinstance(priors, dict):
        raise TypeError(
            f"priors must be a dict from term name to prior, got {type(priors).__name__}"
        )
    weights = cells.table["__rows"].to_numpy(np.float64)
    valid = set(design.names) | set(design.terms)
    for t in design.groups:
        valid |= {t.name, t.sigma_name}
    valid |= {b.corr_name for b in design.blocks}
    if cells.likelihood == "normal":
        valid.add("sigma")
    for name, value in priors.items():
        if name not in valid:
            raise ValueError(
                f"priors: no term {name!r} in this model; valid names are "
                f"{', '.join(sorted(valid))}"
            )
        if not isinstance(value, Prior) and not (
            isinstance(value, Real) and not isinstance(value, bool)
        ):
            raise TypeError(
                f"priors[{name!r}] must be a poolwise prior (e.g. poolwise.Normal(0, 1)) or, for "
                f"a group sd, a number; got {type(value).__name__}"
            )
    used: dict[str, Any] = {}
    common = []
    for term_name, labels in design.terms.items():
        for label in labels:
            j = design.names.index(label)
            prior = priors.get(label, priors.get(term_name))
            if prior is None:
                prior = default_common_prior(label, scales, _weighted_sd(design.X[:, j], weights))
            elif not isinstance(prior, Prior):
                raise TypeError(f"priors[{label!r}]: a common effect needs a prior, not a number")
            common.append(prior)
            used[label] = prior
    sds: list[tuple[float | None, Prior | None]] = []
    for t in design.groups:
        effect, sd_prior = priors.get(t.name), priors.get(t.sigma_name)
        if effect is not None and sd_prior is not None:
            raise ValueError(
                f"priors: give either {t.name!r} (a Normal(0, sd) with a fixed sd) or "
                f"{t.sigma_name!r} (a prior on the sd), not both"
            )
        if effect is not None:
            if not isinstance(effect, Normal) or effect.mu != 0:
                raise ValueError(
                    f"priors[{t.name!r}]: group effects are Normal(0, sd) deviations; give "
                    f"Normal(0, sd) to fix the sd, or a prior on {t.sigma_name!r}, got {effect!r}"
                )
            sds.append((float(effect.sigma), None))
            used[t.name] = effect
        elif isinstance(sd_prior, Prior):
            lo, _ = sd_prior.support
            if lo < 0 and not isinstance(sd_prior, Flat):
                raise ValueError(
                    f"priors[{t.sigma_name!r}]: {sd_prior!r} allows negative sds; use a prior "
                    "on (0, inf) such as HalfNormal"
                )
            sds.append((None, sd_prior))
            used[t.sigma_name] = sd_prior
        elif sd_prior is not None:
            if not float(sd_prior) > 0:
                raise ValueError(
                    f"priors[{t.sigma_name!r}]: a fixed sd must be > 0, got {sd_prior!r}"
                )
            sds.append((float(sd_prior), None))
            used[t.sigma_name] = float(sd_prior)
        else:
            sd_x = 1.0 if t.expr == "1" else _weighted_sd(t.values, weights)
            prior = default_sd_prior(scales, sd_x)
            sds.append((None, prior))
            used[t.sigma_name] = prior
    used.update(block_priors(priors, design))
    sigma = None
    if cells.likelihood == "normal":
        sigma = priors.get("sigma")
        if sigma is None:
            sigma = HalfNormal(round(2.5 * scales.sd_y, 6))
        used["sigma"] = sigma
    return tuple(common), sds, sigma, used


def plan_model(
    cells: Cells,
    design: Design,
    scales: Scales,
    common: tuple[Prior, ...],
    sds: list,
    sigma: Prior | None,
    parametrization: str,
    lkj: dict,
) -> tuple[ModelPlan, list[str]]:
    notes = []
    for t, (sd, sd_prior) in zip(design.groups, sds, strict=True):
        if parametrization == "as-written":
            t.zero_sum = False
        if parametrization == "centered":
            t.centered = True
        elif parametrization == "non-centered":
            t.centered = False
        else:
            info = _level_information(cells, design, scales, t)
            scale = sd if sd is not None else prior_scale(sd_prior)
            t.centered = bool(info.min() * scale**2 >= CENTERED_RATIO)
            if t.centered:
                notes.append(
                    f"{t.name}: centered, every level's data outweigh the prior "
                    f"(information x scale^2 >= {CENTERED_RATIO:g}, min {info.min() * scale**2:.3g})"
                )
            else:
                notes.append(f"{t.name}: non-centered, some levels have little data")
    notes += unify_centering(design)
    terms = [
        TermPlan(
            name=t.name,
            n_levels=t.n_levels,
            zero_sum=t.sums_to_zero,
            centered=t.centered,
            slope=t.expr != "1",
            sd=sd,
            sd_prior=sd_prior,
        )
        for t, (sd, sd_prior) in zip(design.groups, sds, strict=True)
    ]
    intercept = design.names.index("Intercept") if design.intercept else None
    plan = ModelPlan(
        likelihood=cells.likelihood,
        common=tuple(design.names),
        common_priors=common,
        intercept=intercept,
        terms=tuple(terms),
        sigma_prior=sigma,
        blocks=block_plans(design, lkj),
    )
    return plan, notes


@dataclass
class Prepared:
    """A formula's model on its data: cells, design, priors (``used``: as the fit records them),
    the plan, the centering notes and the identifiability messages (already warned)."""

    formula: str
    spec: FormulaSpec
    cells: Cells
    design: Design
    scales: Scales
    used: dict
    plan: ModelPlan
    notes: list[str]
    messages: list[str]
    skipped: str | None
    parametrization: str

    def family(self, keep: list[str]) -> GlmmFamily:
        """The fit's family record; ``keep`` the population rows (the sds among them positive)."""
        fam = self.spec.family
        correlations = {row for block in self.plan.blocks for row in block.rows}
        sds = tuple(k for k in keep if k not in self.design.names and k not in correlations)
        return GlmmFamily(fam, LINKS[self.cells.likelihood], DESCRIPTIONS[fam], sds=sds)


def prepare(
    formula: str,
    data: Any,
    *,
    family: str | None = None,
    exposure: str | None = None,
    priors: dict | None = None,
    parametrization: str = "auto",
    spec: FormulaSpec | None = None,
) -> Prepared:
    """Read ``data`` for ``formula``: cells, design, priors and plan (warns of what the data
    cannot identify).

    Example
    -------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": list("aabbcc"), "y": [1.0, 2.1, 1.2, 2.0, 0.9, 2.2]})
    >>> prep = prepare("y ~ 1 + (1|g)", df)
    >>> prep.plan.terms[0].n_levels, prep.design.names
    (3, ['Intercept'])
    """
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {', '.join(map(repr, PARAMETRIZATIONS))}, "
            f"got {parametrization!r}"
        )
    spec = spec or parse_formula(formula, family, exposure)
    cells = reduce_cells(data, spec)
    design = build_design(cells, spec)
    for t in design.groups:
        if t.n_levels < 2:
            raise ValueError(
                f"formula: {t.name!r}: the factor {t.factor!r} has a single level "
                f"({t.levels[0]!r}) in the data; pooling needs at least two levels, so drop "
                "the term"
            )
    scales = data_scales(cells.likelihood, cells.stats())
    common, sds, sigma, used = resolve_priors(priors, design, cells, scales, parametrization)
    plan, notes = plan_model(cells, design, scales, common, sds, sigma, parametrization, used)
    problems, skipped = identifiability(design)
    for m in problems:
        warnings.warn(m, PoolwiseWarning, stacklevel=4)
    return Prepared(
        formula,
        spec,
        cells,
        design,
        scales,
        used,
        plan,
        notes,
        list(problems),
        skipped,
        parametrization,
    )


def groups_table(
    cells: Cells,
    design: Design,
    plan: ModelPlan,
    means: dict[str, Any],
    summaries: dict[str, tuple[np.ndarray, ...]],
    sds: dict[str, tuple[np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """Per (term, level): size, raw (the level's data-only estimate), pooled mean/sd/HDI, shrinkage.

    ``means`` holds the posterior means of the common effects, of each term's effects and of
    ``sigma2`` (a normal outcome's residual variance); ``summaries`` each term's (mean, sd, HDI
    low, HDI high) per level; ``sds`` each term's sd values and their weights (draws, or
    quadrature points). ``raw`` is one Newton step of the likelihood alone from the pooled
    effect, the other parameters at their posterior means; ``shrinkage`` is prior precision /
    (prior + data precision) averaged over the sd values (DESIGN.md's B_j for this model).
    """
    s = cells.stats()
    eta = design.offset.copy()
    for i, name in enumerate(design.names):
        eta = eta + design.X[:, i] * float(means[name])
    for t in design.groups:
        eta = eta + np.asarray(means[t.name])[t.codes] * t.values
    if cells.likelihood == "binomial":
        p = 1.0 / (1.0 + np.exp(-eta))
        score, w, size = s["successes"] - s["trials"] * p, s["trials"] * p * (1 - p), s["trials"]
    elif cells.likelihood == "poisson":
        mu = np.exp(eta)
        score, w, size = s["counts"] - mu, mu, s["exposure"]
    else:
        s2 = float(means["sigma2"])
        score, w, size = s["n"] * (s["mean"] - eta) / s2, s["n"] / s2, s["n"]
    frames = []
    for t in design.groups:
        L = t.n_levels
        sc = np.bincount(t.codes, weights=score * t.values, minlength=L)
        info = np.bincount(t.codes, weights=w * t.values**2, minlength=L)
        n = np.bincount(t.codes, weights=size, minlength=L)
        mean, sd, lo, hi = summaries[t.name]
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.where(info > 0, mean + sc / info, np.nan)
        values, weights = sds[t.name]
        shrink = weights @ (1.0 / (1.0 + info[None, :] * values[:, None] ** 2))
        if cells.likelihood != "poisson":
            n = np.round(n).astype(np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "n": n,
                    "raw": raw,
                    "mean": mean,
                    "sd": sd,
                    "hdi_low": lo,
                    "hdi_high": hi,
                    "shrinkage": shrink,
                },
                index=_level_index(t.name, t.levels),
            )
        )
    if not frames:
        return pd.DataFrame(
            columns=["n", "raw", "mean", "sd", "hdi_low", "hdi_high", "shrinkage"],
            index=pd.MultiIndex.from_arrays([[], []], names=["term", "level"]),
        )
    return frames[0] if len(frames) == 1 else pd.concat(frames)


def _level_index(term: str, levels: list[str]) -> pd.MultiIndex:
    """(term, level) for every level, in order: ``MultiIndex.from_arrays``'s index (its levels
    sorted), built from the codes directly rather than by hashing the labels.

    Example
    -------
    >>> _level_index("1|g", ["b", "a"]).equals(pd.MultiIndex.from_arrays([["1|g"] * 2, ["b", "a"]]))
    True
    """
    order = np.argsort(np.array(levels, dtype=str), kind="stable")
    codes = np.empty(len(levels), dtype=np.intp)
    codes[order] = np.arange(len(levels))
    return pd.MultiIndex(
        levels=[[term], [levels[i] for i in order]],
        codes=[np.zeros(len(levels), dtype=np.intp), codes],
        names=["term", "level"],
        verify_integrity=False,
    )
