"""Correlated group effects: the blocks ``(1 + x|g)`` of a regression, as lme4 and brms fit them.

A block's effects of level j are one vector b_j = (b_j1, ..., b_jk), one entry per coefficient
(the intercept, the slopes), drawn from N(0, S) with S = D R D: D the diagonal of the
coefficients' sds (each with its own prior, ``"x|g_sigma"``), R their correlation matrix with an
LKJ(eta) prior (``"1 + x|g_corr"``, default LKJ(1): uniform over correlation matrices, brms'
default). NUTS samples R's Cholesky factor L (numpyro's LKJCholesky) and the effects
non-centered, standard normal z_j and b_j = D L z_j, or, where every level's data outweigh the
prior for each coefficient (the rule of an independent term), centered: b_j ~ N(0, D L L' D).
A coefficient whose common part holds the same term has zero-sum effects (as an independent
term does): its column is centred over the levels, which is the marginal of iid N(0, S)
vectors minus their mean (sampled in a basis where that costs no extra direction; see
:func:`sample_block`).

The block's correlations are reported by name: ``"1 + x|g_corr"`` for two coefficients, and
``"1 + x + z|g_corr[1, x]"`` for each pair of a larger block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..priors import LKJ, Prior
from .design import Block, Design

# the LKJ prior's eta where none is given: brms' lkj(1), uniform over correlation matrices
DEFAULT_ETA = 1.0


@dataclass(frozen=True)
class BlockPlan:
    """How one correlated block enters the model (static: part of the compiled model's
    identity). ``terms`` index the block's group terms in :attr:`ModelPlan.terms`; ``rows``
    name its correlations (one per pair of coefficients)."""

    name: str
    terms: tuple[int, ...]
    n_levels: int
    zero_sum: tuple[bool, ...]
    centered: bool
    prior: LKJ
    pairs: tuple[tuple[int, int], ...]
    rows: tuple[str, ...]

    @property
    def size(self) -> int:
        """The unconstrained parameters of the block's effects and correlations."""
        k, n = len(self.terms), self.n_levels
        effects = k * (n - 1) + (k - sum(self.zero_sum)) if any(self.zero_sum) else k * n
        return effects + k * (k - 1) // 2


def correlation_rows(block: Block) -> tuple[str, ...]:
    """The names of a block's correlations in tables and draws.

    >>> correlation_rows(Block("1 + x|g", ("1|g", "x|g")))
    ('1 + x|g_corr',)
    >>> correlation_rows(Block("1 + x + z|g", ("1|g", "x|g", "z|g")))[:2]
    ('1 + x + z|g_corr[1, x]', '1 + x + z|g_corr[1, z]')
    """
    if len(block.terms) == 2:
        return (block.corr_name,)
    return tuple(f"{block.corr_name}[{label}]" for label in block.pair_labels)


def block_priors(priors: dict[str, Any], design: Design) -> dict[str, LKJ]:
    """Each block's LKJ prior, by its correlations' name: ``priors[name]`` (an LKJ) or
    LKJ(:data:`DEFAULT_ETA`), its dimension set to the block's."""
    out = {}
    for block in design.blocks:
        prior = priors.get(block.corr_name, LKJ(DEFAULT_ETA))
        if not isinstance(prior, LKJ):
            kind = type(prior).__name__ if isinstance(prior, Prior) else repr(prior)
            raise TypeError(
                f"priors[{block.corr_name!r}]: the correlations of a block take an LKJ prior "
                f"(e.g. poolwise.LKJ(2)), got {kind}"
            )
        out[block.corr_name] = LKJ(prior.eta, len(block.terms))
    return out


def unify_centering(design: Design) -> list[str]:
    """One parametrization per block (its effects are sampled together): centered only where
    every coefficient's would be; returns the notes that say which."""
    groups = {t.name: t for t in design.groups}
    notes = []
    for block in design.blocks:
        terms = [groups[name] for name in block.terms]
        centered = all(t.centered for t in terms)
        for t in terms:
            t.centered = centered
        notes.append(
            f"{block.name}: {'centered' if centered else 'non-centered'} as a block (centered "
            "only where each of its coefficients is)"
        )
    return notes


