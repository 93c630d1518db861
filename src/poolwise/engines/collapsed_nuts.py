"""NUTS on the collapsed one-factor model: numpyro samples the hyperparameters only.

The group parameters are integrated out: the target is p(eta) prod_j m_j(eta), with each family's
log marginal likelihood written in jax (the same formulas as the numpy ones in
:mod:`poolwise.families`). Group draws then come exactly from theta_j | eta, data_j. This is the
third engine that the exact and empirical-Bayes ones can be checked against (see
:mod:`poolwise.check`); it knows a :class:`~poolwise.model.PoolModel` and arrays, nothing else.

Compiled samplers are cached by model structure (family, free hyperparameters, priors, number of
groups, chain settings): refitting new data of the same shape does not compile again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model import PoolModel
from ..priors import Flat, Prior

CACHE_SIZE = 16
_SAMPLERS: OrderedDict[tuple, Any] = OrderedDict()


@dataclass(frozen=True)
class CollapsedDraws:
    """Posterior draws of the hyperparameters: ``samples`` on the natural scale, shape
    (chains, draws) each, and ``points`` (chains × draws, d), the same draws on the model's
    unconstrained scale, chains one after another.

    ``divergences`` counts divergent transitions over all chains.
    """

    samples: dict[str, np.ndarray]
    points: np.ndarray
    divergences: int
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    boundary: tuple[int, ...] = ()

    @property
    def point(self) -> bool:
        """Draws describe the whole posterior."""
        return False

    @property
    def weights(self) -> np.ndarray:
        """Every draw weighs the same."""
        return np.full(len(self.points), 1.0 / len(self.points))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` of the draws, chosen at random with replacement."""
        return self.points[rng.integers(0, len(self.points), size)]

    def flat(self) -> dict[str, np.ndarray]:
        """Every hyperparameter's draws, chains concatenated."""
        return {k: v.reshape(-1) for k, v in self.samples.items()}


def _constraint(lower: float, upper: float) -> Any:
    from numpyro.distributions import constraints

    if np.isfinite(lower) and np.isfinite(upper):
        return constraints.interval(lower, upper)
    if np.isfinite(lower):
        return constraints.greater_than(lower)
    if np.isfinite(upper):
        return constraints.less_than(upper)
    return constraints.real


def _log_prior(prior: Prior) -> Any:
    """The prior's log density as a jax function (None for Flat)."""
    if isinstance(prior, Flat):
        return None
    try:
        return prior.to_numpyro().log_prob
    except NotImplementedError:
        raise ValueError(
            f"method='nuts': the prior {prior!r} has no numpyro counterpart; use a proper prior "
            "such as HalfNormal, Gamma or Beta"
        ) from None


def _make_model(model: PoolModel):
    """The numpyro model and the constraint transform of each sampled site.

    Each hyperparameter is a site on the range the model's own transform maps onto (the
    intersection of its support and its prior's), with the prior's density as a factor: numpyro
    then samples on the same unconstrained scale as the other engines (log for scales, logit for
    rates), whatever support the numpyro twin of the prior declares.
    """
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import biject_to

    family = model.family
    names, constants = model.names, dict(model.constants)
    sites = {
        n: dist.ImproperUniform(_constraint(t.lower, t.upper), (), ())
        for n, t in zip(names, model.transforms, strict=True)
    }
    log_priors = {n: _log_prior(model.priors[n]) for n in names}

    def numpyro_model(stats):
        p = {}
        for n in names:
            p[n] = numpyro.sample(n, sites[n])
            if log_priors[n] is not None:
                numpyro.factor(f"{n}_prior", log_priors[n](p[n]))
        p.update(constants)
        p = family.complete(p)
        numpyro.factor("loglik", family.log_marginal_sum_jax(p, stats))

    return numpyro_model, {n: biject_to(d.support) for n, d in sites.items()}


def _sampler(model: PoolModel, stats: tuple, chains: int, tune: int, draws: int, accept: float):
    """A compiled function (keys, inits, stats) -> (draws, divergences), batched over data sets
    and chains, and the constraint transforms; cached by the model's structure."""
    import jax
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    key = (
        model.family.name,
        model.names,
        tuple(sorted((k, repr(v)) for k, v in model.priors.items())),
        tuple(sorted(model.constants.items())),
        model.n_groups,
        chains,
        tune,
        draws,
        accept,
    )
    if key in _SAMPLERS:
        _SAMPLERS.move_to_end(key)
        return _SAMPLERS[key]
    numpyro_model, transforms = _make_model(model)
    info = initialize_model(
        jax.random.PRNGKey(0), numpyro_model, model_args=(stats,), dynamic_args=True
    )
    init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")

    def one_chain(rng_key, z_init, data):
        state = init_kernel(
            z_init,
            num_warmup=tune,
            target_accept_prob=accept,
            model_args=(data,),
            rng_key=rng_key,
        )

        def step(state, _):
            state = sample_kernel(state, model_args=(data,))
            return state, (state.z, state.diverging)

        _, (zs, diverging) = jax.lax.scan(step, state, None, length=tune + draws)
        return {k: v[tune:] for k, v in zs.items()}, diverging[tune:].sum()

    chains_fn = jax.vmap(one_chain, in_axes=(0, 0, None))
    run = jax.jit(jax.vmap(chains_fn, in_axes=(0, 0, 0)))
    _SAMPLERS[key] = (run, transforms)
    while len(_SAMPLERS) > CACHE_SIZE:
        _SAMPLERS.popitem(last=False)
    return run, transforms


