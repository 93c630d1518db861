"""The posterior predictive of a regression: data replicated from the fitted model (its cells, or
new rows, new levels drawn from the group sds), the linear predictor of new rows, and the
posterior predictive check of the cells.

Everything here reads the draws of a :class:`~poolwise.fitdata.RegressionData` (one array per
parameter, (chains, draws, ...)), whichever engine made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..simulate import PredictiveCheck, _compare, _draw_index, _replicates
from .design import new_codes, slope_values
from .formula import environment

if TYPE_CHECKING:
    from ..fitdata import RegressionData

UNSEEN = ("raise", "population", "draw")
# the columns a replicate adds to the data's: the replicate's number and each row's true mean
ADDED = ("draw", "theta")


def inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """The mean outcome at linear predictors ``eta``: a probability (logit), a rate (log) or
    the mean itself (identity).

    Example
    -------
    >>> inverse_link("logit", np.array([0.0])).tolist(), inverse_link("log", np.zeros(1)).tolist()
    ([0.5], [1.0])
    """
    if link == "logit":
        return 1.0 / (1.0 + np.exp(-eta))
    if link == "log":
        return np.exp(eta)
    return eta


def n_draws(fit: RegressionData) -> int:
    """How many posterior draws the fit holds (all chains together)."""
    first = next(iter(fit.draws.values()))
    return int(first.shape[0] * first.shape[1])


def _likelihood(fit: RegressionData) -> str:
    return "binomial" if fit.family.name == "bernoulli" else fit.family.name


def draw_outcome(
    likelihood: str,
    eta: np.ndarray,
    size: np.ndarray,
    rng: np.random.Generator,
    sigma: np.ndarray | None = None,
) -> np.ndarray:
    """Outcomes at the linear predictors ``eta`` (offset included): successes out of ``size``
    trials (binomial), counts (poisson: the exposure is in the offset) or the mean of ``size``
    normal rows with residual sd ``sigma``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> draw_outcome("binomial", np.zeros((2, 3)), np.array([0, 5, 10]), rng).shape
    (2, 3)
    """
    if likelihood == "binomial":
        return rng.binomial(size.astype(np.int64), 1.0 / (1.0 + np.exp(-eta)))
    if likelihood == "poisson":
        return rng.poisson(np.exp(eta))
    return eta + sigma / np.sqrt(size) * rng.standard_normal(eta.shape)


def linear_predictor_of(
    fit: RegressionData,
    frame: pd.DataFrame,
    unseen: str,
    rng: np.random.Generator,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """The linear predictor of each row of ``frame`` (no offset) at the posterior draws ``index``
    (None: all), shape (draws, rows). A level not in the fit is refused (``unseen="raise"``),
    gets no deviation (``"population"``) or an effect drawn from N(0, sd) per draw (``"draw"``,
    from ``rng``; a correlated block's coefficients of a new level are drawn together, see
    :func:`_new_block_levels`)."""
    if unseen not in UNSEEN:
        raise ValueError(f"unseen must be one of {', '.join(map(repr, UNSEEN))}, got {unseen!r}")
    design, plan = fit.design, fit.plan
    index = np.arange(n_draws(fit)) if index is None else index
    frame = frame.copy()
    common = design.matrices.common
    eta = np.zeros((len(index), len(frame)))
    if common is not None and design.names:
        known = environment().namespace  # functions and encodings, such as np and Sum
        for col in common.terms:
            for var in getattr(common.terms[col], "var_names", ()):
                if var and var not in frame and var not in known:  # "" stands for a literal
                    if getattr(common.terms[col], "kind", None) == "offset":
                        frame[var] = 1.0
                    else:
                        raise ValueError(f"no column {var!r} in the new data")
        X_all = np.asarray(common.evaluate_new_data(frame).design_matrix, dtype=float)
        cols = []
        for term_name, term in common.terms.items():
            if getattr(term, "kind", None) == "offset":
                continue
            cols.append(X_all[:, common.slices[term_name]])
        X = np.hstack(cols)
        for i, name in enumerate(design.names):
            eta += fit.draws[name].reshape(-1)[index, None] * X[:, i]
    joint = _new_block_levels(fit, frame, rng, index) if unseen == "draw" else {}
    for t in design.groups:
        for c in t.factor_columns:
            if c not in frame:
                raise ValueError(f"no column {c!r} in the new data (term {t.name!r})")
        value = slope_values(t, frame)
        codes = new_codes(t, frame)
        b = fit.draws[t.name].reshape(-1, t.n_levels)[index]
        effect = b[:, np.maximum(codes, 0)]
        missing = codes < 0
        if missing.any():
            labels = sorted(
                set(
                    np.asarray(frame[list(t.factor_columns)].astype(str).agg(":".join, axis=1))[
                        missing
                    ]
                )
            )
            if unseen == "raise":
                raise ValueError(
                    f"level(s) {', '.join(map(repr, labels[:5]))} of {t.factor!r} were not in "
                    "the fit; pass unseen='population' (the population mean) or unseen='draw' "
                    "(a new group's effect drawn from the group sd)"
                )
            if unseen == "population":
                effect[:, missing] = 0.0
            elif t.name in joint:
                effect[:, missing] = joint[t.name][:, missing]
            else:
                sd = (
                    fit.draws[t.sigma_name].reshape(-1)[index]
                    if t.sigma_name in fit.draws
                    else np.full(len(index), float(plan.terms[design.groups.index(t)].sd))
                )
                effect[:, missing] = sd[:, None] * rng.standard_normal(
                    (len(index), int(missing.sum()))
                )
        eta += effect * value
    return eta


def _new_rows(fit: RegressionData, data: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows of ``data`` (less any outcome column), each one's offset and size (the trials
    of a binomial row, else 1)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"simulate: data must be a pandas DataFrame, got {type(data).__name__}")
    response, name = fit.design.response, fit.family.name
    size, offset = np.ones(len(data)), np.zeros(len(data))
    role = {"binomial": "trials", "poisson": "exposure"}.get(name)
    if role in response:
        column = response[role]
        if column not in data:
            raise ValueError(
                f"simulate: no column {column!r} ({role}) in the new data; the outcome is drawn "
                f"at each row's {role}"
            )
        values = data[column].to_numpy(np.float64)
        if role == "exposure":
            bad, expected = ~(np.isfinite(values) & (values > 0)), "positive numbers"
        else:
            bad = ~(np.isfinite(values) & (values >= 0) & (values == np.round(values)))
            expected = "whole numbers >= 0"
        if bad.any():
            raise ValueError(
                f"simulate: column {column!r} ({role}) must hold {expected}, "
                f"got {values[np.argmax(bad)]:g}"
            )
        if role == "exposure":
            offset = np.log(values)
        else:
            size = values
    outcome = [response[r] for r in ("successes", "counts", "y") if response.get(r) in data]
    return data.drop(columns=outcome), offset, size


def _fit_rows(fit: RegressionData) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The fit's data as rows to replicate: each one's cell, offset and size. Binomial cells and
    poisson cells of an exposure column stay as they are (their sizes summed); other data are one
    row per row of the data (a cell of n rows repeated n times)."""
    keys, name, response = fit.design.keys, fit.family.name, fit.design.response
    s = fit.observed
    cells = np.arange(len(keys))
    if name == "binomial":
        frame = keys.assign(**{response["trials"]: s["trials"].astype(np.int64)})
        return frame, cells, np.zeros(len(keys)), s["trials"]
    if "exposure" in response:
        frame = keys.assign(**{response["exposure"]: s["exposure"]})
        return frame, cells, np.log(s["exposure"]), np.ones(len(keys))
    rows = s["n"] if name == "normal" else s["trials" if name == "bernoulli" else "exposure"]
    cell = np.repeat(cells, rows.astype(np.int64))
    frame = keys.iloc[cell].reset_index(drop=True)
    return frame, cell, np.zeros(len(cell)), np.ones(len(cell))


