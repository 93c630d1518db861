"""The interface every family fills in: arrays in, arrays out; no dataframes here.

Shapes: hyperparameter values arrive as arrays of shape ``(K, 1)`` (K points of the hyperparameter
space) and group statistics as arrays of shape ``(J,)``, so every result is ``(K, J)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ..priors import Prior

Params = dict[str, np.ndarray]
Stats = dict[str, np.ndarray]


class Family(ABC):
    """A likelihood for one group's data and a population distribution for its parameter theta."""

    name: ClassVar[str]
    description: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
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

    def n(self, stats: Stats) -> int:
        """Number of groups."""
        return len(next(iter(stats.values())))
