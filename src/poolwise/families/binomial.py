"""Binomial successes out of trials with a beta population of rates."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .._lazy import gammaln, xlog1py, xlogy
from ..priors import Beta, Lomax, Prior
from .base import Family, Layout, RowCheck
from .special import log_rising, log_rising_jax

INF = math.inf


def _log_choose(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


class Binomial(Family):
    """k_j ~ Binomial(n_j, theta_j), theta_j ~ Beta(a, b) with a = phi kappa, b = (1 - phi) kappa.

    Example
    -------
    >>> fam = Binomial()
    >>> s = {"successes": np.array([70, 0]), "trials": np.array([100, 1])}
    >>> fam.conditional({"a": np.array([[6.0]]), "b": np.array([[4.0]])}, s)[0].round(3)
    array([[0.691, 0.545]])
    """

    name = "binomial"
    description = "binomial successes out of trials, beta population"
    size_label = "trials"
    raw_label = "successes / trials"
    size_meaning = "trials per group (positive integers)"
    theta_kind = "beta"
    statistics = ("successes", "trials")
    simulation_priors: ClassVar[dict[str, Prior]] = {
        "phi": Beta(2.0, 2.0),
        "kappa": Lomax(0.5, 1.0),
    }
    layouts = (Layout({"successes": "count", "trials": "count"}, "sums"),)
    row_checks = (
        RowCheck(
            "successes",
            lambda col: col("successes") > col("trials"),
            "successes: column {successes!r} exceeds trials column {trials!r} in {count} of "
            "{rows} rows",
        ),
    )
    empty_role = "trials"
    size_stat, data_stat, integer_sizes = "trials", "successes", True
    spread, spread_words = "kappa", "concentration (prior strength)"
    symbols = (
        "Group <i>j</i> has k<sub>j</sub> successes in n<sub>j</sub> trials at its own rate "
        "θ<sub>j</sub>; the rates are drawn from a beta population with mean φ and concentration "
        "κ = a + b, the population's weight counted in trials.",
        (
            "k<sub>j</sub> ~ Binomial(n<sub>j</sub>, θ<sub>j</sub>)",
            "θ<sub>j</sub> ~ Beta(a, b), a = φκ, b = (1 − φ)κ",
            "E[θ<sub>j</sub> | a, b] = (a + k<sub>j</sub>) / (a + b + n<sub>j</sub>), "
            "shrinkage B<sub>j</sub> = κ / (κ + n<sub>j</sub>)",
        ),
    )
    supports: ClassVar[dict[str, tuple[float, float]]] = {
        "phi": (0.0, 1.0),
        "kappa": (0.0, INF),
        "a": (0.0, INF),
        "b": (0.0, INF),
    }
    parametrizations: ClassVar[tuple[tuple[str, ...], ...]] = (("phi", "kappa"), ("a", "b"))
    location: ClassVar[str] = "phi"
    theta_support: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def complete(self, params):
        p = dict(params)
        if "a" in p and "b" in p:
            p["kappa"] = p["a"] + p["b"]
            p["phi"] = p["a"] / p["kappa"]
        elif "kappa" in p:
            p["a"] = p["phi"] * p["kappa"]
            p["b"] = (1.0 - p["phi"]) * p["kappa"]
        return p

    def log_marginal(self, params, stats, pooled):
        k, n = stats["successes"], stats["trials"]
        if pooled:
            phi = params["phi"]
            return xlogy(k, phi) + xlog1py(n - k, -phi)
        a, b = params["a"], params["b"]
        return log_rising(a, k) + log_rising(b, n - k) - log_rising(a + b, n)

    def log_marginal_sum_jax(self, params, stats):
        import jax.numpy as jnp

        k, n = stats
        a, b = params["a"], params["b"]
        return jnp.sum(log_rising_jax(a, k) + log_rising_jax(b, n - k) - log_rising_jax(a + b, n))

    def log_marginal_total(self, params, stats, weights, pooled):
        if "term" not in stats:
            return super().log_marginal_total(params, stats, weights, pooled)
        value, term = stats["value"], stats["term"]
        if pooled:
            phi = params["phi"][:, 0]
            counts = value * weights
            return xlogy(counts[term == 0].sum(), phi) + xlog1py(counts[term == 1].sum(), -phi)
        a, b = params["a"], params["b"]
        shape = np.where(term == 0, a, np.where(term == 1, b, a + b))
        return log_rising(shape, value) @ weights

    def totals(self, stats, weights):
        """The log marginal is a sum of log rising factorials of a at k, of b at n − k and (with
        a minus sign) of a + b at n, each depending on one count alone: a histogram of each
        count (``value``, ``term`` 0, 1, 2; weights its multiplicity, negative for term 2) gives
        the same total in O(distinct counts)."""
        k, n = stats["successes"], stats["trials"]
        value, term, counts = [], [], []
        for t, (x, sign) in enumerate(((k, 1.0), (n - k, 1.0), (n, -1.0))):
            v, inverse = np.unique(x, return_inverse=True)
            value.append(v)
            term.append(np.full(v.size, t))
            counts.append(sign * np.bincount(inverse, weights=weights))
        value = np.concatenate(value)
        if value.size > 0.5 * k.size:
            return stats, weights
        return {"value": value, "term": np.concatenate(term)}, np.concatenate(counts)

    def constant(self, stats):
        return _log_choose(stats["trials"], stats["successes"])

    def conditional(self, params, stats):
        k, n = stats["successes"], stats["trials"]
        a1, b1 = params["a"] + k, params["b"] + n - k
        total = a1 + b1
        mean = a1 / total
        var = mean * (b1 / total) / (total + 1.0)
        kappa = params["a"] + params["b"]
        return mean, var, kappa / (kappa + n)

    def conditional_parameters(self, params, stats):
        """theta_j | a, b, data ~ Beta(a + k_j, b + n_j - k_j)."""
        k, n = stats["successes"], stats["trials"]
        return params["a"] + k, params["b"] + n - k

    def sample_conditional(self, params, stats, rng):
        k, n = stats["successes"], stats["trials"]
        # a or b rounds to 0 when phi is estimated at 0 or 1 (all failures or all successes):
        # the conditional is then a point mass, which the smallest positive parameter draws
        tiny = np.finfo(float).tiny
        a1 = np.broadcast_to(np.maximum(params["a"] + k, tiny), (params["a"].shape[0], len(k)))
        return rng.beta(a1, np.maximum(params["b"] + n - k, tiny))

    def sample_population(self, params, rng):
        return rng.beta(np.ravel(params["a"]), np.ravel(params["b"]))

    def sample_data(self, theta, size, rng, params):
        """Successes out of ``size`` trials."""
        return rng.binomial(np.asarray(size, dtype=np.int64), theta)

    def default_priors(self, stats):
        return {"phi": Beta(1.0, 1.0), "kappa": Lomax(0.5, 1.0)}

    def unpooled(self, fixed, priors, stats):
        p = {k: np.array([[v]]) for k, v in fixed.items()}
        if not (("a" in p and "b" in p) or ("phi" in p and "kappa" in p)):
            p = {"a": np.array([[1.0]]), "b": np.array([[1.0]])}
        return self.complete(p)

    def initial(self, stats):
        k, n = stats["successes"].sum(), stats["trials"].sum()
        phi = min(max((k + 0.5) / (n + 1.0), 1e-3), 1 - 1e-3)
        p = self.complete({"phi": np.array(phi), "kappa": np.array(10.0)})
        return {name: float(v) for name, v in p.items()}

    def raw(self, stats):
        with np.errstate(invalid="ignore", divide="ignore"):
            return stats["successes"] / stats["trials"]

    def size(self, stats):
        return stats["trials"].astype(float)