def replicate_regression(
    fit: RegressionData,
    draws: int = 1,
    seed: int | None = None,
    *,
    data: pd.DataFrame | None = None,
    unseen: str | None = None,
) -> pd.DataFrame:
    """Data sets replicated from a fitted regression, laid out as :func:`poolwise.fit` read them.

    Each replicate takes one posterior draw of the common effects, the group effects and sigma,
    and draws the outcome at every row's size: successes out of the trials (binomial cells),
    0/1 rows (bernoulli), counts over the exposure (poisson), normal rows around the row's mean
    with the residual sd. The columns are ``draw`` (the replicate's number), the columns the
    formula reads, the outcome under the formula's names, and ``theta``, the row's true mean
    outcome (probability, rate per unit of exposure, mean). Without ``data`` the fit's own data
    are replicated (cells of binomial trials and of exposures as they were summed; other data
    one row per row, so the replicate refits with the same formula); with ``data``, its rows
    (holding the trials or the exposure the formula names), whose new levels follow ``unseen``
    as in :meth:`poolwise.glmm.results.GlmmFit.predict` (default ``"raise"``).

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7], "n": 10})
    >>> fit = poolwise.fit("p(k, n) ~ x + (1|g)", data=df, priors={"1|g_sigma": 0.5}, seed=1,
    ...                    draws=2000, progress=False)
    >>> rep = fit.simulate(draws=2, seed=0)
    >>> list(rep.columns), len(rep)
    (['draw', 'g', 'x', 'k', 'n', 'theta'], 12)
    >>> new = fit.simulate(data=pd.DataFrame({"g": ["z"], "x": [1], "n": [50]}), unseen="draw")
    >>> new[["g", "n"]].values.tolist()
    [['z', 50]]
    """
    if data is None and unseen is not None:
        raise TypeError("simulate: unseen applies to new rows (data=); leave it out")
    rng = np.random.default_rng([fit.seed if seed is None else seed, 5])
    index = _draw_index(n_draws(fit), draws, rng)
    if data is None:
        frame, cell, offset, size = _fit_rows(fit)
        eta = (fit.linear_predictor(index) - fit.design.offset)[:, cell]
    else:
        frame, offset, size = _new_rows(fit, data)
        eta = linear_predictor_of(fit, frame, unseen or "raise", rng, index)
    clash = [c for c in ADDED if c in frame]
    if clash:
        raise ValueError(
            f"simulate: the data hold a column {clash[0]!r}, the name of a column the replicates "
            "add; rename it"
        )
    likelihood = _likelihood(fit)
    sigma = fit.draws["sigma"].reshape(-1)[index, None] if likelihood == "normal" else None
    outcome = draw_outcome(likelihood, eta + offset, size, rng, sigma)
    out = pd.concat([frame] * len(index), ignore_index=True)
    out.insert(0, "draw", np.repeat(np.arange(len(index)), len(frame)))
    response = fit.design.response
    size_column = response.get("trials", response.get("exposure"))
    position = list(out.columns).index(size_column) if size_column in out else len(out.columns)
    name = response.get("successes", response.get("counts", response.get("y")))
    values = outcome.reshape(-1)
    out.insert(position, name, values if likelihood == "normal" else values.astype(np.int64))
    out["theta"] = inverse_link(fit.family.link, eta).reshape(-1)
    return out


