"""Data sets from ``1 + x + (1|group)`` regressions, with their true parameters, for calibration.

One model per outcome family, each fitted by the formula in :data:`FORMULAS` (with the family
and exposure options in :data:`OPTIONS`) and drawn from the priors in :data:`PRIORS`. The group
effects are a ZeroSumNormal(sigma) draw, as the fitted model has them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .priors import HalfNormal, Normal, Prior

FORMULAS = {
    "binomial": "p(successes, trials) ~ 1 + x + (1|group)",
    "bernoulli": "y ~ 1 + x + (1|group)",
    "poisson": "counts ~ 1 + x + (1|group)",
    "normal": "y ~ 1 + x + (1|group)",
}
# the options of poolwise.fit each formula needs besides the data
OPTIONS: dict[str, dict[str, str]] = {
    "binomial": {},
    "bernoulli": {"family": "bernoulli"},
    "poisson": {"exposure": "exposure"},
    "normal": {},
}
_COMMON: dict[str, Prior] = {
    "Intercept": Normal(0.0, 1.0),
    "x": Normal(0.0, 1.0),
    "1|group_sigma": HalfNormal(1.0),
}
PRIORS: dict[str, dict[str, Prior]] = {
    "binomial": dict(_COMMON),
    "bernoulli": dict(_COMMON),
    "poisson": dict(_COMMON),
    "normal": {**_COMMON, "sigma": HalfNormal(1.0)},
}
# what a group's size counts: the trials (binomial) or exposure (poisson) of each of its two
# cells x = 0 and x = 1, or its rows (bernoulli, normal; x alternates 0, 1, 0, ...)
SIZES = {"binomial": "trials", "bernoulli": "rows", "poisson": "exposure", "normal": "rows"}


def simulate_regression(
    group_sizes: tuple[float, ...],
    priors: Mapping[str, Prior],
    seed: int,
    family: str = "binomial",
) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
    """Data from ``link(E y) = Intercept + x * x + b[group]``, b zero-sum normal with sd sigma.

    ``family`` is one of :data:`FORMULAS`; ``group_sizes`` as in :data:`SIZES`. ``priors`` draw
    the truth (:data:`PRIORS` has a proper set for each family). Returns the data, the true
    common parameters (and sigma, the residual sd, for ``normal``) and the true group effects.

    Example
    -------
    >>> df, truth, b = simulate_regression((20, 20, 20), PRIORS["binomial"], seed=1)
    >>> len(df), abs(float(b.sum())) < 1e-12
    (6, True)
    >>> df, truth, b = simulate_regression((2, 5), PRIORS["bernoulli"], 1, family="bernoulli")
    >>> len(df), sorted(set(df["y"]) - {0, 1})
    (7, [])
    """
    if family not in FORMULAS:
        raise ValueError(f"family must be one of {', '.join(map(repr, FORMULAS))}, got {family!r}")
    rng = np.random.default_rng(seed)
    names = ["Intercept", "x", "1|group_sigma"] + ["sigma"] * (family == "normal")
    truth = {n: float(priors[n].sample(rng, 1)[0]) for n in names}
    j = len(group_sizes)
    z = truth["1|group_sigma"] * rng.standard_normal(j)
    b = z - z.mean()  # ZeroSumNormal(sigma): an isotropic normal projected onto sum zero
    if SIZES[family] == "rows":
        rows = np.asarray(group_sizes, dtype=np.int64)
        group = np.repeat(np.arange(j), rows)
        x = np.concatenate([np.arange(n) % 2 for n in rows]).astype(float)
    else:
        group = np.repeat(np.arange(j), 2)
        x = np.tile([0.0, 1.0], j)
    eta = truth["Intercept"] + truth["x"] * x + b[group]
    columns: dict[str, np.ndarray] = {"x": x}
    if family == "binomial":
        columns["trials"] = np.repeat(np.asarray(group_sizes, dtype=np.int64), 2)
        columns["successes"] = rng.binomial(columns["trials"], 1.0 / (1.0 + np.exp(-eta)))
    elif family == "bernoulli":
        columns["y"] = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    elif family == "poisson":
        columns["exposure"] = np.repeat(np.asarray(group_sizes, dtype=float), 2)
        columns["counts"] = rng.poisson(columns["exposure"] * np.exp(eta))
    else:
        columns["y"] = eta + truth["sigma"] * rng.standard_normal(eta.size)
    df = pd.DataFrame({"group": [f"g{g:03d}" for g in group], **columns})
    return df, truth, b
