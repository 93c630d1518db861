"""PoolFit: the one result type. Tables, draws, ArviZ data, predictions, and the verbs (plots,
ranks, simulation, checks, the report) as methods; no engine code."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .data import GroupStats
from .fitdata import FitData, as_type
from .intervals import hdi_from_draws, hdi_names
from .onefactor import fit_groups
from .priors import Prior


@dataclass(frozen=True, repr=False)
class PoolFit(FitData):
    """The result of :func:`poolwise.fit`.

    Attributes
    ----------
    groups : DataFrame indexed by group label: ``n``, ``raw``, ``mean``, ``sd``, ``hdi_low``,
        ``hdi_high``, ``shrinkage`` (the weight on the population, averaged over the posterior).
    population : DataFrame indexed by hyperparameter: ``mean``, ``sd`` (missing, NaN, where they
        do not exist: a heavy upper tail), ``median``, ``hdi_low``, ``hdi_high`` (empirical Bayes:
        the estimate, its standard error, the estimate again). The exact engine's medians and
        HDIs, and its groups' HDIs, come from the posterior's own mixture over its grid: the
        same numbers on every run, whatever the seed.
    family, pooling, method : what was fitted, and how (``method_reason`` says why).
    priors : the priors used, by hyperparameter (numbers are fixed values).
    warnings : plain-language problems found while fitting.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"student": list("ABC"), "k": [7, 3, 0], "n": [10, 5, 1]})
    >>> fit = poolwise.fit(df, group="student", successes="k", trials="n", priors={"a": 6, "b": 4})
    >>> fit.groups["mean"].round(3).tolist()
    [0.65, 0.6, 0.545]
    """

    @classmethod
    def of(cls, data: FitData) -> PoolFit:
        """The result object of a pipeline's record."""
        return as_type(data, cls)

    # ----------------------------------------------------------------- draws and ArviZ
    def _chains(self, draws: int) -> int:
        return 4 if draws % 4 == 0 and draws >= 8 else 1

    def to_arviz(self) -> Any:
        """ArviZ ``InferenceData`` with posterior draws of the hyperparameters and ``theta``.

        Draws of the exact engine are independent; they are laid out as 4 chains.
        """
        from ._arviz import import_arviz

        az = import_arviz()
        theta = self.theta_draws()
        draws = theta.shape[0]
        chains = self._chains(draws)
        group = self.groups.index.name or "group"
        posterior = {k: v.reshape(chains, -1) for k, v in self.hyper_draws.items()}
        posterior["theta"] = theta.reshape(chains, draws // chains, -1)
        return az.from_dict(
            posterior=posterior,
            observed_data={k: np.asarray(v) for k, v in self.observed.items()},
            coords={group: self.groups.index.to_numpy()},
            dims={"theta": [group], **{k: [group] for k in self.observed}},
            attrs={
                "family": self.family.name,
                "pooling": self.pooling,
                "method": self.method,
                "inference_library": "poolwise",
            },
        )

    # ----------------------------------------------------------------- prediction
    def predict(
        self,
        new_groups: int | list | pd.Index = 1,
        *,
        size: float | None = None,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Posterior predictive of theta (and of data of a given ``size``) in unseen groups.

        ``size`` is the number of rows (normal: the predicted group mean of that many rows),
        the standard error (known-se normal), the trials (binomial) or the exposure (Poisson).

        Example
        -------
        >>> import pandas as pd, poolwise
        >>> df = pd.DataFrame({"g": ["a", "b"], "k": [2, 8], "n": [10, 10]})
        >>> fit = poolwise.fit(df, group="g", successes="k", trials="n", priors={"a": 5, "b": 5})
        >>> float(fit.predict(1, seed=1).loc["new_0", "theta_mean"].round(1))
        0.5
        """
        labels = (
            [f"new_{i}" for i in range(new_groups)]
            if isinstance(new_groups, int)
            else list(new_groups)
        )
        if not labels:
            raise ValueError("new_groups: ask for at least one new group")
        rng = np.random.default_rng([self.seed if seed is None else seed, 2])
        params = {k: v[:, None] for k, v in self.hyper_draws.items()}
        rows = []
        for _ in labels:
            if self.pooling == "complete":
                theta = self.hyper_draws[self.family.location].copy()
            else:
                theta = self.family.sample_population(params, rng)
            row = _describe(theta, "theta", self.hdi_prob)
            if size is not None:
                data = self.family.sample_data(theta, np.asarray(size), rng, params)
                row.update(_describe(np.asarray(data, float).ravel(), "data", self.hdi_prob))
            rows.append(row)
        return pd.DataFrame(rows, index=pd.Index(labels, name=self.groups.index.name))

    # ----------------------------------------------------------------- display
    def summary(self) -> pd.DataFrame:
        """ArviZ-style table: hyperparameters then ``theta[label]``; mean, sd and HDI."""
        lo, hi = hdi_names(self.hdi_prob)
        pop = self.population[["mean", "sd", "hdi_low", "hdi_high"]]
        grp = self.groups[["mean", "sd", "hdi_low", "hdi_high"]].copy()
        grp.index = [f"theta[{label}]" for label in grp.index]
        out = pd.concat([pop, grp])
        return out.rename(columns={"hdi_low": lo, "hdi_high": hi})

    def _header(self) -> list[str]:
        priors = ", ".join(
            f"{k} ~ {v!r}" if isinstance(v, Prior) else f"{k} = {v}" for k, v in self.priors.items()
        )
        return [
            f"PoolFit: {self.family.description}",
            f"  pooling: {self.pooling}; method: {self.method} ({self.method_reason})",
            f"  {self.n_groups} groups, {self.n_rows} rows; {int(self.hdi_prob * 100)}% HDI",
            f"  priors: {priors or 'none (all fixed)'}",
        ]

    def __repr__(self) -> str:
        with pd.option_context("display.max_rows", 20, "display.width", 120):
            parts = [
                *self._header(),
                "",
                "Population",
                self.population.round(4).to_string(),
                "",
                "Groups",
                self.groups.round(4).to_string(max_rows=20),
            ]
        if self.warnings:
            parts += ["", "Warnings", *[f"  - {w}" for w in self.warnings]]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        import html

        head = "<br>".join(html.escape(line) for line in self._header())
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return (
            f"<div><p>{head}</p><h4>Population</h4>{self.population.round(4).to_html()}"
            f"<h4>Groups</h4>{self.groups.round(4).to_html(max_rows=20)}"
            + (f"<h4>Warnings</h4><ul>{warn}</ul>" if warn else "")
            + "</div>"
        )

    # ----------------------------------------------------------------- seeing and simulating
    def plot_shrinkage(self, ax: Any = None, **kwargs: Any) -> Any:
        """Raw estimate → pooled estimate per group; see :func:`poolwise.plots.plot_shrinkage`."""
        from .plots import plot_shrinkage

        return plot_shrinkage(self, ax=ax, **kwargs)

    def plot_estimates(self, ax: Any = None, **kwargs: Any) -> Any:
        """Estimates and HDIs against group size, unpooled and pooled; see :mod:`poolwise.plots`.

        The other poolings (``poolings``, default no and partial pooling) are fitted to the same
        group statistics and priors; with a single ``ax`` only this fit is drawn."""
        from .plots import plot_estimates

        if ax is not None and not isinstance(ax, list | tuple | np.ndarray):
            return plot_estimates({self.pooling: self}, ax=ax, **kwargs)
        poolings = kwargs.pop("poolings", ("none", "partial"))
        return plot_estimates(self.poolings(poolings), ax=ax, poolings=poolings, **kwargs)

    def poolings(self, poolings: tuple[str, ...] = ("none", "partial")) -> dict[str, FitData]:
        """This fit and the same data and priors under the other ``poolings`` (by name)."""
        return {p: self if p == self.pooling else self._pooled(p) for p in poolings}

    def plot_forest(self, ax: Any = None, **kwargs: Any) -> Any:
        """Sorted caterpillar plot of the groups; see :func:`poolwise.plots.plot_forest`."""
        from .plots import plot_forest

        return plot_forest(self, ax=ax, **kwargs)

    def plot_population(self, ax: Any = None, **kwargs: Any) -> Any:
        """Posterior (and prior) of the hyperparameters; see :func:`poolwise.plots.plot_population`."""
        from .plots import plot_population

        return plot_population(self, ax=ax, **kwargs)

    def ranks(self, top: int = 3, best: str = "high", prob: float | None = None) -> pd.DataFrame:
        """League table: mean rank, rank interval, P(best), P(top k); see :func:`poolwise.ranks.ranks`."""
        from .ranks import ranks

        return ranks(self, top=top, best=best, prob=prob)

    def simulate(self, draws: int = 1, seed: int | None = None) -> pd.DataFrame:
        """Replicated data from the posterior predictive; see :func:`poolwise.simulate.replicate`."""
        from .simulate import replicate

        return replicate(self, draws=draws, seed=seed)

    def check(self, statistic: str = "sd", draws: int = 1000, seed: int | None = None) -> Any:
        """Posterior predictive check of the raw estimates; see :func:`poolwise.simulate.check`."""
        from .simulate import check

        return check(self, statistic=statistic, draws=draws, seed=seed)

    def report(self, path: Any = "report.html", **kwargs: Any) -> Any:
        """Write a self-contained HTML report; see :func:`poolwise.report.report`."""
        from .report import report

        return report(self, path, poolings=self.poolings(), **kwargs)

    @cached_property
    def _refits(self) -> dict[str, FitData]:
        return {}

    def _pooled(self, pooling: str) -> FitData:
        """The same data and priors under another pooling (computed once)."""
        if pooling not in self._refits:
            priors = {
                k: v
                for k, v in self.priors.items()
                if isinstance(v, Prior)
                or (self.pooling == "partial" and isinstance(v, int | float))
            }
            stats = GroupStats(
                labels=self.groups.index,
                stats=dict(self.observed),
                n_rows=self.n_rows,
                group=self.groups.index.name or "group",
            )
            draws = min(len(next(iter(self.hyper_draws.values()), [0])) or 1000, 1000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the user sees the warnings of the fit they asked
                self._refits[pooling] = fit_groups(
                    stats,
                    self.family.name,
                    pooling=pooling,
                    method="auto",
                    priors=priors,
                    draws=draws,
                    hdi_prob=self.hdi_prob,
                    seed=self.seed,
                )
        return self._refits[pooling]


def _describe(x: np.ndarray, prefix: str, prob: float) -> dict[str, float]:
    lo, hi = hdi_from_draws(x[:, None], prob)
    return {
        f"{prefix}_mean": float(np.mean(x)),
        f"{prefix}_sd": float(np.std(x)),
        f"{prefix}_hdi_low": float(lo[0]),
        f"{prefix}_hdi_high": float(hi[0]),
    }
