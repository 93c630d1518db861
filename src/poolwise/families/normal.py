"""Normal outcomes: rows with unknown within-group sd, or estimates with known standard errors."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from ..priors import HalfNormal, Normal, Prior
from .base import Family, Layout, Params, Stats

LOG_2PI = math.log(2.0 * math.pi)
INF = math.inf


def _shrink(mean: np.ndarray, noise_var: np.ndarray, mu: np.ndarray, tau: np.ndarray):
    """Conditional N(m, v) of theta given an estimate with variance ``noise_var`` and N(mu, tau²)
    (in place where the arrays are (points x groups): fresh ones cost as much as the arithmetic)."""
    tau2 = tau**2
    total = noise_var + tau2
    with np.errstate(invalid="ignore", divide="ignore"):
        shrinkage = np.divide(noise_var, total, out=np.empty_like(total))
    if not np.all(np.isfinite(shrinkage)):  # tau = inf (no pooling) or no variance at all
        shrinkage = np.where(np.isinf(tau2), 0.0, np.where(total == 0, 1.0, shrinkage))
    shape = np.broadcast_shapes(np.shape(mu), np.shape(mean))
    m = np.subtract(mu, mean, out=total if total.shape == shape == shrinkage.shape else None)
    m = np.multiply(shrinkage, m, out=m if m.shape == shrinkage.shape else None)
    m += mean
    v = shrinkage * noise_var
    np.subtract(noise_var, v, out=v)
    return m, v, shrinkage


def _log_normal_density(x, mu, var):
    with np.errstate(divide="ignore"):
        return -0.5 * (LOG_2PI + np.log(var) + (x - mu) ** 2 / var)


def _default_location_priors(center: float, scale: float) -> dict[str, Prior]:
    if not (math.isfinite(scale) and scale > 0):
        scale = max(abs(center), 1.0)
    return {"mu": Normal(float(center), 2.5 * scale), "tau": HalfNormal(2.5 * scale)}


def _unpooled_location(fixed: dict[str, float], priors: dict[str, Prior]) -> Params:
    mu_prior = priors.get("mu")
    mu = fixed.get("mu", mu_prior.mu if isinstance(mu_prior, Normal) else 0.0)
    tau = fixed.get("tau", mu_prior.sigma if isinstance(mu_prior, Normal) else INF)
    return {"mu": np.array([[mu]]), "tau": np.array([[tau]])}


class _NormalBase(Family):
    location: ClassVar[str] = "mu"
    theta_support: ClassVar[tuple[float, float]] = (-INF, INF)
    parametrizations: ClassVar[tuple[tuple[str, ...], ...]] = (("mu", "tau"),)
    spread, spread_words = "tau", "between-group sd"

    def complete(self, params: Params) -> Params:
        return dict(params)

    def location_scale(self, stats: Stats) -> float:
        return self.default_priors(stats)["tau"].sigma / 2.5

    def location_estimates(self, stats: Stats) -> tuple[np.ndarray, np.ndarray | None]:
        """Each group's estimate of theta (J,), and its ``excess`` (J,) or None: see
        :meth:`location_terms`."""
        raise NotImplementedError

    def location_terms(
        self, params: Params, stats: Stats, weights: np.ndarray, pooled: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(V, rest)``: V (K, J) and rest (K,) such that the groups' log marginal summed with
        ``weights`` is rest + Σ_j w_j (log N(estimate_j; mu, V_j) - excess_j / V_j).

        ``mu`` enters only through the normal terms, so it can be integrated out in closed form.
        """
        raise NotImplementedError

    def sample_conditional(self, params, stats, rng):
        m, v, _ = self.conditional(params, stats)
        return m + np.sqrt(v) * rng.standard_normal(m.shape)

    def sample_population(self, params, rng):
        mu, tau = np.ravel(params["mu"]), np.ravel(params["tau"])
        return mu + tau * rng.standard_normal(mu.shape)


