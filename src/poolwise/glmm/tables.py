"""The tables of a regression's fit from its posterior draws: the population (common effects,
group sds, sigma) and every group term's levels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cells import Cells
from .design import Design
from .model import ModelPlan


def population_table(table: pd.DataFrame, draws: dict[str, np.ndarray]) -> pd.DataFrame:
    """mean, sd, median, HDI of each parameter in ``draws`` (scalars), from the rows of
    :func:`poolwise.glmm.checks.stats_table`'s ``table``.

    Example
    -------
    >>> from poolwise.glmm.checks import stats_table
    >>> draws = {"x": np.arange(8.0).reshape(2, 4)}
    >>> population_table(stats_table(draws, {}, 0.5), draws).loc["x", "median"]
    3.5
    """
    keep = list(draws)
    pop = table.loc[keep].iloc[:, :4].copy()
    pop.columns = ["mean", "sd", "hdi_low", "hdi_high"]
    pop.insert(2, "median", [float(np.median(draws[k])) for k in keep])
    pop.index.name = "parameter"
    return pop


def groups_table(cells: Cells, design: Design, plan: ModelPlan, draws: dict, prob: float):
    """Per (term, level): size, raw (the level's data-only estimate), pooled mean/sd/HDI, shrinkage.

    ``raw`` is one Newton step of the likelihood alone from the pooled effect, the other
    parameters at their posterior means; ``shrinkage`` is prior precision / (prior + data
    precision) averaged over the sd draws (DESIGN.md's B_j for this model).
    """
    from ..intervals import hdi_from_draws

    s = cells.stats()
    eta = design.offset.copy()
    for i, name in enumerate(design.names):
        eta = eta + design.X[:, i] * float(draws[name].mean())
    for t in design.groups:
        eta = eta + draws[t.name].reshape(-1, t.n_levels).mean(axis=0)[t.codes] * t.values
    if cells.likelihood == "binomial":
        p = 1.0 / (1.0 + np.exp(-eta))
        score, w, size = s["successes"] - s["trials"] * p, s["trials"] * p * (1 - p), s["trials"]
    elif cells.likelihood == "poisson":
        mu = np.exp(eta)
        score, w, size = s["counts"] - mu, mu, s["exposure"]
    else:
        s2 = float(np.mean(draws["sigma"] ** 2))
        score, w, size = s["n"] * (s["mean"] - eta) / s2, s["n"] / s2, s["n"]
    frames = []
    for t, tp in zip(design.groups, plan.terms, strict=True):
        b = draws[t.name].reshape(-1, t.n_levels)
        L = t.n_levels
        sc = np.bincount(t.codes, weights=score * t.values, minlength=L)
        info = np.bincount(t.codes, weights=w * t.values**2, minlength=L)
        n = np.bincount(t.codes, weights=size, minlength=L)
        mean = b.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.where(info > 0, mean + sc / info, np.nan)
        sd = draws[t.sigma_name].reshape(-1) if t.sigma_name in draws else np.array([tp.sd])
        shrink = (1.0 / (1.0 + info[None, :] * sd[:, None] ** 2)).mean(axis=0)
        lo, hi = hdi_from_draws(b, prob)
        frames.append(
            pd.DataFrame(
                {
                    "n": n,
                    "raw": raw,
                    "mean": mean,
                    "sd": b.std(axis=0),
                    "hdi_low": lo,
                    "hdi_high": hi,
                    "shrinkage": shrink,
                },
                index=pd.MultiIndex.from_arrays([[t.name] * L, t.levels], names=["term", "level"]),
            )
        )
    if not frames:
        return pd.DataFrame(
            columns=["n", "raw", "mean", "sd", "hdi_low", "hdi_high", "shrinkage"],
            index=pd.MultiIndex.from_arrays([[], []], names=["term", "level"]),
        )
    out = pd.concat(frames)
    if cells.likelihood != "poisson":
        out["n"] = out["n"].round().astype(np.int64)
    return out
