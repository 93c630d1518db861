"""What a fit produced, frozen: the tables, draws and the model behind them.

The pipelines (:mod:`poolwise.onefactor`, :mod:`poolwise.glmm.fit`) return these records, the
verbs (plots, ranks, simulate, report) read them, and the result classes of
:mod:`poolwise.results` add the verbs as methods. Nothing here fits or draws a figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .model import PoolModel
from .priors import Prior

if TYPE_CHECKING:
    from .glmm.design import Design
    from .glmm.model import ModelPlan

# groups per chunk of theta draws, each chunk with its own random stream: a group's draws do not
# depend on how many groups are drawn with it
THETA_CHUNK = 4096


def chunked(
    seed: int, n_groups: int, draw: Callable[[slice, np.random.Generator], np.ndarray]
) -> np.ndarray:
    """Draws of ``n_groups`` groups, (draws, groups): ``draw(groups, rng)`` for each chunk of
    ``THETA_CHUNK`` groups with its own random stream from ``seed`` (the same draws at every
    call, whatever else is drawn).

    Example
    -------
    >>> x = chunked(1, 5000, lambda g, rng: rng.normal(size=(2, g.stop - g.start)))
    >>> x.shape, bool((x == chunked(1, 5000, lambda g, rng: rng.normal(size=(2, g.stop - g.start)))).all())
    ((2, 5000), True)
    """
    out = []
    for c0 in range(0, n_groups, THETA_CHUNK):
        rng = np.random.default_rng([seed, 1, c0 // THETA_CHUNK])
        out.append(draw(slice(c0, min(c0 + THETA_CHUNK, n_groups)), rng))
    return np.concatenate(out, axis=1)


def _same(x: Any) -> Any:
    return x


class LazyDraws(Mapping):
    """Draws by parameter, some made only when first read (then kept): ``eager`` the arrays,
    ``lazy`` a function making each of the others (many groups' draws: a fit need not hold
    them).

    Example
    -------
    >>> d = LazyDraws({"a": np.zeros(2)}, {"b": lambda: np.ones(2)})
    >>> sorted(d), d["b"].tolist()
    (['a', 'b'], [1.0, 1.0])
    """

    def __init__(
        self,
        eager: dict[str, np.ndarray],
        lazy: dict[str, Callable[[], np.ndarray]],
        order: list[str] | None = None,
    ):
        self._values = dict(eager)
        self._lazy = dict(lazy)
        self._order = order or [*eager, *(k for k in lazy if k not in eager)]

    @classmethod
    def together(
        cls,
        eager: dict[str, np.ndarray],
        make: Callable[[], dict[str, np.ndarray]],
        keys: list[str],
        order: list[str] | None = None,
    ) -> LazyDraws:
        """Draws whose ``keys`` one call of ``make`` gives together (from one random stream),
        made when any of them is first read.

        Example
        -------
        >>> d = LazyDraws.together({}, lambda: {"a": np.zeros(1), "b": np.ones(1)}, ["a", "b"])
        >>> d["b"].tolist(), d["a"].tolist()
        ([1.0], [0.0])
        """
        made = cache(make)
        return cls(eager, {k: (lambda k=k: made()[k]) for k in keys}, order)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._values:
            if key not in self._lazy:
                raise KeyError(key)
            self._values[key] = self._lazy.pop(key)()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def pick(self, keys: list[str], shape: Callable[[Any], Any] = _same) -> LazyDraws:
        """The draws of ``keys`` alone, each through ``shape`` (those not yet made still made
        when first read)."""
        return LazyDraws(
            {k: shape(self._values[k]) for k in keys if k in self._values},
            {k: (lambda f=self._lazy[k]: shape(f())) for k in keys if k in self._lazy},
            list(keys),
        )


def pick(
    draws: Mapping[str, np.ndarray], keys: list[str], shape: Callable[[Any], Any] = _same
) -> Mapping[str, np.ndarray]:
    """The draws of ``keys`` alone, each through ``shape``, lazy ones still lazy (see
    :class:`LazyDraws`).

    Example
    -------
    >>> pick({"a": 1, "b": np.zeros((1, 2))}, ["b"], lambda x: x.reshape(-1))
    {'b': array([0., 0.])}
    """
    if isinstance(draws, LazyDraws):
        return draws.pick(keys, shape)
    return {k: shape(draws[k]) for k in keys}


@dataclass(frozen=True)
class FitData:
    """One grouping factor's fit.

    ``groups`` is indexed by group label: ``n``, ``raw``, ``mean``, ``sd``, ``hdi_low``,
    ``hdi_high``, ``shrinkage``; ``population`` by hyperparameter: ``mean``, ``sd`` (NaN where they
    do not exist), ``median``, ``hdi_low``, ``hdi_high``. ``hyper_draws`` are posterior draws of
    the hyperparameters; the groups' draws come from ``model`` at the unconstrained draws
    ``z_draws`` (see :meth:`theta_draws`).
    """

    family: Any
    pooling: str
    method: str
    method_reason: str
    priors: dict[str, Prior | float | str]
    groups: pd.DataFrame
    population: pd.DataFrame
    hdi_prob: float
    n_rows: int
    seed: int
    observed: dict[str, np.ndarray]
    hyper_draws: Mapping[str, np.ndarray]
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    model: PoolModel | None = field(default=None, repr=False, compare=False)
    z_draws: np.ndarray | None = field(default=None, repr=False, compare=False)
    # the groups' draws themselves, where a sampler made them (else drawn from ``model``)
    draws_of_groups: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def factors(self) -> tuple[str, ...]:
        """The grouping factors: one for a one-factor fit (its group column)."""
        return (self.groups.index.name or "group",)

    def theta_draws(self) -> np.ndarray:
        """Posterior draws of every group's theta, shape (draws, groups): the same draws at
        every call (fixed chunks of groups, each with its own random stream from ``seed``)."""
        if self.draws_of_groups is not None:
            return self.draws_of_groups
        model, z = self.model, self.z_draws
        if model is None or z is None:
            raise ValueError("theta_draws: this fit keeps no model to draw the groups from")
        return chunked(self.seed, model.n_groups, lambda g, rng: model.sample_theta(z, rng, g))


def as_type(data: FitData, cls: type) -> Any:
    """The same record as an instance of ``cls`` (a subclass of ``type(data)``), field for field.

    Example
    -------
    >>> import pandas as pd
    >>> d = FitData(None, "partial", "exact", "", {}, pd.DataFrame(), pd.DataFrame(), 0.94, 0, 1,
    ...             {}, {})
    >>> class Sub(FitData): pass
    >>> type(as_type(d, Sub)).__name__
    'Sub'
    """
    return cls(**{f.name: getattr(data, f.name) for f in fields(data)})


@dataclass(frozen=True)
class RegressionData(FitData):
    """A regression's fit (a formula with group-specific terms), by NUTS.

    ``groups`` is indexed by (term, level); ``population`` holds the common effects, the group
    sds and sigma; ``draws`` the posterior by chain, (chains, draws, ...) per parameter (a
    :class:`LazyDraws` where some are made when first read); ``table`` one row per parameter
    with its diagnostics (ess, r_hat).
    """

    formula: str = ""
    draws: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    coords: dict[str, list[str]] = field(default_factory=dict, repr=False)
    design: Design | None = field(default=None, repr=False)
    plan: ModelPlan | None = field(default=None, repr=False)
    divergences: int = 0
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    table: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def factors(self) -> tuple[str, ...]:
        """The group-specific terms, e.g. ``("1|county", "floor|county")``."""
        return tuple(t.name for t in self.design.groups) if self.design else ()

    def factor(self, term: str | None = None) -> FitData:
        """One group-specific term's levels as a one-factor record (``term`` None: the first):
        their effects on the link scale, sized by their data, for the verbs of one factor.

        Example
        -------
        >>> import pandas as pd, poolwise, warnings
        >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7],
        ...                    "n": [10] * 6})
        >>> with warnings.catch_warnings():  # short chains: their r_hat warns
        ...     warnings.simplefilter("ignore")
        ...     fit = poolwise.fit("p(k, n) ~ 1 + x + (1|g)", data=df, seed=1, draws=400,
        ...                        tune=300, progress=False)
        >>> view = fit.factor()
        >>> view.groups.index.name, view.groups["n"].tolist()
        ('1|g', [20, 20, 20])
        """
        from .glmm.model import LevelEffects

        names = self.factors
        if not names:
            raise ValueError("factor: this regression has no group-specific terms")
        term = names[0] if term is None else term
        if term not in names:
            raise ValueError(f"factor: no term {term!r}; the terms are {', '.join(names)}")
        t = self.design.groups[names.index(term)]
        groups = self.groups.loc[term].copy()
        groups.index = pd.Index(list(groups.index), name=term)
        family = LevelEffects(
            name=f"{term} effects",
            description=f"effects of {t.factor} in {self.family.description}",
            size_label=self.family.size_label,
        )
        sd = (
            {t.sigma_name: self.hyper_draws[t.sigma_name]}
            if t.sigma_name in self.hyper_draws
            else {}
        )
        return FitData(
            family=family,
            pooling="partial",
            method=self.method,
            method_reason=self.method_reason,
            priors=self.priors,
            groups=groups,
            population=self.population.loc[[n for n in self.population.index if n in sd]],
            hdi_prob=self.hdi_prob,
            n_rows=self.n_rows,
            seed=self.seed,
            observed={"n": groups["n"].to_numpy()},
            hyper_draws=sd,
            warnings=self.warnings,
            info=self.info,
            draws_of_groups=self.draws[term].reshape(-1, t.n_levels),
        )

    def linear_predictor(self, index: np.ndarray) -> np.ndarray:
        """Each cell's linear predictor (offset included) at the posterior draws ``index`` (into
        the draws of all chains), shape (len(index), cells)."""
        design = self.design
        eta = np.tile(design.offset, (len(index), 1))
        for i, name in enumerate(design.names):
            eta += self.draws[name].reshape(-1)[index, None] * design.X[:, i]
        for t in design.groups:
            effects = self.draws[t.name].reshape(-1, t.n_levels)[index]
            eta += effects[:, t.codes] * t.values
        return eta

    def theta_draws(self) -> np.ndarray:
        """Draws of every group effect, (draws, levels of all terms), in ``groups`` order."""
        parts = [
            self.draws[t.name].reshape(-1, t.n_levels)
            for t in (self.design.groups if self.design else [])
        ]
        return np.concatenate(parts, axis=1) if parts else np.zeros((0, 0))