class NormalRows(_NormalBase):
    """y_ji ~ N(theta_j, sigma²), theta_j ~ N(mu, tau²); statistics n, mean and M2 per group.

    Example
    -------
    >>> fam = NormalRows()
    >>> s = {"n": np.array([2, 3]), "mean": np.array([1.0, 2.0]), "m2": np.array([0.5, 2.0])}
    >>> p = {"mu": np.array([[1.5]]), "tau": np.array([[1.0]]), "sigma": np.array([[1.0]])}
    >>> fam.conditional(p, s)[2].round(3)
    array([[0.333, 0.25 ]])
    """

    name = "normal"
    description = "normal rows, unknown within-group sd"
    size_label = "rows"
    raw_label = "group mean"
    size_meaning = "rows per group (positive integers)"
    theta_kind = "normal"
    statistics = ("n", "mean", "m2")
    simulation_priors: ClassVar[dict[str, Prior]] = {
        "mu": Normal(0.0, 1.0),
        "tau": HalfNormal(1.0),
        "sigma": HalfNormal(1.0),
    }
    supports: ClassVar[dict[str, tuple[float, float]]] = {
        "mu": (-INF, INF),
        "tau": (0.0, INF),
        "sigma": (0.0, INF),
    }
    # raw rows, or one row per group (or part of one) with its size, mean and sd
    layouts = (
        Layout({"y": "real"}, "moments"),
        Layout({"y": "real", "n": "size", "sd": "sd"}, "summaries"),
    )
    size_stat, data_stat, integer_sizes = "n", "mean", True
    symbols = (
        "Each row of group <i>j</i> is normal around the group's mean θ<sub>j</sub>, with a "
        "within-group standard deviation σ shared by all groups. The group means are drawn from a "
        "normal population with mean μ and standard deviation τ (the between-group spread).",
        (
            "y<sub>ij</sub> ~ Normal(θ<sub>j</sub>, σ²)",
            "θ<sub>j</sub> ~ Normal(μ, τ²)",
            "shrinkage B<sub>j</sub> = σ² / (σ² + n<sub>j</sub> τ²), "
            "E[θ<sub>j</sub>] = B<sub>j</sub> μ + (1 − B<sub>j</sub>) ȳ<sub>j</sub>",
        ),
    )

    @property
    def nuisance(self) -> tuple[str, ...]:
        return ("sigma",)

    def log_marginal(self, params, stats, pooled):
        n, m2 = stats["n"], stats["m2"]
        sigma2 = params["sigma"] ** 2
        within = -0.5 * (n - 1) * np.log(sigma2) - m2 / (2 * sigma2)
        v = (0.0 if pooled else params["tau"] ** 2) + sigma2 / n
        if np.all(np.isinf(v)):
            return within
        return within + _log_normal_density(stats["mean"], params["mu"], v)

    def log_marginal_sum_jax(self, params, stats):
        import jax.numpy as jnp

        n, ybar, m2 = stats
        s2 = params["sigma"] ** 2
        var = params["tau"] ** 2 + s2 / n
        within = -0.5 * (n - 1) * jnp.log(s2) - m2 / (2 * s2)
        return jnp.sum(within - 0.5 * (jnp.log(var) + (ybar - params["mu"]) ** 2 / var))

    def notes(self, stats, free):
        """Refuse data with no within-group spread; say when sigma rests on the priors."""
        if "sigma" not in free:
            return []
        n, m2 = np.asarray(stats["n"]), np.asarray(stats["m2"])
        if np.all(n == 1):
            return [
                "every group has a single observation, so the within-group sd (sigma) cannot be "
                "told apart from the between-group sd (tau): the spread of the pooled groups "
                "fixes tau² + sigma², and how it splits between them follows their priors"
            ]
        if not np.any(m2 > 0):
            raise ValueError(
                "y: the values are identical within every group that has more than one row, so "
                "the within-group sd (sigma) would be estimated as zero and the posterior is "
                "improper; give sigma a fixed value (priors={'sigma': ...}) or check the column"
            )
        return []

    def simulate_rows(self, theta, sizes, rng, params):
        """``size`` rows of each group."""
        idx = np.repeat(np.arange(len(sizes)), sizes)
        sigma = float(np.ravel(params["sigma"])[0])
        return idx, {"y": theta[idx] + sigma * rng.standard_normal(len(idx))}

    def reduce_rows(self, group, columns):
        y = np.asarray(columns["y"], dtype=np.float64)
        n = np.bincount(group)
        mean = np.bincount(group, weights=y) / n
        m2 = np.bincount(group, weights=(y - mean[group]) ** 2)
        return {"n": n.astype(np.int64), "mean": mean, "m2": m2}

    def log_marginal_total(self, params, stats, weights, pooled):
        # the within-group part sums in closed form: only the group means need a pass over groups
        n, ybar, m2 = stats["n"], stats["mean"], stats["m2"]
        sigma2 = params["sigma"] ** 2
        within = -0.5 * np.log(sigma2) * ((n - 1) @ weights) - (m2 @ weights) / (2 * sigma2)
        tau2 = 0.0 if pooled else params["tau"] ** 2
        if np.all(np.isinf(tau2)):
            return within[:, 0]
        v = tau2 + sigma2 / n
        out = within[:, 0] + _log_normal_density(ybar, params["mu"], v) @ weights
        if "spread" in stats:
            out -= (stats["spread"] / (2 * v)) @ weights
        return out

    def totals(self, stats, weights):
        """Groups of one size n share the variance of their means, tau² + sigma²/n: per size,
        their weighted mean, the mean M2 and the spread of the means about it (``spread``) give
        the same total, log N(ȳ; mu, V) summing to W log N(c; mu, V) - W spread / (2 V)."""
        n = stats["n"]
        sizes, inverse = np.unique(n, return_inverse=True)
        if sizes.size > 0.5 * n.size:
            return stats, weights
        total = np.bincount(inverse, weights=weights)
        mean = np.bincount(inverse, weights=weights * stats["mean"]) / total
        spread = np.bincount(inverse, weights=weights * (stats["mean"] - mean[inverse]) ** 2)
        m2 = np.bincount(inverse, weights=weights * stats["m2"]) / total
        compact = {"n": sizes, "mean": mean, "m2": m2, "spread": spread / total}
        return compact, total

    def location_estimates(self, stats):
        # rows of :meth:`totals`: groups' means spread about their size's mean by ``spread``
        spread = stats.get("spread")
        return stats["mean"], None if spread is None else 0.5 * spread

    def location_terms(self, params, stats, weights, pooled):
        n, m2 = stats["n"], stats["m2"]
        sigma2 = params["sigma"][:, 0] ** 2
        tau2 = 0.0 if pooled else params["tau"] ** 2
        v = tau2 + (sigma2[:, None] / n)
        rest = -0.5 * np.log(sigma2) * ((n - 1) @ weights) - (m2 @ weights) / (2 * sigma2)
        return v, rest

    def conditional(self, params, stats):
        return _shrink(
            stats["mean"], params["sigma"] ** 2 / stats["n"], params["mu"], params["tau"]
        )

    def sample_data(self, theta, size, rng, params):
        """The mean of ``size`` new rows."""
        return theta + params["sigma"] / np.sqrt(size) * rng.standard_normal(np.shape(theta))

    def default_priors(self, stats):
        n, ybar, m2 = stats["n"], stats["mean"], stats["m2"]
        total = n.sum()
        grand = float(np.sum(n * ybar) / total)
        ss = float(m2.sum() + np.sum(n * (ybar - grand) ** 2))
        scale = math.sqrt(ss / max(total - 1, 1))
        priors = _default_location_priors(grand, scale)
        priors["sigma"] = HalfNormal(priors["tau"].sigma)
        return priors

    def unpooled(self, fixed, priors, stats):
        return _unpooled_location(fixed, priors)

    def initial(self, stats):
        n, ybar, m2 = stats["n"], stats["mean"], stats["m2"]
        scale = self.location_scale(stats)
        dof = float(np.sum(n - 1))
        sigma = math.sqrt(float(m2.sum()) / dof) if dof > 0 and m2.sum() > 0 else scale
        return {
            "mu": float(np.average(ybar, weights=n)),
            "tau": max(float(np.std(ybar)), 0.1 * scale),
            "sigma": sigma,
        }

    def raw(self, stats):
        return stats["mean"].astype(float)

    def size(self, stats):
        return stats["n"].astype(float)