def check_cells(
    fit: RegressionData,
    statistic: str = "sd",
    draws: int = 1000,
    seed: int | None = None,
) -> PredictiveCheck:
    """Posterior predictive check of a regression on its cells: ``statistic`` (as in
    :func:`poolwise.simulate.check`) of the cells' raw estimates (successes/trials,
    counts/exposure or the cell's mean), observed and in data replicated at each posterior draw
    (the cells' sizes kept).

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "c": [3, 9, 2, 7, 4, 12]})
    >>> fit = poolwise.fit("c ~ x + (1|g)", data=df, family="poisson", method="laplace", seed=1)
    >>> ppc = fit.check(draws=200, seed=0)
    >>> ppc.description, ppc.replicated.shape
    ('sd of the raw cell estimates', (200,))
    """
    rng, index = _replicates(fit, statistic, draws, seed, n_draws(fit))
    eta = fit.linear_predictor(index)
    s = fit.observed
    likelihood = _likelihood(fit)
    sigma = fit.draws["sigma"].reshape(-1)[index, None] if likelihood == "normal" else None
    size = {"binomial": "trials", "poisson": "exposure", "normal": "n"}[likelihood]
    replicated = draw_outcome(likelihood, eta, s[size], rng, sigma)
    if likelihood == "normal":
        return _compare(statistic, s["mean"], replicated, "cell")
    value = "successes" if likelihood == "binomial" else "counts"
    return _compare(statistic, s[value] / s[size], replicated / s[size], "cell")


def _new_block_levels(
    fit: RegressionData, frame: pd.DataFrame, rng: np.random.Generator, index: np.ndarray
) -> dict[str, np.ndarray]:
    """For each term of a correlated block: the effects of the rows' levels not in the fit,
    (draws, rows), drawn per new level from the block's covariance at each posterior draw of
    ``index`` (its sds and correlations), so that a new level's intercept and slope are drawn
    together; rows of fitted levels get 0 (not used)."""
    from .blocks import correlation_matrices, new_level_effects

    out = {}
    groups = {t.name: t for t in fit.design.groups}
    for block in fit.plan.blocks:
        terms = [fit.plan.terms[i] for i in block.terms]
        first = groups[terms[0].name]
        if any(c not in frame for c in first.factor_columns):
            continue  # the caller names the missing column
        codes = new_codes(first, frame)
        if not (codes < 0).any():
            continue
        labels = frame[list(first.factor_columns)].astype(str).agg(":".join, axis=1)
        new, inverse = np.unique(np.asarray(labels)[codes < 0], return_inverse=True)
        R = correlation_matrices(fit.draws, block)[index]
        sds = np.column_stack(
            [
                fit.draws[f"{t.name}_sigma"].reshape(-1)[index]
                if t.sd is None
                else np.full(len(index), float(t.sd))
                for t in terms
            ]
        )
        effects = new_level_effects(sds, R, len(new), rng)
        for col, t in enumerate(terms):
            column = np.zeros((len(index), len(frame)))
            column[:, codes < 0] = effects[:, inverse.reshape(-1), col]
            out[t.name] = column
    return out
