"""compare(): no, complete and partial pooling side by side, scored by leave-one-group-out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._lazy import logsumexp
from .api import family_for
from .data import reduce
from .families import family_of
from .model import POOLINGS, PoolModel
from .onefactor import check_options, run_engine, summarize
from .results import PoolFit


@dataclass(frozen=True)
class Comparison:
    """Fits of several poolings of the same data.

    ``estimates``: per group, its size, raw estimate and each pooling's posterior mean.
    ``scores``: per pooling, the leave-one-group-out expected log predictive density
    (``elpd_logo``, higher is better), its standard error, and the difference to the best.
    """

    fits: dict[str, PoolFit]
    estimates: pd.DataFrame
    scores: pd.DataFrame

    def __repr__(self) -> str:
        with pd.option_context("display.width", 120):
            return (
                "Comparison of poolings (elpd_logo: leave-one-group-out log predictive density)\n"
                f"{self.scores.round(3).to_string()}\n\nEstimates\n"
                f"{self.estimates.round(4).to_string(max_rows=20)}"
            )

    def plot_estimates(
        self, ax: Any = None, poolings: tuple[str, ...] = ("none", "partial")
    ) -> Any:
        """Estimates and HDIs against group size, one panel per pooling (see :mod:`poolwise.plots`)."""
        from .plots import plot_estimates

        return plot_estimates(self, ax=ax, poolings=poolings)


def logo_elpd(model: PoolModel, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log p(data_j | data of the other groups) for each group j.

    With the hyperparameter posterior on grid points, leaving group j out reweights it by
    1 / p(data_j | eta); the predictive density is then 1 / E[1 / p(data_j | eta) | all data].

    Example
    -------
    >>> import numpy as np
    >>> from poolwise.families import NormalKnownSE
    >>> from poolwise.model import build_model
    >>> stats = {"y": np.array([0.0, 1.0]), "se": np.array([1.0, 1.0])}
    >>> model = build_model(NormalKnownSE(), stats, "partial", {"mu": 0.0, "tau": 1.0})
    >>> logo_elpd(model, np.zeros((1, 0)), np.ones(1)).round(3).tolist()
    [-1.266, -1.516]
    """
    ll = model.group_log_likelihood(points)
    return -logsumexp(-ll + np.log(weights)[:, None], axis=0)


def compare(
    data: Any,
    *,
    group: str,
    poolings: tuple[str, ...] = ("none", "complete", "partial"),
    method: str = "auto",
    priors: dict | None = None,
    draws: int = 4000,
    hdi_prob: float = 0.94,
    seed: int | None = None,
    **roles: str,
) -> Comparison:
    """Fit each pooling and put their estimates and predictive scores side by side.

    The columns are named by their roles, as in :func:`poolwise.fit` (``successes="k"``, ...);
    a role no registered family reads is a TypeError naming it.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> cmp = poolwise.compare(df, group="experiment", successes="y", trials="n", seed=0)
    >>> cmp.scores.index[0]
    'partial'
    """
    if not poolings or any(p not in POOLINGS for p in poolings):
        raise ValueError(
            f"poolings must be a non-empty tuple of {', '.join(POOLINGS)}; got {poolings!r}"
        )
    check_options(method, draws, hdi_prob, seed)
    family_name, columns = family_for(**roles)
    stats = reduce(data, group, family_name, columns)
    family = family_of(family_name)
    fits, elpd = {}, {}
    for pooling in poolings:
        run = run_engine(family, stats.stats, pooling, method, priors)
        fits[pooling] = PoolFit.of(summarize(run, stats, draws=draws, hdi_prob=hdi_prob, seed=seed))
        elpd[pooling] = logo_elpd(run.model, run.posterior.points, run.posterior.weights)
    first = fits[poolings[0]].groups
    estimates = first[["n", "raw"]].copy()
    for pooling, f in fits.items():
        estimates[f"mean_{pooling}"] = f.groups["mean"]
    best = max(elpd, key=lambda p: elpd[p].sum())
    j = len(first)
    rows = {}
    for pooling, values in elpd.items():
        diff = elpd[best] - values
        rows[pooling] = {
            "elpd_logo": float(values.sum()),
            "se": float(np.sqrt(j * np.var(values))),
            "elpd_diff": float(diff.sum()),
            "diff_se": float(np.sqrt(j * np.var(diff))),
            "method": fits[pooling].method,
        }
    scores = pd.DataFrame.from_dict(rows, orient="index").sort_values("elpd_logo", ascending=False)
    scores.index.name = "pooling"
    return Comparison(fits=fits, estimates=estimates, scores=scores)