class NormalKnownSE(_NormalBase):
    """y_j ~ N(theta_j, se_j²) with se_j known, theta_j ~ N(mu, tau²): meta-analysis, eight schools.

    Example
    -------
    >>> fam = NormalKnownSE()
    >>> s = {"y": np.array([28.0, 8.0]), "se": np.array([15.0, 10.0])}
    >>> p = {"mu": np.array([[0.0]]), "tau": np.array([[10.0]])}
    >>> fam.conditional(p, s)[0].round(2)
    array([[8.62, 4.  ]])
    """

    name = "normal_se"
    description = "normal estimates with known standard errors"
    size_label = "precision 1/se²"
    raw_label = "estimate y"
    size_meaning = "standard errors of the group estimates (positive numbers)"
    theta_kind = "normal"
    statistics = ("y", "se")
    simulation_priors: ClassVar[dict[str, Prior]] = {"mu": Normal(0.0, 1.0), "tau": HalfNormal(1.0)}
    supports: ClassVar[dict[str, tuple[float, float]]] = {"mu": (-INF, INF), "tau": (0.0, INF)}
    layouts = (Layout({"y": "real", "se": "positive"}, "single"),)
    size_stat, data_stat = "se", "y"
    symbols = (
        "Each group reports an estimate y<sub>j</sub> with a known standard error "
        "s<sub>j</sub>; the true effects θ<sub>j</sub> are drawn from a normal population with "
        "mean μ and standard deviation τ (the between-group spread).",
        (
            "y<sub>j</sub> ~ Normal(θ<sub>j</sub>, s<sub>j</sub>²)",
            "θ<sub>j</sub> ~ Normal(μ, τ²)",
            "shrinkage B<sub>j</sub> = s<sub>j</sub>² / (s<sub>j</sub>² + τ²), "
            "E[θ<sub>j</sub>] = B<sub>j</sub> μ + (1 − B<sub>j</sub>) y<sub>j</sub>",
        ),
    )

    def log_marginal(self, params, stats, pooled):
        tau2 = 0.0 if pooled else params["tau"] ** 2
        if np.all(np.isinf(tau2)):
            return np.zeros((params["mu"].shape[0], self.n(stats)))
        return _log_normal_density(stats["y"], params["mu"], tau2 + stats["se"] ** 2)

    def log_marginal_sum_jax(self, params, stats):
        import jax.numpy as jnp

        y, se = stats
        var = params["tau"] ** 2 + se**2
        return jnp.sum(-0.5 * (jnp.log(var) + (y - params["mu"]) ** 2 / var))

    def size_columns(self, stats):
        """Each group is one estimate, with its standard error."""
        return {"n": np.ones(self.n(stats), int), "se": stats["se"]}

    def location_estimates(self, stats):
        return stats["y"], None

    def location_terms(self, params, stats, weights, pooled):
        tau2 = 0.0 if pooled else params["tau"] ** 2
        return tau2 + stats["se"] ** 2, np.zeros(params["mu"].shape[0])

    def conditional(self, params, stats):
        return _shrink(stats["y"], stats["se"] ** 2, params["mu"], params["tau"])

    def sample_data(self, theta, size, rng, params):
        """An estimate with standard error ``size``."""
        return theta + size * rng.standard_normal(np.shape(theta))

    def default_priors(self, stats):
        y, se = stats["y"], stats["se"]
        scale = math.sqrt(float(np.var(y) + np.mean(se**2)))
        return _default_location_priors(float(np.mean(y)), scale)

    def unpooled(self, fixed, priors, stats):
        return _unpooled_location(fixed, priors)

    def initial(self, stats):
        y = stats["y"]
        scale = self.location_scale(stats)
        return {"mu": float(np.mean(y)), "tau": max(float(np.std(y)), 0.1 * scale)}

    def raw(self, stats):
        return stats["y"].astype(float)

    def size(self, stats):
        return 1.0 / stats["se"] ** 2
