"""Normal models with the population mean ``mu`` integrated out in closed form.

Given the scales (tau, sigma), every group's estimate is N(mu, V_j), so with a Normal or flat prior
on mu the posterior of mu is normal and the scales' marginal posterior has a closed form. The exact
engine then integrates one dimension fewer; the full posterior is restored afterwards with
Gauss–Hermite nodes in mu (for exact moments) or exact draws of mu (for draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .engines.exact import GridPosterior
from .model import PoolModel, _chunks
from .priors import Flat, Normal

HERMITE_NODES = 24
LOG_2PI = math.log(2 * math.pi)


@dataclass
class CollapsedLocation:
    """The exact engine's view of a normal model whose ``mu`` is integrated out.

    Example
    -------
    >>> import numpy as np
    >>> from poolwise.families import NormalKnownSE
    >>> from poolwise.model import build_model
    >>> stats = {"y": np.array([1.0, 3.0]), "se": np.array([1.0, 1.0])}
    >>> model = build_model(NormalKnownSE(), stats, "complete", {"mu": Normal(0, 10)})
    >>> mean, precision, _ = collapse_location(model).mu_given(np.zeros((1, 0)))
    >>> round(float(mean[0]), 4), round(float(precision[0]), 2)
    (1.99, 2.01)
    """

    model: PoolModel
    index: int
    prior_mean: float
    prior_precision: float
    _last: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _kept_columns: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in self.model.names if n != "mu")

    def _full(self, reduced: np.ndarray, z_mu: np.ndarray | float) -> np.ndarray:
        """Points z with mu's column ``z_mu`` put back (``np.insert``'s result, made directly:
        the engines call this many times on a few points)."""
        reduced, i = np.atleast_2d(reduced), self.index
        out = np.empty((reduced.shape[0], reduced.shape[1] + 1))
        out[:, :i], out[:, i], out[:, i + 1 :] = reduced[:, :i], z_mu, reduced[:, i:]
        return out

    @property
    def _columns(self) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The estimates' weighted mean (sums of squares about it: no cancellation), the columns
        whose weighted sums over groups of 1 / V_j :meth:`mu_given` takes, and the excess term;
        kept while the model's totals are the same objects."""
        stats, w = self.model.total_stats, self.model.total_weights
        kept = self._kept_columns
        if kept is None or kept[0] is not stats or kept[1] is not w:
            est, excess = self.model.family.location_estimates(stats)
            center = float(np.average(est, weights=np.broadcast_to(w, est.shape)))
            d = est - center
            columns = np.stack([w, w * d, w * d**2] + ([] if excess is None else [w * excess]), 1)
            kept = self._kept_columns = (stats, w, (center, columns, excess))
        return kept[2]

    def mu_given(
        self, reduced: np.ndarray, likelihood: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Posterior mean and precision of mu given the other hyperparameters, and the log
        likelihood with mu integrated out (K,; None unless ``likelihood``).

        Without the likelihood, the last answer is kept and given again for the same points.
        """
        reduced = np.atleast_2d(reduced)
        if not likelihood and self._last is not None and np.array_equal(self._last[0], reduced):
            return self._last[1]
        k = reduced.shape[0]
        model, w = self.model, self.model.total_weights
        pooled = model.pooling == "complete"
        center, columns, excess = self._columns
        prior_d = self.prior_mean - center
        mean, precision = np.empty(k), np.empty(k)
        log_lik = np.empty(k) if likelihood else None
        for sl in _chunks(k, w.size):
            p = model.params(self._full(reduced[sl], 0.0))
            v, rest = model.family.location_terms(p, model.total_stats, w, pooled)
            v = np.broadcast_to(v, (sl.stop - sl.start, w.size))
            with np.errstate(all="ignore"):
                sums = (1.0 / v) @ columns
                prec = sums[:, 0] + self.prior_precision
                m = (sums[:, 1] + self.prior_precision * prior_d) / prec
                mean[sl], precision[sl] = m + center, prec
                if not likelihood:
                    continue
                quad = sums[:, 2] + self.prior_precision * prior_d**2 - prec * m**2
                ll = rest - 0.5 * (np.log(v) @ w) - 0.5 * np.log(prec) - 0.5 * quad
                if excess is not None:
                    ll -= sums[:, 3]
                if self.prior_precision > 0:
                    ll += 0.5 * math.log(self.prior_precision)
            log_lik[sl] = ll
        if not likelihood:
            self._last = reduced.copy(), (mean, precision, None)
            return mean, precision, None
        # the constants: -(1/2) log 2pi per group estimate, + (1/2) log 2pi from the integral
        log_lik += model.constant_sum - 0.5 * LOG_2PI * (w.sum() - 1)
        return mean, precision, log_lik

    def log_posterior(self, reduced: np.ndarray) -> np.ndarray:
        """Log posterior density of the other hyperparameters, mu integrated out (K,)."""
        full = self._full(reduced, 0.0)
        out = self.model.log_prior(full, skip="mu") + self.mu_given(reduced)[2]
        return np.where(np.isnan(out), -np.inf, out)

    def conditional(
        self, reduced: np.ndarray, groups: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and shrinkage of each distinct theta_j (or of the distinct groups
        ``groups``) given the other hyperparameters, mu integrated out: theta_j's mean moves with
        mu's posterior mean by the shrinkage B_j, and its variance gains B_j² / precision(mu)."""
        mean_mu, precision, _ = self.mu_given(reduced, likelihood=False)
        full = self._full(reduced, self._z_mu(mean_mu))
        m, v, b = self.model.conditional(full, groups)
        extra = b * b
        extra /= precision[:, None]
        v += extra
        return m, v, b

    def initial_point(self) -> np.ndarray:
        return np.delete(self.model.initial_point(), self.index)

    def _z_mu(self, mu: np.ndarray) -> np.ndarray:
        return self.model.transforms[self.index].inverse(mu)

    def expand(self, reduced: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted points of the full posterior: Gauss–Hermite nodes of mu at each point."""
        mean, precision, _ = self.mu_given(reduced, likelihood=False)
        from numpy.polynomial.hermite_e import hermegauss  # numpy.polynomial: only when used

        nodes, node_weights = hermegauss(HERMITE_NODES)
        mu = mean[:, None] + nodes[None, :] / np.sqrt(precision)[:, None]
        points = np.repeat(np.atleast_2d(reduced), HERMITE_NODES, axis=0)
        full = self._full(points, self._z_mu(mu.ravel()))
        w = (weights[:, None] * node_weights[None, :]).ravel()
        return full, w / w.sum()

    def complete(self, reduced: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Full draws: mu drawn exactly from its normal posterior given each reduced draw."""
        mean, precision, _ = self.mu_given(reduced, likelihood=False)
        mu = mean + rng.standard_normal(mean.shape) / np.sqrt(precision)
        return self._full(reduced, self._z_mu(mu))


def collapse_location(model: PoolModel) -> CollapsedLocation | None:
    """The collapsed view when ``model`` is normal with a free mu under a Normal or flat prior."""
    if not hasattr(model.family, "location_terms") or "mu" not in model.names:
        return None
    prior = model.priors["mu"]
    if isinstance(prior, Normal):
        return CollapsedLocation(model, model.names.index("mu"), prior.mu, prior.sigma**-2)
    if isinstance(prior, Flat):
        return CollapsedLocation(model, model.names.index("mu"), 0.0, 0.0)
    return None


@dataclass
class ExpandedPosterior:
    """A grid posterior over the other hyperparameters, seen as one over all of them."""

    reduced: GridPosterior
    collapsed: CollapsedLocation

    def __post_init__(self) -> None:
        self.info = {**self.reduced.info, "mu": "integrated in closed form"}
        self.warnings = self.reduced.warnings
        self.boundary: tuple[int, ...] = ()

    @cached_property
    def _expanded(self) -> tuple[np.ndarray, np.ndarray]:
        return self.collapsed.expand(self.reduced.points, self.reduced.weights)

    @property
    def points(self) -> np.ndarray:
        """Points z of every hyperparameter: Gauss–Hermite nodes of mu at each grid point (made
        when first asked for: the tables need only the grid and mu's normals)."""
        return self._expanded[0]

    @property
    def weights(self) -> np.ndarray:
        return self._expanded[1]

    @property
    def point(self) -> bool:
        """A grid is the whole posterior, not a point estimate."""
        return False

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.collapsed.complete(self.reduced.sample(rng, size), rng)