def block_plans(design: Design, lkj: dict[str, LKJ]) -> tuple[BlockPlan, ...]:
    """The static plans of the design's blocks (after the terms' zero-sum flags are set)."""
    index = {t.name: i for i, t in enumerate(design.groups)}
    plans = []
    for block in design.blocks:
        terms = [design.groups[index[name]] for name in block.terms]
        plans.append(
            BlockPlan(
                name=block.name,
                terms=tuple(index[name] for name in block.terms),
                n_levels=terms[0].n_levels,
                zero_sum=tuple(t.sums_to_zero for t in terms),
                centered=terms[0].centered,
                prior=lkj[block.corr_name],
                pairs=tuple(block.pairs),
                rows=correlation_rows(block),
            )
        )
    return tuple(plans)


def sample_block(plan: BlockPlan, sds: Any) -> Any:
    """Inside a numpyro model: the block's effects, (levels, coefficients), for the sds ``sds``
    (one per coefficient); records its correlations as deterministic sites.

    The levels' iid N(0, S) vectors c_j, with the zero-sum columns centred, are written in an
    orthonormal basis of the levels whose first n - 1 vectors span the sums to zero (numpyro's
    ZeroSumTransform) and whose last is the constant: the n - 1 rotated vectors are again iid
    N(0, S), and of the constant's component only the coefficients that do not sum to zero are
    kept (their marginal N(0, S) block), so no direction of the sampler is without data or
    prior."""
    import jax.numpy as jnp
    import numpyro
    from numpyro.distributions.transforms import ZeroSumTransform

    n = plan.n_levels
    L = numpyro.sample(f"_{plan.name}_cholesky", plan.prior.cholesky_numpyro())
    R = L @ L.T
    for row, (i, j) in zip(plan.rows, plan.pairs, strict=True):
        numpyro.deterministic(row, R[i, j])
    A = sds[:, None] * L  # S = A A'
    zero_sum = np.asarray(plan.zero_sum, dtype=bool)
    m = n - 1 if zero_sum.any() else n
    w = _mvn(f"_{plan.name}", A, m, plan.centered)  # (k, m)
    if not zero_sum.any():
        return w.T
    b = ZeroSumTransform(1)(w)  # (k, n), each row sums to zero
    free = np.flatnonzero(~zero_sum)
    if free.size:
        C = jnp.linalg.cholesky((A @ A.T)[np.ix_(free, free)])
        u = _mvn(f"_{plan.name}_mean", C, 1, plan.centered)[:, 0]
        b = b.at[free].add(u[:, None] / np.sqrt(n))
    return b.T


def _mvn(site: str, A: Any, m: int, centered: bool) -> Any:
    """``m`` iid N(0, A A') vectors as columns (k, m): sampled so (centered) or as A z."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    k = A.shape[0]
    if centered:
        mvn = dist.MultivariateNormal(jnp.zeros(k), scale_tril=A).expand([m]).to_event(1)
        return numpyro.sample(f"{site}_effects", mvn).T
    z = numpyro.sample(f"{site}_offset", dist.Normal(0.0, 1.0).expand([k, m]).to_event(2))
    return A @ z


def correlation_matrices(draws: dict[str, np.ndarray], plan: BlockPlan) -> np.ndarray:
    """Each posterior draw's correlation matrix of the block, (draws, k, k)."""
    k = len(plan.terms)
    first = np.asarray(draws[plan.rows[0]]).reshape(-1)
    R = np.tile(np.eye(k), (first.size, 1, 1))
    for row, (i, j) in zip(plan.rows, plan.pairs, strict=True):
        R[:, i, j] = R[:, j, i] = np.asarray(draws[row]).reshape(-1)
    return R


def new_level_effects(
    sds: np.ndarray, R: np.ndarray, n_new: int, rng: np.random.Generator
) -> np.ndarray:
    """Effects of ``n_new`` levels not in the fit, drawn together per posterior draw from
    N(0, D R D): ``sds`` (draws, k), ``R`` (draws, k, k); returns (draws, n_new, k).

    >>> rng = np.random.default_rng(0)
    >>> R = np.tile([[1.0, -0.8], [-0.8, 1.0]], (20000, 1, 1))
    >>> b = new_level_effects(np.tile([1.0, 2.0], (20000, 1)), R, 1, rng)[:, 0]
    >>> np.round(np.corrcoef(b.T)[0, 1], 1), np.round(b.std(axis=0), 1).tolist()
    (np.float64(-0.8), [1.0, 2.0])
    """
    chol = np.linalg.cholesky(R) * sds[:, :, None]
    z = rng.standard_normal((R.shape[0], n_new, R.shape[1]))
    return np.einsum("dij,dnj->dni", chol, z)
