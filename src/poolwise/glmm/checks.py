"""Checks in plain language: identifiability before sampling, sampler diagnostics after it."""

from __future__ import annotations

import functools
import operator
from dataclasses import replace

import numpy as np
import pandas as pd

from ..intervals import hdi_from_draws, hdi_names
from .design import Design

# the check decomposes a (coefficients x coefficients) matrix: only up to this many
MAX_COEFFICIENTS = 4000


@functools.lru_cache(maxsize=32)
def _zero_sum_basis(n: int) -> np.ndarray:
    """An orthonormal basis (n, n-1) of the vectors that sum to zero (read-only: it is cached,
    one QR per size)."""
    q, _ = np.linalg.qr(np.eye(n) - 1.0 / n)
    basis = np.ascontiguousarray(q[:, : n - 1])
    basis.flags.writeable = False
    return basis


def _cross(X: np.ndarray, t, u) -> np.ndarray:
    """Z_t'Z_u for group terms t and u (Z the level indicators times the term's values), X'Z_u
    when t is None, X'X when both are: weighted counts of the codes; for t and u the same term,
    the diagonal of Z_t'Z_t alone (1-D)."""
    if t is None and u is None:
        return X.T @ X
    if t is None:  # every column's counts in one bincount, column by column
        p, L = X.shape[1], u.n_levels
        flat = (np.arange(p)[:, None] * L + u.codes).reshape(-1)
        return np.bincount(flat, (X.T * u.values).reshape(-1), p * L).reshape(p, L)
    if t is u:
        return np.bincount(t.codes, t.values**2, t.n_levels)
    pair = t.codes.astype(np.int64) * u.n_levels + u.codes
    flat = np.bincount(pair, t.values * u.values, t.n_levels * u.n_levels)
    return flat.reshape(t.n_levels, u.n_levels)


def _gram(design: Design) -> np.ndarray:
    """A'A for the cells' design A = [X, Z_1 B_1, ...], B_t a zero-sum basis where the term's
    effects sum to zero (else the identity), built from the integer codes: Z_t never is."""
    terms = [None, *design.groups]
    bases = [None] + [
        _zero_sum_basis(t.n_levels) if t.sums_to_zero else None for t in design.groups
    ]
    blocks: list[list] = [[None] * len(terms) for _ in terms]
    for i, (t, bt) in enumerate(zip(terms, bases, strict=True)):
        for j in range(i, len(terms)):
            block = _cross(design.X, t, terms[j])
            if block.ndim == 1:  # a term with itself, diag(c): B'diag(c)B as one product
                block = np.diag(block) if bt is None else (bt.T * block) @ bt
            else:
                if bt is not None:
                    block = bt.T @ block
                if bases[j] is not None:
                    block = block @ bases[j]
            blocks[i][j], blocks[j][i] = block, block.T
    return np.block(blocks)


def _with_data(design: Design) -> Design:
    """The design without the levels of a term that no cell informs (a slope's level whose
    cells all have the covariate at 0): their effects are drawn from the group's distribution,
    not fitted, and would only make the zero-sum constraint look like a trade with the common
    effects."""
    groups = []
    for t in design.groups:
        present = np.bincount(t.codes, t.values**2, t.n_levels) > 0
        if present.all():
            groups.append(t)
            continue
        if not present.any():
            continue
        # the cells of an absent level have the covariate at 0: any code, they add nothing
        index = np.maximum(np.cumsum(present) - 1, 0)
        levels = [lv for lv, p in zip(t.levels, present, strict=True) if p]
        groups.append(replace(t, levels=levels, codes=index[t.codes].astype(np.int32)))
    if len(groups) == len(design.groups) and all(map(operator.is_, groups, design.groups)):
        return design
    return replace(design, groups=groups)


def _null_tol(eigenvalues: np.ndarray, size: int) -> float:
    """The largest eigenvalue of the scaled cross-product that counts as a null direction."""
    return size * np.finfo(float).eps * max(eigenvalues[-1], 1.0) * 1e3


