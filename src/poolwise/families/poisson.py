"""Poisson counts over an exposure with a gamma population of rates."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._lazy import gammaln, xlogy
from ..priors import HalfNormal, Lomax, Prior
from .base import Family, Layout, RowCheck
from .special import log_rising, log_rising_jax

INF = math.inf


class Poisson(Family):
    """c_j ~ Poisson(theta_j E_j), theta_j ~ Gamma(shape alpha, rate beta); mu = alpha/beta, kappa = alpha.

    Example
    -------
    >>> fam = Poisson()
    >>> s = {"counts": np.array([5, 1]), "exposure": np.array([94.3, 15.7])}
    >>> mean = fam.conditional({"alpha": np.array([[1.0]]), "beta": np.array([[1.0]])}, s)[0]
    >>> [round(float(m), 4) for m in mean[0]]
    [0.063, 0.1198]
    """

    name = "poisson"
    description = "Poisson counts over exposure, gamma population"
    size_label = "exposure"
    raw_label = "counts / exposure"
    size_meaning = "exposures per group (positive numbers)"
    theta_kind = "gamma"
    statistics = ("counts", "exposure")
    simulation_priors: ClassVar[dict[str, Prior]] = {
        "mu": HalfNormal(1.0),
        "kappa": Lomax(0.5, 1.0),
    }
    # exposure left out: one unit per row
    layouts = (Layout({"counts": "count", "exposure": "nonnegative"}, "sums", {"exposure": 1.0}),)
    row_checks = (
        RowCheck(
            "counts",
            lambda col: (col("exposure") == 0) & (col("counts") > 0),
            "exposure: column {exposure!r} is zero where counts column {counts!r} is positive "
            "in {count} of {rows} rows (events need exposure)",
        ),
    )
    empty_role = "exposure"
    size_stat, data_stat = "exposure", "counts"
    spread, spread_words = "kappa", "concentration (prior strength)"
    symbols = (
        "Group <i>j</i> has c<sub>j</sub> events over an exposure E<sub>j</sub> at its own rate "
        "θ<sub>j</sub>; the rates are drawn from a gamma population with mean μ and shape κ.",
        (
            "c<sub>j</sub> ~ Poisson(θ<sub>j</sub> E<sub>j</sub>)",
            "θ<sub>j</sub> ~ Gamma(α, β), α = κ, β = κ / μ",
            "E[θ<sub>j</sub> | α, β] = (α + c<sub>j</sub>) / (β + E<sub>j</sub>), "
            "shrinkage B<sub>j</sub> = β / (β + E<sub>j</sub>)",
        ),
    )
    supports: ClassVar[dict[str, tuple[float, float]]] = {
        "mu": (0.0, INF),
        "kappa": (0.0, INF),
        "alpha": (0.0, INF),
        "beta": (0.0, INF),
    }
    parametrizations: ClassVar[tuple[tuple[str, ...], ...]] = (("mu", "kappa"), ("alpha", "beta"))
    location: ClassVar[str] = "mu"
    theta_support: ClassVar[tuple[float, float]] = (0.0, INF)

    def complete(self, params):
        p = dict(params)
        if "alpha" in p and "beta" in p:
            p["kappa"] = p["alpha"]
            p["mu"] = p["alpha"] / p["beta"]
        elif "kappa" in p:
            p["alpha"] = p["kappa"]
            p["beta"] = p["kappa"] / p["mu"]
        return p

    def log_marginal(self, params, stats, pooled):
        c, e = stats["counts"], stats["exposure"]
        if pooled:
            mu = params["mu"]
            return xlogy(c, mu) - mu * e
        alpha, beta = params["alpha"], params["beta"]
        return log_rising(alpha, c) - alpha * np.log1p(e / beta) - c * np.log(beta + e)

    def log_marginal_sum_jax(self, params, stats):
        import jax.numpy as jnp

        c, e = stats
        alpha, beta = params["alpha"], params["beta"]
        return jnp.sum(
            log_rising_jax(alpha, c) - alpha * jnp.log1p(e / beta) - c * jnp.log(beta + e)
        )

    def constant(self, stats):
        c, e = stats["counts"], stats["exposure"]
        return xlogy(c, e) - gammaln(c + 1)

    def conditional(self, params, stats):
        c, e = stats["counts"], stats["exposure"]
        shape, rate = params["alpha"] + c, params["beta"] + e
        return shape / rate, shape / rate**2, params["beta"] / rate

    def conditional_parameters(self, params, stats):
        """theta_j | alpha, beta, data ~ Gamma(alpha + c_j, beta + E_j) (shape, rate)."""
        return params["alpha"] + stats["counts"], params["beta"] + stats["exposure"]

    def sample_conditional(self, params, stats, rng):
        c, e = stats["counts"], stats["exposure"]
        shape = np.broadcast_to(params["alpha"] + c, (params["alpha"].shape[0], len(c)))
        return rng.gamma(shape) / (params["beta"] + e)

    def sample_population(self, params, rng):
        return rng.gamma(np.ravel(params["alpha"])) / np.ravel(params["beta"])

    def sample_data(self, theta, size, rng, params):
        """Counts over an exposure of ``size``."""
        return rng.poisson(theta * size)

    def default_priors(self, stats):
        return {"mu": HalfNormal(2.5 * self._pooled_rate(stats)), "kappa": Lomax(0.5, 1.0)}

    def unpooled(self, fixed, priors, stats):
        p = {k: np.array([[v]]) for k, v in fixed.items()}
        if not (("alpha" in p and "beta" in p) or ("mu" in p and "kappa" in p)):
            p = {"mu": np.array([[self._pooled_rate(stats)]]), "kappa": np.array([[0.5]])}
        return self.complete(p)

    def initial(self, stats):
        p = self.complete({"mu": np.array(self._pooled_rate(stats)), "kappa": np.array(1.0)})
        return {name: float(v) for name, v in p.items()}

    def raw(self, stats):
        with np.errstate(invalid="ignore", divide="ignore"):
            return stats["counts"] / stats["exposure"]

    def size(self, stats):
        return stats["exposure"].astype(float)

    @staticmethod
    def _pooled_rate(stats) -> float:
        counts, exposure = float(stats["counts"].sum()), float(stats["exposure"].sum())
        return max(counts, 0.5) / exposure
