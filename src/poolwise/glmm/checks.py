"""Checks in plain language: identifiability before sampling, sampler diagnostics after it."""

from __future__ import annotations

import numpy as np

from .design import Design

# dense check only below this many entries (cells x coefficients)
MAX_DENSE = 20_000_000


def _zero_sum_basis(n: int) -> np.ndarray:
    """An orthonormal basis (n, n-1) of the vectors that sum to zero."""
    q, _ = np.linalg.qr(np.eye(n) - 1.0 / n)
    return q[:, : n - 1]


def identifiability(design: Design) -> tuple[list[str], str | None]:
    """Directions of the coefficients that no cell's prediction depends on, named by term.

    Returns the plain-language problems (one per set of terms that can trade level) and a note
    when the check was skipped. A direction among group terms alone (nested factors whose sds
    are learned) is a variance partition, not a problem, and is not reported.

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
    blocks, owners = [design.X], [design.names]
    bases = []
    for t in design.groups:
        size = design.n_cells * t.n_levels
        if design.n_cells * (design.X.shape[1] + t.n_levels) > MAX_DENSE or size > MAX_DENSE:
            return [], "identifiability check skipped: the design is too large for a dense check"
        Z = np.zeros((design.n_cells, t.n_levels))
        Z[np.arange(design.n_cells), t.codes] = t.values
        if t.zero_sum and t.n_levels > 1:
            B = _zero_sum_basis(t.n_levels)
            blocks.append(Z @ B)
            bases.append(B)
        else:
            blocks.append(Z)
            bases.append(None)
        owners.append([t.name] * (blocks[-1].shape[1]))
    A = np.hstack(blocks)
    if A.shape[1] == 0:
        return [], None
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    # every right singular vector is needed, the left ones only up to the rank: the full
    # decomposition of a tall design would build a (cells x cells) matrix
    _, s, vt = np.linalg.svd(A / scale, full_matrices=A.shape[0] < A.shape[1])
    tol = max(A.shape) * np.finfo(float).eps * (s[0] if len(s) else 1.0) * 1e3
    rank = int((s > tol).sum())
    null = vt[rank:]
    if not len(null):
        return [], None
    labels: list[str] = []
    for names in owners:
        labels.extend(names)
    common = set(design.names)
    involved: list[str] = []
    for j in range(A.shape[1]):
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
    for name, (draws, scale) in sd_terms.items():
        draws = np.asarray(draws).ravel()
        if np.quantile(draws, 0.5) < 0.1 * scale and np.mean(draws < 0.02 * scale) > 0.05:
            out.append(
                f"{name} sits at its lower boundary (posterior median {np.median(draws):.3g}, "
                f"prior scale {scale:g}): the levels barely differ beyond noise, as in lme4's "
                "singular fit; read the factor's effects as completely pooled, or drop the term"
            )
    return out
