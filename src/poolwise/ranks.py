"""Rankings from posterior draws: which group is best, and how sure can we be?

Raw rates rank small groups at the extremes by luck; ranking the posterior draws instead gives
each group a distribution over ranks, so its rank comes with an interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .fitdata import FitData

# rank draws in blocks of this many (draws x groups) elements, to bound memory
BLOCK_ELEMENTS = 1 << 23


def rank_draws(theta: np.ndarray, best: str = "high", seed: int = 0) -> np.ndarray:
    """Rank of every group in every draw (1 = best), shape (draws, groups), ties broken at random.

    Example
    -------
    >>> import numpy as np
    >>> rank_draws(np.array([[0.1, 0.5, 0.3], [0.2, 0.1, 0.0]])).tolist()
    [[3, 1, 2], [1, 2, 3]]
    """
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2:
        raise ValueError(f"theta: expected draws x groups (2-D), got shape {theta.shape}")
    if best not in ("high", "low"):
        raise ValueError(f"best must be 'high' or 'low', got {best!r}")
    key = -theta if best == "high" else theta
    rng = np.random.default_rng([seed, 7])
    d, j = key.shape
    out = np.empty((d, j), dtype=np.int32 if j < 2**31 else np.int64)
    step = max(1, BLOCK_ELEMENTS // max(j, 1))
    rows = np.arange(step)[:, None]
    for start in range(0, d, step):
        block = key[start : start + step]
        tie = rng.random(block.shape)
        order = np.lexsort((tie, block), axis=-1)
        ranks = np.empty_like(order)
        ranks[rows[: len(block)], order] = np.arange(1, j + 1)
        out[start : start + step] = ranks
    return out


def ranks(
    fit: FitData,
    top: int = 3,
    best: str = "high",
    prob: float | None = None,
) -> pd.DataFrame:
    """League table from the posterior draws: mean rank, a rank interval, P(best), P(top k).

    Rank 1 is the group with the highest theta (``best="low"`` for the lowest, e.g. mortality).
    ``rank_low``/``rank_high`` bound an equal-tailed interval of probability ``prob`` (the fit's
    ``hdi_prob`` by default). ``p_best`` is the probability of rank 1 (it sums to one over the
    groups) and ``p_top{k}`` that of a rank of at most ``top``. ``raw_rank`` ranks the raw
    estimates, for contrast. Rows are sorted by mean rank.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"student": ["Alyssa", "Ben", "Emi", "Farid"],
    ...                    "k": [70, 28, 2, 0], "n": [100, 40, 2, 1]})
    >>> fit = poolwise.fit(df, group="student", successes="k", trials="n",
    ...                    priors={"a": 6, "b": 4}, seed=0)
    >>> table = fit.ranks(top=2)
    >>> table.index[0], table["raw_rank"].tolist()
    ('Alyssa', [2, 3, 1, 4])
    >>> round(float(table["p_best"].sum()), 6)
    1.0
    """
    j = fit.n_groups
    if isinstance(top, bool) or not isinstance(top, int | np.integer):
        raise TypeError(f"top must be an integer, got {type(top).__name__}")
    if not 1 <= top <= j:
        raise ValueError(f"top must lie between 1 and the number of groups ({j}), got {top}")
    if prob is None:
        prob = fit.hdi_prob
    if not (isinstance(prob, float | int) and 0 < prob < 1):
        raise ValueError(f"prob must lie strictly between 0 and 1, got {prob!r}")
    r = rank_draws(fit.theta_draws(), best=best, seed=fit.seed)
    d = r.shape[0]
    tail = (1 - prob) / 2
    lo, hi = np.quantile(r, [tail, 1 - tail], axis=0, method="inverted_cdf")
    raw = fit.groups["raw"].to_numpy(dtype=float)
    key = -raw if best == "high" else raw
    raw_rank = np.empty(j, dtype=np.int64)
    raw_rank[np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")] = np.arange(1, j + 1)
    table = pd.DataFrame(
        {
            "raw": raw,
            "mean": fit.groups["mean"].to_numpy(),
            "raw_rank": raw_rank,
            "rank_mean": r.mean(axis=0),
            "rank_low": lo.astype(np.int64),
            "rank_high": hi.astype(np.int64),
            "p_best": np.bincount(np.argmin(r, axis=1), minlength=j) / d,
            f"p_top{top}": (r <= top).mean(axis=0),
        },
        index=fit.groups.index,
    )
    return table.sort_values(["rank_mean", "raw_rank"], kind="stable")