def identifiability(design: Design) -> tuple[list[str], str | None]:
    """Directions of the coefficients that no cell's prediction depends on, named by term.

    Returns the plain-language problems (one per set of terms that can trade level) and a note
    when the check was skipped. A direction among group terms alone (nested factors whose sds
    are learned) is a variance partition, not a problem, and is not reported. The directions are
    the null space of the design's (column-scaled) cross-product matrix, which is built from the
    group codes without dense indicator columns.

    Example
    -------
    >>> import pandas as pd
    >>> from poolwise.glmm.formula import parse_formula
    >>> from poolwise.glmm.cells import reduce_cells
    >>> from poolwise.glmm.design import build_design
    >>> df = pd.DataFrame({"k": [1, 2, 3, 4], "n": 9, "g": list("abab"), "h": list("ccdd")})
    >>> spec = parse_formula("p(k, n) ~ 1 + (1|g) + (1|h)")
    >>> d = build_design(reduce_cells(df, spec), spec)
    >>> identifiability(d)
    ([], None)
    """
    design = _with_data(design)
    owners = [design.names]
    for t in design.groups:
        owners.append([t.name] * (t.n_levels - t.sums_to_zero))
    size = sum(map(len, owners))
    if size == 0:
        return [], None
    if size > MAX_COEFFICIENTS:
        return [], (
            f"identifiability check skipped: {size} coefficients (the check handles up to "
            f"{MAX_COEFFICIENTS})"
        )
    gram = _gram(design)
    scale = np.sqrt(np.maximum(np.diag(gram), 0.0))
    scale[scale == 0] = 1.0
    scaled = gram / np.outer(scale, scale)
    # the cross-product resolves eigenvalues down to about eps times the largest (singular
    # values of the design down to sqrt(eps)); below that a direction is not in the data. Its
    # unit diagonal bounds the largest by ``size``: where ``scaled`` less twice the tolerance
    # at that bound is positive definite (a Cholesky factor, ~10 times cheaper than the
    # eigenvalues), no direction is null. Else the eigenvalues, and the vectors (several times
    # dearer) only where a direction is null
    try:
        np.linalg.cholesky(scaled - 2 * _null_tol(np.array([size]), size) * np.eye(size))
        return [], None
    except np.linalg.LinAlgError:
        pass
    values = np.linalg.eigvalsh(scaled)
    if not np.any(values <= _null_tol(values, size)):
        return [], None
    eigenvalues, vectors = np.linalg.eigh(scaled)
    null = vectors[:, eigenvalues <= _null_tol(eigenvalues, size)].T
    if not len(null):
        return [], None
    labels: list[str] = []
    for names in owners:
        labels.extend(names)
    common = set(design.names)
    involved: list[str] = []
    for j in range(size):
        if np.abs(null[:, j]).max() > 1e-6:
            term = labels[j]
            if term not in involved:
                involved.append(term)
    if not any(t in common for t in involved):
        return [], None
    k = len(null)
    what = f"{k} direction{'s' if k > 1 else ''}"
    return [
        f"identifiability: the data cannot tell apart {', '.join(involved)} ({what} of the "
        "coefficients change no prediction): shifting one by a constant and the others by the "
        "opposite amount fits every cell equally well, so the priors alone decide the split and "
        "effects 'leak' between these terms. Fit the default parametrization (group effects as "
        "zero-sum deviations from the intercept), or drop the intercept or a redundant column"
    ], None


def diagnose(
    summary, divergences: int, n_draws: int, sd_terms: dict[str, tuple[np.ndarray, float]]
) -> list[str]:
    """Plain-language problems of a NUTS run, each with what to do about it."""
    out = []
    if divergences:
        out.append(
            f"{divergences} of {n_draws} draws ended in a divergence: the sampler met a region "
            "it could not follow (often a funnel between a group sd and its effects), so the "
            "draws may be biased; refit with target_accept=0.95, or switch the parametrization "
            "(parametrization='centered' when each level has much data, 'non-centered' when "
            "levels have little)"
        )
    rhat = summary["r_hat"]
    bad = rhat[rhat > 1.01]
    if len(bad):
        worst = ", ".join(f"{k} ({v:.3f})" for k, v in bad.sort_values().tail(3).items())
        out.append(
            f"r_hat > 1.01 for {len(bad)} parameter(s), worst {worst}: the chains disagree, so "
            "they have not all found the posterior; run longer (tune=, draws=) and check the "
            "identifiability warnings"
        )
    ess = summary[["ess_bulk", "ess_tail"]].min(axis=1)
    low = ess[ess < 400]
    if len(low):
        worst = ", ".join(f"{k} ({v:.0f})" for k, v in low.sort_values().head(3).items())
        out.append(
            f"low effective sample size (< 400) for {len(low)} parameter(s), lowest {worst}: "
            "means and intervals of these are noisy; draw more (draws=) or reparametrize"
        )
    return out + boundary_notes(sd_terms)


