"""The numpyro model of a regression on cells, and its default priors.

eta_c = X_c beta + sum_t b_t[code_t(c)] * value_t(c) + offset_c for every cell c; the likelihood is
the family's, written on the cell statistics (so it costs O(cells), not O(rows)):

- binomial: sum_c k_c eta_c - n_c log(1 + e^eta_c)   (logit link; constants dropped)
- poisson:  sum_c y_c (eta_c + log E_c) - E_c e^eta_c (log link)
- normal:   sum_c -n_c log sigma - (M2_c + n_c (ybar_c - eta_c)^2) / (2 sigma^2)

Group effects are zero-sum deviations (``ZeroSumNormal``) when the common part holds the same term,
so they cannot trade level with the intercept or the common slope. Non-centered effects are
``b = sd * z``; centered ones are sampled directly. The terms of a correlated block
``(1 + x|g)`` are sampled together (:mod:`poolwise.glmm.blocks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..priors import Flat, HalfNormal, Normal, Prior
from .blocks import BlockPlan, sample_block

LINKS = {"binomial": "logit", "poisson": "log", "normal": "identity"}


@dataclass(frozen=True)
class GlmmFamily:
    """The likelihood and link of a regression (the role of a one-factor family in PoolFit)."""

    name: str
    link: str
    description: str
    # the sampled sds (group sds, sigma): the parameters that are positive
    sds: tuple[str, ...] = ()

    @property
    def size_label(self) -> str:
        """What a level's size counts."""
        return SIZE_LABELS[self.name]

    @property
    def supports(self) -> dict[str, tuple[float, float]]:
        """Supports of the parameters that are not the whole line: the sds'."""
        return dict.fromkeys(self.sds, (0.0, math.inf))


SIZE_LABELS = {"binomial": "trials", "bernoulli": "rows", "poisson": "exposure", "normal": "rows"}


@dataclass(frozen=True)
class LevelEffects:
    """The family of one grouping factor's effects in a regression (a per-factor view): its
    levels' effects on the link scale, deviations around 0 (``location`` None), sized by data."""

    name: str
    description: str
    size_label: str
    raw_label: str = "raw level effect"
    location: None = None

    def size(self, observed: dict) -> np.ndarray:
        """Each level's size (trials, exposure or rows)."""
        return np.asarray(observed["n"], dtype=float)


@dataclass(frozen=True)
class TermPlan:
    """How one group term enters the model (all static: part of the compiled model's identity)."""

    name: str
    n_levels: int
    zero_sum: bool
    centered: bool
    slope: bool
    sd: float | None
    sd_prior: Prior | None


@dataclass(frozen=True)
class ModelPlan:
    """Everything static about a model: family, common effects and their priors, group terms.

    ``blocks`` are the correlated blocks among the terms (``(1 + x|g)``; see
    :mod:`poolwise.glmm.blocks`), empty when every group term is independent; ``correlated``
    says whether there is any, for an engine that handles independent terms only.
    """

    likelihood: str
    common: tuple[str, ...]
    common_priors: tuple[Prior, ...]
    intercept: int | None
    terms: tuple[TermPlan, ...]
    sigma_prior: Prior | None
    blocks: tuple[BlockPlan, ...] = ()

    @property
    def correlated(self) -> bool:
        """Whether some group terms form a correlated block."""
        return bool(self.blocks)

    @property
    def size(self) -> int:
        """The number of unconstrained parameters the sampler moves."""
        n = len(self.common) + (self.likelihood == "normal")
        in_block = {i for b in self.blocks for i in b.terms}
        for i, t in enumerate(self.terms):
            n += (t.sd is None) + (0 if i in in_block else t.n_levels - t.zero_sum)
        return n + sum(b.size for b in self.blocks)


def _numpyro_prior(prior: Prior):
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    if isinstance(prior, Flat):
        return dist.ImproperUniform(constraints.real, (), ())
    return prior.to_numpyro()


