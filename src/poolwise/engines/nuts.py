"""NUTS engine: numpyro's sampler in float64, compiled once per model shape; on a CPU each chain
runs on its own thread, on an accelerator the chains are vectorized.

The engine knows a numpyro model function and arrays, nothing about formulas or dataframes.
64-bit floats are switched on only while sampling (``jax.enable_x64`` as a context), so importing
poolwise neither imports jax nor changes its settings.

A run is three ``jax.jit`` programs built from numpyro's functional NUTS kernel (initialise the
chains; advance them a chunk of steps, called until warm-up and sampling are done; map the draws
to every site's constrained value), cached by the model function, the shapes of its arrays and
the sampler settings: refitting a model of the same structure (new data of the same size,
another seed) runs the compiled programs again instead of compiling anew.
Across processes, jax's persistent compilation cache keeps the compiled programs on disk (as
PyTensor's compiledir does for PyMC): poolwise points it at ``~/.cache/poolwise/jax`` (or
``$POOLWISE_CACHE_DIR``) when no cache directory is set, unless ``POOLWISE_COMPILATION_CACHE=0``.
A caller that names its model (``program_key``) also has the programs exported there, so that a
later process loads them without tracing numpyro's kernel again (:mod:`.programs`). A program
loaded from either cache gives the same draws as a freshly compiled one.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .programs import StoredProgram, cache_folder, program_path

CACHE_SIZE = 16
_RUNS: OrderedDict[tuple, Any] = OrderedDict()
# a run advances in this many compiled chunks, between which the progress display is updated
PROGRESS_UPDATES = 50
# the initial metric costs one Hessian-vector product per parameter: only for models this small
METRIC_MAX = 1000
CHAIN_METHODS = ("auto", "vectorized", "threads")


@dataclass(frozen=True)
class NutsResult:
    """Draws by site name, shape (chains, draws, ...), and the sampler's statistics.

    ``time_to_first_draw`` is the wall time to the end of the chunk of steps in which warm-up
    ends (compilation included); ``seconds`` the whole run.
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


def _signature(data: dict[str, Any]) -> tuple:
    import jax

    leaves, tree = jax.tree_util.tree_flatten(data)
    return tree, tuple((np.shape(x), np.asarray(x).dtype.str) for x in leaves)


@dataclass(frozen=True)
class _Program:
    """The compiled parts of a run: initialise the chains, advance them ``chunk`` steps, and
    map unconstrained draws to every site's values. Progress is reported between chunks, from
    Python: a program with host callbacks could not be kept in jax's persistent cache."""

    init: Callable
    advance: Callable
    constrain: Callable
    chunk: int