def _stats_tuple(model: PoolModel) -> tuple:
    return tuple(np.asarray(model.stats[k], dtype=np.float64) for k in model.family.statistics)


def _check(model: PoolModel, chains: int, tune: int, draws: int) -> None:
    if model.pooling != "partial":
        raise ValueError(
            f"method='nuts' samples the partial-pooling model; got pooling={model.pooling!r}"
        )
    if model.dim == 0:
        raise ValueError("method='nuts': the model has no free hyperparameters to sample")
    for name, value in (("chains", chains), ("tune", tune), ("draws", draws)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def fit_many(
    models: list[PoolModel],
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
) -> list[CollapsedDraws]:
    """:func:`fit` for several data sets of one model structure, in one compiled call.

    Every model must share the family, the free hyperparameters, their priors and the number of
    groups (as the data sets of a simulation study do); each gets its own chains and adaptation.
    """
    import jax

    from .optimize import find_mode

    if not models:
        return []
    first = models[0]
    for m in models:
        _check(m, chains, tune, draws)
    inits, keys = [], []
    for i, m in enumerate(models):
        z0, _ = find_mode(m.log_posterior, m.initial_point())
        rng = np.random.default_rng([int(seed) % (2**32), i, 7])
        # each chain starts near the mode, jittered a little on the unconstrained scale
        inits.append(m.params(z0[None, :] + rng.normal(0.0, 0.1, (chains, m.dim))))
        keys.append(jax.random.split(jax.random.PRNGKey((int(seed) + 7919 * i) % (2**32)), chains))
    stats = [_stats_tuple(m) for m in models]
    with jax.enable_x64(True):
        import jax.numpy as jnp

        run, transforms = _sampler(first, stats[0], chains, tune, draws, target_accept)
        if any(
            _sampler(m, stats[0], chains, tune, draws, target_accept)[0] is not run for m in models
        ):
            raise ValueError("fit_many: every model must have the same structure")
        z_init = {
            n: jnp.asarray(np.stack([transforms[n].inv(v[n][:, 0]) for v in inits]))
            for n in first.names
        }
        data = tuple(jnp.asarray(np.stack(col)) for col in zip(*stats, strict=True))
        zs, diverging = run(jnp.stack(keys), z_init, data)
        constrained = {n: np.asarray(transforms[n](zs[n]), dtype=np.float64) for n in first.names}
        diverging = np.asarray(diverging)
    info = {"chains": chains, "tune": tune, "draws": draws, "target_accept": target_accept}
    out = []
    for i, m in enumerate(models):
        samples = {n: constrained[n][i] for n in first.names}
        points = np.column_stack(
            [t.inverse(samples[n].reshape(-1)) for n, t in zip(m.names, m.transforms, strict=True)]
        )
        count = int(diverging[i].sum())
        warned = [f"{count} divergent transitions: the draws may be biased"] if count else []
        out.append(CollapsedDraws(samples, points, count, info, warned))
    return out


def fit(
    model: PoolModel,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
) -> CollapsedDraws:
    """NUTS draws of the free hyperparameters of a partial-pooling ``model`` (numpyro, float64).

    Chains start near the posterior mode (found on the unconstrained scale) and adapt their step
    size and mass matrix over ``tune`` steps. Group parameters are left out; draw them from their
    conditionals with :meth:`PoolModel.sample_theta`.

    Example
    -------
    >>> import numpy as np, poolwise
    >>> from poolwise.families import NormalKnownSE
    >>> from poolwise.model import build_model
    >>> stats = {"y": np.array([28., 8, -3, 7, -1, 1, 18, 12]),
    ...          "se": np.array([15., 10, 16, 11, 9, 11, 10, 18])}
    >>> model = build_model(NormalKnownSE(), stats, "partial",
    ...                     {"mu": poolwise.Normal(0, 5), "tau": poolwise.HalfCauchy(5)})
    >>> res = fit(model, draws=2000, tune=500, chains=2, seed=1)
    >>> res.samples["mu"].shape, abs(float(res.flat()["mu"].mean()) - 4.4) < 0.4
    ((2, 2000), True)
    """
    return fit_many(
        [model], draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept
    )[0]