def boundary_notes(sd_terms: dict[str, tuple[np.ndarray, float]]) -> list[str]:
    """A note for each group sd (name: draws, prior scale) whose posterior sits at zero.

    Example
    -------
    >>> boundary_notes({"s": (np.ones(4), 1.0)})
    []
    """
    out = []
    for name, (draws, scale) in sd_terms.items():
        draws = np.asarray(draws).ravel()
        if is_singular(draws, scale):
            out.append(
                f"{name} sits at its lower boundary (posterior median {np.median(draws):.3g}, "
                f"prior scale {scale:g}): the levels barely differ beyond noise, as in lme4's "
                "singular fit; read the factor's effects as completely pooled, or drop the term"
            )
    return out


def is_singular(draws: np.ndarray, scale: float) -> bool:
    """Whether a group sd's posterior sits at zero (lme4's singular fit): its median below a tenth
    of the prior's scale, and more than 5 % of its draws below a fiftieth.

    Example
    -------
    >>> is_singular(np.array([0.0, 0.01, 0.02, 0.5]), 1.0), is_singular(np.ones(4), 1.0)
    (True, False)
    """
    draws = np.asarray(draws).ravel()
    return bool(np.quantile(draws, 0.5) < 0.1 * scale and np.mean(draws < 0.02 * scale) > 0.05)


def stats_table(
    draws: dict[str, np.ndarray], coords: dict[str, list[str]], prob: float, mcmc: bool = True
):
    """mean, sd, HDI, ess_bulk, ess_tail, r_hat per scalar parameter; draws are (chain, draw, ...).
    Independent draws (``mcmc`` False) leave the sampler's columns NaN.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> table = stats_table({"x": rng.normal(size=(4, 500))}, {}, 0.9)
    >>> bool(table.loc["x", "r_hat"] < 1.01), list(table.columns[2:4])
    (True, ['hdi_5%', 'hdi_95%'])
    """
    from arviz_stats.base import array_stats

    blocks, index = [], []
    for name, x in draws.items():
        x = np.asarray(x, dtype=float).reshape(x.shape[0], x.shape[1], -1)
        flat = x.reshape(-1, x.shape[2])
        lo, hi = hdi_from_draws(flat, prob)
        ess_b = ess_t = rhat = np.full(x.shape[2], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            # every scalar of a site at once: (chain, draw, k) -> (k,)
            if mcmc:
                ess_b = array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk")
                ess_t = array_stats.ess(
                    x, chain_axis=0, draw_axis=1, method="tail", prob=(0.05, 0.95)
                )
                rhat = array_stats.rhat(x, chain_axis=0, draw_axis=1)
        columns = (flat.mean(axis=0), flat.std(axis=0), lo, hi, ess_b, ess_t, rhat)
        blocks.append(np.column_stack([np.asarray(c, dtype=float).reshape(-1) for c in columns]))
        labels = coords.get(name)
        index += [name] * x.shape[2] if labels is None else [f"{name}[{lb}]" for lb in labels]
    rows = np.concatenate(blocks) if blocks else np.zeros((0, 7))
    lo_name, hi_name = hdi_names(prob)
    return pd.DataFrame(
        rows,
        index=pd.Index(index, name="parameter"),
        columns=["mean", "sd", lo_name, hi_name, "ess_bulk", "ess_tail", "r_hat"],
    )
