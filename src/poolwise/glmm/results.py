"""GlmmFit: the PoolFit of a regression (draws by chain, summaries, prediction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._arviz import import_arviz
from ..fitdata import RegressionData
from ..intervals import hdi_from_draws
from ..results import PoolFit
from .predictive import inverse_link, linear_predictor_of


@dataclass(frozen=True, repr=False)
class GlmmFit(PoolFit, RegressionData):
    """A regression's fit (by the Laplace engine, empirical Bayes or NUTS). ``groups`` is indexed
    by (term, level); ``population`` holds the common effects, the group sds and sigma; ``draws``
    the posterior by chain.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7], "n": 10})
    >>> fit = poolwise.fit("p(k, n) ~ x + (1|g)", data=df, method="laplace", seed=1)
    >>> fit.groups.index.get_level_values("term").unique().tolist(), fit.factors
    (['1|g'], ('1|g',))
    """

    # the verbs of one factor, per group-specific term (``factor``: its name; None: the first)
    def plot_shrinkage(self, ax: Any = None, *, factor: str | None = None, **kwargs: Any) -> Any:
        """Raw level effect → pooled effect of one term's levels (marker area by the level's
        data); see :func:`poolwise.plots.plot_shrinkage`."""
        from ..plots import plot_shrinkage

        return plot_shrinkage(self.factor(factor), ax=ax, **kwargs)

    def plot_forest(self, ax: Any = None, *, factor: str | None = None, **kwargs: Any) -> Any:
        """Sorted caterpillar plot of one term's level effects; see :mod:`poolwise.plots`."""
        from ..plots import plot_forest

        return plot_forest(self.factor(factor), ax=ax, **kwargs)

    def plot_estimates(self, ax: Any = None, *, factor: str | None = None, **kwargs: Any) -> Any:
        """One term's pooled level effects and HDIs against the levels' sizes."""
        from ..plots import plot_estimates

        return plot_estimates(self.factor(factor), ax=ax, **kwargs)

    def ranks(
        self,
        top: int = 3,
        best: str = "high",
        prob: float | None = None,
        *,
        factor: str | None = None,
    ) -> pd.DataFrame:
        """League table of one term's levels by their effects: mean rank, rank interval,
        P(best), P(top k); see :func:`poolwise.ranks.ranks`."""
        from ..ranks import ranks

        return ranks(self.factor(factor), top=top, best=best, prob=prob)

    def simulate(
        self,
        draws: int = 1,
        seed: int | None = None,
        *,
        data: pd.DataFrame | None = None,
        unseen: str | None = None,
    ) -> pd.DataFrame:
        """Data sets replicated from the fitted model, the fit's own data or the rows of
        ``data`` (new levels by ``unseen``); see
        :func:`poolwise.glmm.predictive.replicate_regression`."""
        from .predictive import replicate_regression

        return replicate_regression(self, draws, seed, data=data, unseen=unseen)

    def check(self, statistic: str = "sd", draws: int = 1000, seed: int | None = None) -> Any:
        """Posterior predictive check on the cells; see
        :func:`poolwise.glmm.predictive.check_cells`."""
        from .predictive import check_cells

        return check_cells(self, statistic=statistic, draws=draws, seed=seed)

    def report(self, path: Any = "report.html", **kwargs: Any) -> Any:
        """Write the HTML report of the regression; see :func:`poolwise.glmm.report.report`."""
        from .report import report

        return report(self, path, **kwargs)

    def _header(self) -> list[str]:
        _, method, _, priors = super()._header()
        levels = ", ".join(f"{t.n_levels} of {t.factor}" for t in self.design.groups)
        return [
            f"GlmmFit: {self.formula}",
            f"  {self.family.description}",
            method,
            f"  levels: {levels or 'none'}; {self.design.n_cells} cells, {self.n_rows} rows; "
            f"{int(self.hdi_prob * 100)}% HDI",
            priors,
        ]

    def summary(self) -> pd.DataFrame:
        """One row per parameter (Bambi's names; ``term[level]`` for group effects): mean, sd,
        HDI, ess_bulk, ess_tail, r_hat."""
        return self.table.copy()

    def to_arviz(self) -> Any:
        """ArviZ ``InferenceData``: posterior by chain, with levels as coords, and sample stats."""
        az = import_arviz()
        dims = {k: [f"{k}_dim"] for k in self.coords}
        coords = {f"{k}_dim": v for k, v in self.coords.items()}
        return az.from_dict(
            posterior=dict(self.draws),
            sample_stats=dict(self.sample_stats),
            coords=coords,
            dims=dims,
            attrs={
                "family": self.family.name,
                "formula": self.formula,
                "method": self.method,
                "inference_library": "poolwise (numpyro NUTS)"
                if self.method == "nuts"
                else f"poolwise ({self.method}: Laplace engine)",
            },
        )

    def predict(
        self,
        data: Any = 1,
        *,
        unseen: str = "raise",
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Posterior of the mean outcome (probability, rate or mean) for each row of ``data``.

        ``unseen`` says what a level not in the fit gets: ``"raise"`` (a ValueError naming it),
        ``"population"`` (no deviation: the population mean) or ``"draw"`` (a new group's effect
        drawn from N(0, sd) per posterior draw, seeded by ``seed``; a correlated block
        ``(1 + x|g)`` draws a new level's intercept and slope together). Poisson rates are per
        unit of exposure.

        Example
        -------
        >>> import pandas as pd, poolwise
        >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7]})
        >>> fit = poolwise.fit("p(k, n) ~ x + (1|g)", data=df.assign(n=10), seed=1,
        ...                    priors={"1|g_sigma": 0.5}, draws=2000, progress=False)
        >>> new = pd.DataFrame({"g": ["a", "z"], "x": [1, 1]})
        >>> fit.predict(new, unseen="population").columns.tolist()
        ['mean', 'sd', 'hdi_low', 'hdi_high']
        """
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"predict: data must be a pandas DataFrame, got {type(data).__name__}")
        rng = np.random.default_rng([self.seed if seed is None else seed, 7])
        try:
            eta = linear_predictor_of(self, data, unseen, rng)
        except ValueError as err:
            raise ValueError(f"predict: {err}") from None
        mean = inverse_link(self.family.link, eta)
        lo, hi = hdi_from_draws(mean, self.hdi_prob)
        out = pd.DataFrame(
            {"mean": mean.mean(axis=0), "sd": mean.std(axis=0), "hdi_low": lo, "hdi_high": hi},
            index=data.index,
        )
        return out