def _build(model: Callable[..., None], settings: tuple, key: str | None) -> _Program:
    import jax
    from numpyro.infer import init_to_median
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    chains, tune, draws, target_accept, dense = settings
    chunk = -(-(tune + draws) // PROGRESS_UPDATES)

    def start(keys, data, metric=False):
        """The initial states and the NUTS kernels; traced in each part (numpyro's kernel keeps
        its settings from the initialisation), the compiler drops what a part does not use.
        ``metric``: start from :func:`_initial_metric` (only the initialisation needs it)."""
        info = initialize_model(
            keys[:, 0],
            model,
            init_strategy=init_to_median(num_samples=15),
            dynamic_args=True,
            model_kwargs=data,
        )
        init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
        potential = info.potential_fn(**data)

        def one(params, key):
            return init_kernel(
                params,
                num_warmup=tune,
                inverse_mass_matrix=_initial_metric(potential, params.z, dense) if metric else None,
                dense_mass=dense,
                target_accept_prob=target_accept,
                model_kwargs=data,
                rng_key=key,
            )

        return jax.vmap(one)(info.param_info, keys[:, 1]), info, sample_kernel

    def init(keys, data):
        return start(keys, data, metric=True)[0]

    def advance(states, keys, data):
        sample_kernel = start(keys, data)[2]

        def step(states, _):
            states = jax.vmap(lambda s: sample_kernel(s, model_kwargs=data))(states)
            return states, (
                states.z,
                states.diverging,
                states.num_steps,
                states.adapt_state.step_size,
            )

        return jax.lax.scan(step, states, None, length=chunk)

    def constrain(zs, keys, data):
        info = start(keys, data)[1]
        return jax.vmap(jax.vmap(info.postprocess_fn(**data)))(zs)

    def stored(fn: Callable, part: str) -> StoredProgram:
        return StoredProgram(jax.jit(fn), None if key is None else program_path(key, part))

    return _Program(
        stored(init, "init"), stored(advance, "advance"), stored(constrain, "constrain"), chunk
    )


def _initial_metric(potential: Callable, z: Any, dense: bool):
    """An initial inverse mass matrix: the inverse curvature of the potential at ``z``, where
    that curvature exceeds 1 (else 1, the identity's value), or None (the identity) for more than
    ``METRIC_MAX`` parameters. Warm-up then starts with steps on the scale of each parameter
    instead of the smallest one's (radon: 15 leapfrog steps per draw in its first 100 draws
    instead of 150); the windowed adaptation replaces it as before."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(z)
    if flat.size > METRIC_MAX:
        return None
    grad = jax.grad(lambda x: potential(unravel(x)))

    def curvature(i):
        e = jnp.zeros_like(flat).at[i].set(1.0)
        return jax.jvp(grad, (flat,), (e,))[1][i]

    h = jax.lax.map(curvature, jnp.arange(flat.size))
    inverse = 1.0 / jnp.where(jnp.isfinite(h), jnp.maximum(h, 1.0), 1.0)
    return jnp.diag(inverse) if dense else inverse


def _use_disk_cache(jax: Any) -> None:
    """Point jax's persistent compilation cache at poolwise's folder, unless told otherwise."""
    folder = cache_folder()
    if folder is None:
        return
    if jax.config.jax_compilation_cache_dir:
        return  # the user's own cache
    path = os.path.join(folder, "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # a folder we cannot write: compile in memory only
    jax.config.update("jax_compilation_cache_dir", path)


def _compiled(
    model: Callable[..., None], data: dict, settings: tuple, program_key: str | None
) -> _Program:
    signature = _signature(data)
    key = (model, signature, settings)
    if key in _RUNS:
        _RUNS.move_to_end(key)
        return _RUNS[key]
    stored = None if program_key is None else f"{program_key}|{signature}|{settings}"
    _RUNS[key] = _build(model, settings, stored)
    while len(_RUNS) > CACHE_SIZE:
        _RUNS.popitem(last=False)
    return _RUNS[key]


class _Progress:
    """A rich progress bar over the iterations of the chains (their mean, when each chain runs on
    its own thread); safe to update from several threads."""

    def __init__(self, tune: int, total: int, chains: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.tune, self.total, self.chains = tune, total, chains
        self.done = 0
        self.lock = threading.Lock()
        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        )
        self.task = self.bar.add_task(f"NUTS, {chains} chains: compiling", total=total)
        self.bar.start()

    def advance(self, iterations: int) -> None:
        """``iterations`` more, summed over the chains that made them."""
        with self.lock:
            self.done += iterations
            done = min(self.done // self.chains, self.total)
            stage = "warm-up" if done <= self.tune else "sampling"
            self.bar.update(self.task, completed=done, description=f"NUTS {stage}")

    def close(self) -> None:
        self.bar.stop()


@dataclass(frozen=True)
class _Run:
    """Runs the chains of one program call from their keys: initialise, advance chunk by chunk,
    constrain. Returns the samples, the sampler statistics (chains first, warm-up dropped) and
    the seconds from ``start`` to the end of warm-up, or None once ``stop`` is set (an
    interruption or another chain's error: the other threads end at their next chunk). Callable
    from a worker thread (64-bit floats are a per-thread setting in jax)."""

    program: _Program
    args: dict
    tune: int
    total: int
    start: float
    bar: _Progress | None
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self, keys: np.ndarray) -> tuple:
        import jax

        with jax.enable_x64(True):
            states = self.program.init(keys, self.args)
            parts, done, first = [], 0, float("nan")
            # whole chunks: the last may run past ``total``; those steps are dropped below
            while done < self.total:
                if self.stop.is_set():
                    return None
                states, out = self.program.advance(states, keys, self.args)
                parts.append(jax.device_get(out))
                done += self.program.chunk
                if done >= self.tune and np.isnan(first):
                    first = time.perf_counter() - self.start
                if self.bar is not None:
                    self.bar.advance(self.program.chunk * len(keys))
            zs, diverging, steps, step_size = (
                jax.tree_util.tree_map(
                    lambda *v: np.concatenate(v)[self.tune : self.total].swapaxes(0, 1), *column
                )
                for column in zip(*parts, strict=True)
            )
            samples = jax.device_get(self.program.constrain(zs, keys, self.args))
        return samples, diverging, steps, step_size, first


def _threaded(jax: Any, chains: int, chain_method: str) -> bool:
    """Whether the chains run one per thread: ``"auto"`` on a CPU with several cores."""
    if chain_method not in CHAIN_METHODS:
        raise ValueError(
            f"chain_method must be one of {', '.join(map(repr, CHAIN_METHODS))}, "
            f"got {chain_method!r}"
        )
    if chain_method == "auto":
        return chains > 1 and (os.cpu_count() or 1) > 1 and jax.default_backend() == "cpu"
    return chain_method == "threads"


def sample_nuts(
    model: Callable[..., None],
    data: dict[str, Any],
    *,
    chains: int = 4,
    tune: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    target_accept: float = 0.8,
    dense_mass: bool = False,
    progress: bool = False,
    program_key: str | None = None,
    chain_method: str = "auto",
) -> NutsResult:
    """Run NUTS on ``model(**data)``: ``chains`` chains, ``tune`` warm-up steps each.

    ``data`` is a dict of arrays (or tuples of arrays). Every draw follows from ``seed``; the
    progress display changes nothing in them. ``dense_mass`` adapts a full mass matrix instead of
    a diagonal one. ``time_to_first_draw`` is measured on every run: the seconds from the call to
    the end of warm-up (compilation, when the model's shape is new, included). ``program_key``,
    a text that identifies the model function across processes (the same text for the same
    model), keeps its compiled programs on disk for later processes (see
    :mod:`poolwise.engines.programs`); without it they live in this process only.
    ``chain_method``: ``"vectorized"`` runs the chains as one program (each step waits for the
    chain that needs the most leapfrog steps), ``"threads"`` runs each chain's program on its own
    thread (each at its own pace; the cores share the work), ``"auto"`` threads on a CPU with
    several cores and vectorizes on an accelerator. The draws of a chain follow from ``seed``
    and its number whichever the method.

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

    for name, value in (("chains", chains), ("tune", tune), ("draws", draws)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie strictly between 0 and 1, got {target_accept!r}")
    threads = _threaded(jax, chains, chain_method)
    per_program = 1 if threads else int(chains)
    settings = (per_program, int(tune), int(draws), float(target_accept), bool(dense_mass))
    _use_disk_cache(jax)
    total = tune + draws
    bar = _Progress(tune, total, chains) if progress else None
    start = time.perf_counter()
    try:
        with jax.enable_x64(True):
            args = jax.tree_util.tree_map(np.asarray, data)
            keys = jax.random.split(jax.random.PRNGKey(int(seed) % (2**32)), 2 * chains)
            keys = np.asarray(keys.reshape(chains, 2, -1))
            program = _compiled(model, args, settings, program_key)
        # stored programs not yet loaded load side by side, and while the chains start
        pending = [p for p in (program.init, program.advance, program.constrain) if p.pending]
        if pending:
            loader = ThreadPoolExecutor(max_workers=len(pending))
            for part in pending:
                loader.submit(part.prefetch)
            loader.shutdown(wait=False)
        run = _Run(program, args, tune, total, start, bar)
        if threads:
            with ThreadPoolExecutor(max_workers=chains) as pool:
                try:
                    groups = list(pool.map(run, (keys[i : i + 1] for i in range(chains))))
                except BaseException:
                    run.stop.set()
                    raise
        else:
            groups = [run(keys)]
        samples = {k: np.concatenate([g[0][k] for g in groups]) for k in groups[0][0]}
        diverging, steps, step_size = (np.concatenate([g[i] for g in groups]) for i in (1, 2, 3))
        first = max(g[4] for g in groups)
        seconds = time.perf_counter() - start
    finally:
        if bar is not None:
            bar.close()
    diverging = np.asarray(diverging, dtype=bool)
    steps = np.asarray(steps)
    return NutsResult(
        samples={k: np.asarray(v, dtype=np.float64) for k, v in samples.items()},
        diverging=diverging,
        tree_depth=np.floor(np.log2(np.maximum(steps, 1))).astype(int) + 1,
        step_size=np.asarray(step_size),
        seconds=seconds,
        time_to_first_draw=first,
        info={
            "chains": chains,
            "tune": tune,
            "draws": draws,
            "target_accept": target_accept,
            "dense_mass": bool(dense_mass),
            "chain_method": "threads" if threads else "vectorized",
        },
    )
