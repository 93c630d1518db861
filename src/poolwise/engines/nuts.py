"""NUTS engine: numpyro's sampler, chains vectorized, in float64.

The engine knows a numpyro model function and arrays, nothing about formulas or dataframes.
64-bit floats are switched on only while sampling (``jax.enable_x64`` as a context), so importing
poolwise neither imports jax nor changes its settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NutsResult:
    """Draws by site name, shape (chains, draws, ...), and the sampler's statistics.

    ``time_to_first_draw`` is the wall time of compilation and warm-up (NaN unless measured);
    ``seconds`` the whole run.
    """

    samples: dict[str, np.ndarray]
    diverging: np.ndarray
    tree_depth: np.ndarray
    step_size: np.ndarray
    seconds: float
    time_to_first_draw: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def divergences(self) -> int:
        return int(self.diverging.sum())


def sample_nuts(
    model: Callable[..., None],
    data: dict[str, np.ndarray],
    *,
    chains: int = 4,
    tune: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    target_accept: float = 0.8,
    progress: bool = False,
    timing: bool = False,
) -> NutsResult:
    """Run NUTS on ``model(**data)``: ``chains`` vectorized chains, ``tune`` warm-up steps each.

    Every draw follows from ``seed``; the progress display changes nothing in them. With
    ``timing=True`` warm-up and sampling run as two compiled loops, so that the time to the first
    draw (compilation + warm-up) is measured; otherwise one loop does both (one compilation).

    Example
    -------
    >>> import numpy as np, numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0, 10))
    ...     numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    >>> res = sample_nuts(model, {"y": np.array([1.0, 2.0, 3.0])}, tune=200, draws=200, seed=1)
    >>> res.samples["mu"].shape, round(float(res.samples["mu"].mean()), 1)
    ((4, 200), 2.0)
    """
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_median

    for name, value in (("chains", chains), ("tune", tune), ("draws", draws)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie strictly between 0 and 1, got {target_accept!r}")
    with jax.enable_x64(True):
        kernel = NUTS(
            model, target_accept_prob=target_accept, init_strategy=init_to_median(num_samples=15)
        )
        mcmc = MCMC(
            kernel,
            num_warmup=tune,
            num_samples=draws,
            num_chains=chains,
            chain_method="vectorized",
            progress_bar=progress,
        )
        rng = jax.random.PRNGKey(int(seed) % (2**32))
        args = {k: np.asarray(v) for k, v in data.items()}
        fields = ("diverging", "num_steps", "adapt_state.step_size")
        start = time.perf_counter()
        if timing:
            mcmc.warmup(rng, extra_fields=(), **args)
            jax.block_until_ready(mcmc.post_warmup_state)
            first = time.perf_counter() - start
            mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields, **args)
        else:
            mcmc.run(rng, extra_fields=fields, **args)
            first = float("nan")
        samples = {
            k: np.asarray(v, dtype=np.float64)
            for k, v in mcmc.get_samples(group_by_chain=True).items()
        }
        extra = mcmc.get_extra_fields(group_by_chain=True)
        seconds = time.perf_counter() - start
    steps = np.asarray(extra["num_steps"])
    return NutsResult(
        samples=samples,
        diverging=np.asarray(extra["diverging"], dtype=bool),
        tree_depth=np.floor(np.log2(np.maximum(steps, 1))).astype(int) + 1,
        step_size=np.asarray(extra["adapt_state.step_size"]),
        seconds=seconds,
        time_to_first_draw=first,
        info={"chains": chains, "tune": tune, "draws": draws, "target_accept": target_accept},
    )
