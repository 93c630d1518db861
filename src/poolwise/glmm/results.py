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
from .design import new_codes

UNSEEN = ("raise", "population", "draw")


@dataclass(frozen=True, repr=False)
class GlmmFit(PoolFit, RegressionData):
    """A regression fitted by NUTS. ``groups`` is indexed by (term, level); ``population`` holds
    the common effects, the group sds and sigma; ``draws`` the posterior by chain.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7],
    ...                    "n": [10] * 6})
    >>> fit = poolwise.fit("p(k, n) ~ 1 + x + (1|g)", data=df, seed=1, draws=400, tune=300,
    ...                    progress=False)
    >>> list(fit.groups.index.get_level_values("term").unique())
    ['1|g']
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

    def _not_yet(self, verb: str) -> None:
        raise TypeError(
            f"{verb}() is not available for a formula fit yet; check, plot_population, and "
            "per term plot_shrinkage, plot_forest, plot_estimates and ranks (factor=) are, and "
            "fit.factor(term) is that term's levels as a one-factor record"
        )

    def simulate(self, draws: int = 1, seed: int | None = None) -> pd.DataFrame:
        """Not available for a formula fit yet (a TypeError that says so)."""
        self._not_yet("simulate")

    def check(self, statistic: str = "sd", draws: int = 1000, seed: int | None = None) -> Any:
        """Posterior predictive check on the cells; see :func:`poolwise.simulate.check_cells`."""
        from ..simulate import check_cells

        return check_cells(self, statistic=statistic, draws=draws, seed=seed)

    def report(self, path: Any = "report.html", **kwargs: Any) -> Any:
        """Not available for a formula fit yet (a TypeError that says so)."""
        self._not_yet("report")

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
        drawn from N(0, sd) per posterior draw, seeded by ``seed``). Poisson rates are per unit
        of exposure.

        Example
        -------
        >>> import pandas as pd, poolwise
        >>> df = pd.DataFrame({"g": list("aabb"), "y": [1.0, 1.2, 2.0, 2.2]})
        >>> fit = poolwise.fit("y ~ 1 + (1|g)", data=df, method="nuts", seed=1, draws=400,
        ...                    tune=300, progress=False)
        >>> fit.predict(pd.DataFrame({"g": ["c"]}), unseen="population").shape[0]
        1
        """
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"predict: data must be a pandas DataFrame, got {type(data).__name__}")
        if unseen not in UNSEEN:
            raise ValueError(
                f"unseen must be one of {', '.join(map(repr, UNSEEN))}, got {unseen!r}"
            )
        design, plan = self.design, self.plan
        rng = np.random.default_rng([self.seed if seed is None else seed, 7])
        frame = data.copy()
        common = design.matrices.common
        n_draws = (
            next(iter(self.draws.values())).shape[0] * next(iter(self.draws.values())).shape[1]
        )
        eta = np.zeros((n_draws, len(frame)))
        if common is not None and design.names:
            for col in common.terms:
                for var in getattr(common.terms[col], "var_names", ()):
                    if var and var not in frame:  # "" stands for a literal
                        if getattr(common.terms[col], "kind", None) == "offset":
                            frame[var] = 1.0
                        else:
                            raise ValueError(f"predict: no column {var!r} in the new data")
            X_all = np.asarray(common.evaluate_new_data(frame).design_matrix, dtype=float)
            cols = []
            for term_name, term in common.terms.items():
                if getattr(term, "kind", None) == "offset":
                    continue
                cols.append(X_all[:, common.slices[term_name]])
            X = np.hstack(cols)
            for i, name in enumerate(design.names):
                eta += self.draws[name].reshape(-1, 1) * X[:, i]
        for t in design.groups:
            for c in t.factor_columns + ((t.expr,) if t.expr != "1" else ()):
                if c not in frame:
                    raise ValueError(f"predict: no column {c!r} in the new data (term {t.name!r})")
            codes = new_codes(t, frame)
            b = self.draws[t.name].reshape(n_draws, t.n_levels)
            effect = b[:, np.maximum(codes, 0)]
            missing = codes < 0
            if missing.any():
                labels = sorted(
                    set(
                        np.asarray(frame[list(t.factor_columns)].astype(str).agg(":".join, axis=1))[
                            missing
                        ]
                    )
                )
                if unseen == "raise":
                    raise ValueError(
                        f"predict: level(s) {', '.join(map(repr, labels[:5]))} of {t.factor!r} "
                        "were not in the fit; pass unseen='population' (the population mean) "
                        "or unseen='draw' (a new group's effect drawn from the group sd)"
                    )
                if unseen == "population":
                    effect[:, missing] = 0.0
                else:
                    sd = (
                        self.draws[t.sigma_name].reshape(-1)
                        if t.sigma_name in self.draws
                        else np.full(n_draws, float(plan.terms[design.groups.index(t)].sd))
                    )
                    effect[:, missing] = sd[:, None] * rng.standard_normal(
                        (n_draws, int(missing.sum()))
                    )
            value = frame[t.expr].to_numpy(float) if t.expr != "1" else 1.0
            eta += effect * value
        mean = _inverse_link(self.family.link, eta)
        lo, hi = hdi_from_draws(mean, self.hdi_prob)
        out = pd.DataFrame(
            {"mean": mean.mean(axis=0), "sd": mean.std(axis=0), "hdi_low": lo, "hdi_high": hi},
            index=frame.index,
        )
        return out


def _inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    if link == "logit":
        return 1.0 / (1.0 + np.exp(-eta))
    if link == "log":
        return np.exp(eta)
    return eta