def make_model(plan: ModelPlan):
    """A numpyro model function for ``plan``; its arguments are the arrays of the cells.

    Keyword arguments of the model: ``X`` (cells, p), ``xbar`` (p,), ``offset``, ``stats`` (a tuple
    of per-cell arrays), ``codes`` and ``values`` (tuples, one array per group term), ``center``
    (the location and scale of the outcome on the link scale, around which the intercept is
    sampled). Everything that depends on the data is an argument, so that one compiled program
    serves every data set of the same shape.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def _sd(t: TermPlan):
        if t.sd is not None:
            return t.sd
        return numpyro.sample(f"{t.name}_sigma", _numpyro_prior(t.sd_prior))

    def model(X, xbar, offset, stats, codes, values, center):
        eta = offset
        betas = []
        for i, (name, prior) in enumerate(zip(plan.common, plan.common_priors, strict=True)):
            if i == plan.intercept:
                betas.append(None)
                continue
            betas.append(numpyro.sample(name, _numpyro_prior(prior)))
        slope = sum(
            (b * (X[:, i] - xbar[i]) for i, b in enumerate(betas) if b is not None),
            jnp.zeros_like(offset),
        )
        if plan.intercept is not None:
            # sample the intercept at the weighted mean of the predictors (a better-shaped
            # posterior), then put the user's prior on the intercept itself (Jacobian 1)
            u = numpyro.sample(
                "_Intercept_centered", dist.ImproperUniform(dist.constraints.real, (), ())
            )
            centered = center[0] + center[1] * u
            shift = sum((b * xbar[i] for i, b in enumerate(betas) if b is not None), jnp.zeros(()))
            intercept = numpyro.deterministic("Intercept", centered - shift)
            prior = plan.common_priors[plan.intercept]
            if not isinstance(prior, Flat):
                numpyro.factor("_Intercept_prior", prior.to_numpyro().log_prob(intercept))
            eta = eta + centered
        eta = eta + slope
        blocked = {}
        for block in plan.blocks:
            sds = jnp.stack([_sd(plan.terms[i]) for i in block.terms])
            b = sample_block(block, sds)
            for col, i in enumerate(block.terms):
                blocked[i] = numpyro.deterministic(plan.terms[i].name, b[:, col])
        for i, (t, code, value) in enumerate(zip(plan.terms, codes, values, strict=True)):
            if i in blocked:
                eta = eta + blocked[i][code] * value
                continue
            sd = _sd(t)
            if t.zero_sum:
                base = dist.ZeroSumNormal(1.0 if not t.centered else sd, (t.n_levels,))
            else:
                base = dist.Normal(0.0, 1.0 if not t.centered else sd).expand([t.n_levels])
                base = base.to_event(1)
            if t.centered:
                b = numpyro.sample(t.name, base)
            else:
                z = numpyro.sample(f"{t.name}_offset", base)
                b = numpyro.deterministic(t.name, sd * z)
            eta = eta + (b[code] * value if t.slope else b[code])
        if plan.likelihood == "binomial":
            ll = jnp.sum(_binomial_loglik()(eta, *stats))
        elif plan.likelihood == "poisson":
            c, _ = stats
            ll = jnp.sum(c * eta - jnp.exp(eta))
        else:
            n, ybar, m2 = stats
            sigma = numpyro.sample("sigma", _numpyro_prior(plan.sigma_prior))
            ll = jnp.sum(-n * jnp.log(sigma) - (m2 + n * (ybar - eta) ** 2) / (2 * sigma**2))
        numpyro.factor("_loglik", ll)

    return model


@cache
def _binomial_loglik():
    """``k * eta - n * softplus(eta)`` per cell, whose derivative ``k - n * sigmoid(eta)`` reuses
    the value's exponential: one ``exp`` and one ``log1p`` per cell for both (automatic
    differentiation takes a second ``exp``; the cost of a cell-heavy gradient is these
    transcendental functions, so this is 40 % of it)."""
    import jax
    import jax.numpy as jnp
    from jax.custom_derivatives import SymbolicZero

    def parts(eta):
        e = jnp.exp(-jnp.abs(eta))
        return e, jnp.maximum(eta, 0.0) + jnp.log1p(e)

    @jax.custom_jvp
    def loglik(eta, k, n):
        return k * eta - n * parts(eta)[1]

    def jvp(primals, tangents):
        (eta, k, n), (d_eta, d_k, d_n) = primals, tangents
        e, softplus = parts(eta)
        out = k * eta - n * softplus
        d_out = jnp.zeros_like(out)
        if not isinstance(d_eta, SymbolicZero):
            d_out = d_out + (k - n * jnp.where(eta >= 0, 1.0, e) / (1.0 + e)) * d_eta
        if not isinstance(d_k, SymbolicZero):
            d_out = d_out + eta * d_k
        if not isinstance(d_n, SymbolicZero):
            d_out = d_out - softplus * d_n
        return out, d_out

    loglik.defjvp(jvp, symbolic_zeros=True)
    return loglik


@dataclass(frozen=True)
class Scales:
    """Data scales for default priors: the response's location and scale on the link scale."""

    loc: float
    scale: float
    sd_y: float


def data_scales(likelihood: str, stats: dict[str, np.ndarray]) -> Scales:
    """Location of the pooled outcome on the link scale and a unit for effects."""
    if likelihood == "binomial":
        p = (stats["successes"].sum() + 0.5) / (stats["trials"].sum() + 1.0)
        return Scales(float(math.log(p / (1 - p))), 1.0, 1.0)
    if likelihood == "poisson":
        rate = (stats["counts"].sum() + 0.5) / stats["exposure"].sum()
        return Scales(float(math.log(rate)), 1.0, 1.0)
    n, mean, m2 = stats["n"], stats["mean"], stats["m2"]
    total = n.sum()
    grand = float((n * mean).sum() / total)
    var = float((m2.sum() + (n * (mean - grand) ** 2).sum()) / max(total - 1, 1))
    sd = math.sqrt(var) if var > 0 else 1.0
    return Scales(grand, sd, sd)


def default_common_prior(name: str, scales: Scales, sd_x: float) -> Prior:
    """Intercept ~ Normal(pooled outcome on the link scale, 2.5 s); slope ~ Normal(0, 2.5 s / sd_x).

    ``s`` is the sd of the outcome for a normal model and 1 for the logit and log links.
    """
    if name == "Intercept":
        return Normal(round(scales.loc, 6), round(2.5 * scales.scale, 6))
    return Normal(0.0, round(2.5 * scales.scale / (sd_x if sd_x > 0 else 1.0), 6))


def default_sd_prior(scales: Scales, sd_x: float) -> Prior:
    """A group sd ~ HalfNormal(s) for an intercept term, HalfNormal(s / sd_x) for a slope."""
    return HalfNormal(round(scales.scale / (sd_x if sd_x > 0 else 1.0), 6))


def prior_scale(prior: Prior) -> float:
    """A typical value of a scale prior (its scale parameter), for the centering choice."""
    for attr in ("sigma", "beta", "scale"):
        if hasattr(prior, attr):
            return float(getattr(prior, attr))
    if hasattr(prior, "lam"):
        return 1.0 / float(prior.lam)
    return 1.0
