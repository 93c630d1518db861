"""The interface every family fills in: arrays in, arrays out; no dataframes here.

Shapes: hyperparameter values arrive as arrays of shape ``(K, 1)`` (K points of the hyperparameter
space) and group statistics as arrays of shape ``(J,)``, so every result is ``(K, J)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..priors import Prior

Params = dict[str, np.ndarray]
Stats = dict[str, np.ndarray]


@dataclass(frozen=True)
class Layout:
    """How rows hold a family's data: the role of each column, and how a group's rows reduce.

    ``roles`` maps each role (the keyword of :func:`poolwise.fit` that names its column) to the
    rule its values must satisfy: ``real``, ``positive``, ``nonnegative``, ``count`` (a whole
    number, at least 0), ``size`` (a whole number, at least 1) or ``sd`` (at least 0, may be
    missing where the row's size is 1). ``optional`` gives the roles that may be left out, with
    the value each row then has. ``reduction`` is how :func:`poolwise.data.reduce` turns a
    group's rows into the family's statistics:

    - ``"sums"``: each role's sum (``rows``, the group's number of rows, too, where the family's
      statistics name it);
    - ``"single"``: one row per group, its values;
    - ``"moments"``: rows of one real role, to the group's ``n``, ``mean`` and ``m2`` (the sum of
      squared deviations);
    - ``"summaries"``: rows that summarise parts of a group by their ``real`` mean, ``size`` and
      ``sd``, to the same ``n``, ``mean`` and ``m2``.

    Example
    -------
    >>> Layout({"counts": "count", "exposure": "nonnegative"}, "sums", {"exposure": 1.0}).required
    ('counts',)
    """

    roles: Mapping[str, str]
    reduction: str
    optional: Mapping[str, float] = field(default_factory=dict)

    @property
    def required(self) -> tuple[str, ...]:
        """The roles a fit must name."""
        return tuple(r for r in self.roles if r not in self.optional)

    def reads(self, roles: set[str]) -> bool:
        """Whether naming exactly ``roles`` selects this layout."""
        return set(self.required) <= roles <= set(self.roles)


@dataclass(frozen=True)
class RowCheck:
    """A check of each row that involves several roles (e.g. successes above trials).

    ``bad`` takes a function from a role to its column expression and returns an expression true
    on a bad row; ``message`` is formatted with the role → column names, ``count`` (the bad rows)
    and ``rows`` (all rows).
    """

    role: str
    bad: Callable[[Callable[[str], Any]], Any]
    message: str


class Family(ABC):
    """A likelihood for one group's data and a population distribution for its parameter theta."""

    name: ClassVar[str]
    description: ClassVar[str]
    # support of every hyperparameter name the family understands
    supports: ClassVar[dict[str, tuple[float, float]]]
    # the free hyperparameters of the partial-pooling model, in each accepted parametrization
    parametrizations: ClassVar[tuple[tuple[str, ...], ...]]
    # the population mean: the one shared theta under complete pooling
    location: ClassVar[str]
    theta_support: ClassVar[tuple[float, float]]
    # what a group's size counts, and what its raw estimate is (labels of plots and reports)
    size_label: ClassVar[str]
    raw_label: ClassVar[str]
    # what a group's size means in the words of error messages (simulation's group sizes)
    size_meaning: ClassVar[str]
    # the kind of theta's conditional posterior given the hyperparameters: normal, beta or gamma
    theta_kind: ClassVar[str]
    # the order of the sufficient statistics in the compiled models' inputs
    statistics: ClassVar[tuple[str, ...]]
    # priors of the hyperparameters that simulation is not given (no data to scale them to)
    simulation_priors: ClassVar[dict[str, Prior]]
    # how rows hold the family's data (the first is the one simulation writes)
    layouts: ClassVar[tuple[Layout, ...]]
    # checks of each row that involve several roles
    row_checks: ClassVar[tuple[RowCheck, ...]] = ()
    # the statistic whose zero says a group holds no data at all (None: no group can be empty)
    empty_role: ClassVar[str | None] = None
    # the statistics simulation is given (a group's size) and draws (its data), and whether the
    # sizes are whole numbers
    size_stat: ClassVar[str]
    data_stat: ClassVar[str]
    integer_sizes: ClassVar[bool] = False
    # the hyperparameter of the population's spread, in the words of a report's summary card
    spread: ClassVar[str]
    spread_words: ClassVar[str]
    # a report's model section: the model in words, and its formulas (HTML)
    symbols: ClassVar[tuple[str, tuple[str, ...]]]

    def free_names(self, pooling: str, prior_names: set[str]) -> tuple[str, ...]:
        """Hyperparameters a pooling leaves to be learned, in the parametrization the priors use."""
        if pooling == "none":
            return self.nuisance
        if pooling == "complete":
            return (self.location, *self.nuisance)
        for names in self.parametrizations:
            if prior_names & set(names):
                return names + self.nuisance
        return self.parametrizations[0] + self.nuisance

    def parametrization(self, names: set[str], arg: str) -> tuple[str, ...] | None:
        """Which parametrization of the population ``names`` use (None: none of them).

        Raises when a name is unknown or when names of two parametrizations are mixed.
        """
        for name in sorted(names):
            if name not in self.supports:
                raise ValueError(
                    f"{arg}: unknown hyperparameter {name!r} for the {self.name} family; "
                    f"valid names are {', '.join(sorted(self.supports))}"
                )
        hits = [group for group in self.parametrizations if names & set(group)]
        if len(hits) > 1:
            raise ValueError(
                f"{arg}: give the {self.name} population as ({', '.join(hits[0])}) or as "
                f"({', '.join(hits[1])}), not a mix"
            )
        return hits[0] if hits else None

    @property
    def nuisance(self) -> tuple[str, ...]:
        """Hyperparameters shared by all groups that are not part of the population (e.g. sigma)."""
        return ()

    @abstractmethod
    def complete(self, params: Params) -> Params:
        """Every hyperparameter name, derived from whichever parametrization ``params`` uses."""

    @abstractmethod
    def log_marginal(self, params: Params, stats: Stats, pooled: bool) -> np.ndarray:
        """log p(data_j | hyperparameters) less :meth:`constant`, theta_j integrated out (or
        shared, when ``pooled``)."""

    def log_marginal_total(
        self, params: Params, stats: Stats, weights: np.ndarray, pooled: bool
    ) -> np.ndarray:
        """``log_marginal`` summed over groups with ``weights`` (K,)."""
        return self.log_marginal(params, stats, pooled) @ weights

    def totals(self, stats: Stats, weights: np.ndarray) -> tuple[Stats, np.ndarray]:
        """Fewer weighted rows with the same :meth:`log_marginal_total` for every value of the
        hyperparameters (those of a family whose groups share it in closed form)."""
        return stats, weights

    def constant(self, stats: Stats) -> np.ndarray:
        """The part of each group's log likelihood that no hyperparameter changes (J,)."""
        return np.zeros(self.n(stats))

    @abstractmethod
    def conditional(
        self, params: Params, stats: Stats
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and shrinkage (population weight) of theta_j given the population."""

    def conditional_parameters(self, params: Params, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
        """The two parameters of theta_j's conditional posterior: (mean, variance) of a normal,
        or, where a family overrides this, (a, b) of a beta or (shape, rate) of a gamma."""
        mean, var, _ = self.conditional(params, stats)
        return mean, var

    @abstractmethod
    def sample_conditional(
        self, params: Params, stats: Stats, rng: np.random.Generator
    ) -> np.ndarray:
        """One draw of theta_j given each row of hyperparameters."""

    @abstractmethod
    def sample_population(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        """A new group's theta, one for each row of hyperparameters."""

    @abstractmethod
    def sample_data(
        self, theta: np.ndarray, size: np.ndarray, rng: np.random.Generator, params: Params
    ) -> np.ndarray:
        """Data of the given size (rows, trials, exposure or standard error) for each theta."""

    @abstractmethod
    def default_priors(self, stats: Stats) -> dict[str, Prior]:
        """Weakly informative priors scaled to the data, for the canonical parametrization."""

    @abstractmethod
    def initial(self, stats: Stats) -> dict[str, float]:
        """A rough estimate of every hyperparameter, to start the search for the mode."""

    @abstractmethod
    def unpooled(self, fixed: dict[str, float], priors: dict[str, Prior], stats: Stats) -> Params:
        """The fixed population every group gets alone under ``pooling="none"``."""

    @abstractmethod
    def raw(self, stats: Stats) -> np.ndarray:
        """Each group's own estimate of theta."""

    @abstractmethod
    def size(self, stats: Stats) -> np.ndarray:
        """How much data each group has: rows, trials, exposure or precision."""

    def location_scale(self, stats: Stats) -> float:
        """A typical scale of the data, for unbounded hyperparameters (1 for rates)."""
        return 1.0

    def pooled_conditional(
        self, params: Params, stats: Stats
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Complete pooling: every theta_j is the population location."""
        loc = np.broadcast_to(
            params[self.location], (params[self.location].shape[0], self.n(stats))
        )
        return loc, np.zeros_like(loc), np.ones_like(loc)

    def log_marginal_sum_jax(self, params: Mapping[str, Any], stats: tuple) -> Any:
        """The sum over groups of :meth:`log_marginal` (up to a constant) in jax, for NUTS;
        ``stats`` are the statistics in the order of :attr:`statistics`."""
        raise NotImplementedError(
            f"method='nuts': the {self.name} family has no log marginal likelihood in jax"
        )

    def notes(self, stats: Stats, free: tuple[str, ...]) -> list[str]:
        """What a fit should say about these data (or raise on data it cannot fit), given the
        free hyperparameters ``free``."""
        return []

    def size_columns(self, stats: Stats) -> dict[str, np.ndarray]:
        """The groups table's first columns: how much data each group has (``n``)."""
        size = self.size(stats)
        return {"n": size.astype(np.int64) if self.integer_sizes else size}

    def data_stats(self, data: np.ndarray, sizes: np.ndarray) -> Stats:
        """The statistics of groups with simulated ``data`` of the given sizes (enough for
        :meth:`raw`)."""
        return {self.data_stat: data, self.size_stat: sizes}

    def simulate_rows(
        self, theta: np.ndarray, sizes: np.ndarray, rng: np.random.Generator, params: Params
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Simulated rows as :func:`poolwise.fit` reads them: each row's group (an index into
        ``theta``) and its columns, named by their roles (one row per group by default)."""
        data = self.sample_data(theta, sizes, rng, params)
        if self.layouts[0].roles.get(self.data_stat) == "count":
            data = data.astype(np.int64)
        return np.arange(len(sizes)), {self.data_stat: data, self.size_stat: sizes}

    def reduce_rows(self, group: np.ndarray, columns: Mapping[str, np.ndarray]) -> Stats:
        """The statistics of rows from :meth:`simulate_rows` (groups 0..J-1 in order, no bad
        rows), in numpy: what :func:`poolwise.data.reduce` would give."""
        return {s: np.asarray(columns[s]) for s in self.statistics}

    def n(self, stats: Stats) -> int:
        """Number of groups."""
        return len(next(iter(stats.values())))
