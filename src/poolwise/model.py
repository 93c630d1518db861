"""The model specification: family + pooling + priors over one group's statistics.

A :class:`PoolModel` turns points ``z`` of the unconstrained hyperparameter space (shape ``(K, d)``)
into log densities and conditional group posteriors. Engines see only this interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from .families import Family
from .families.base import Params, Stats
from .priors import Flat, Prior
from .transforms import Transform, intersect

POOLINGS = ("partial", "none", "complete")
# (points x groups) elements per pass over the groups: arrays of a quarter megabyte, which the
# allocator hands out again from memory already in use; ones of a few megabytes, the same size each
# time, are mapped afresh on every use, and each page's first touch costs about as much as the
# arithmetic on it
CHUNK_ELEMENTS = 1 << 15


def _chunks(k: int, j: int):
    step = max(1, CHUNK_ELEMENTS // max(j, 1))
    for start in range(0, k, step):
        yield slice(start, min(start + step, k))


@dataclass
class PoolModel:
    """A one-factor pooling model ready for an engine.

    Example
    -------
    >>> import numpy as np
    >>> from poolwise.families import Binomial
    >>> stats = {"successes": np.array([70, 0]), "trials": np.array([100, 1])}
    >>> model = build_model(Binomial(), stats, "partial", {"a": 6, "b": 4})
    >>> model.names
    ()
    """

    family: Family
    stats: Stats
    pooling: str
    names: tuple[str, ...]
    transforms: tuple[Transform, ...]
    priors: dict[str, Prior]
    constants: dict[str, float]
    user_priors: set[str] = field(default_factory=set)
    # groups with identical statistics share their likelihood and conditional posterior:
    # ``unique`` holds each distinct row once, ``multiplicity`` how often, ``inverse`` maps back
    unique: Stats = field(init=False)
    multiplicity: np.ndarray = field(init=False)
    inverse: np.ndarray = field(init=False)
    # fewer weighted rows with the same summed likelihood (the family's ``totals``)
    total_stats: Stats = field(init=False)
    total_weights: np.ndarray = field(init=False)
    constant: np.ndarray = field(init=False)
    # its sum, in an order that does not depend on the groups' order
    constant_sum: float = field(init=False)

    def __post_init__(self) -> None:
        self.unique, self.multiplicity, self.inverse = _deduplicate(self.stats)
        self.total_stats, self.total_weights = self.family.totals(self.unique, self.multiplicity)
        self.constant = self.family.constant(self.stats)
        self.constant_sum = float(np.sort(self.constant).sum())

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def n_groups(self) -> int:
        return self.family.n(self.stats)

    def params(self, z: np.ndarray) -> Params:
        """Hyperparameters at points ``z`` (K, d) as (K, 1) arrays, every name the family knows."""
        z = np.atleast_2d(z)
        p = {name: np.full((z.shape[0], 1), value) for name, value in self.constants.items()}
        for i, (name, t) in enumerate(zip(self.names, self.transforms, strict=True)):
            p[name] = t.forward(z[:, i : i + 1])
        return self.family.complete(p)

    def to_z(self, values: dict[str, float]) -> np.ndarray:
        """Natural values of the free hyperparameters → a point z (1, d)."""
        return np.array(
            [
                [
                    float(t.inverse(values[n]))
                    for n, t in zip(self.names, self.transforms, strict=True)
                ]
            ]
        ).reshape(1, self.dim)

    def _log_marginal(self, z: np.ndarray, stats: Stats) -> np.ndarray:
        return self.family.log_marginal(self.params(z), stats, self.pooling == "complete")

    def group_log_likelihood(self, z: np.ndarray) -> np.ndarray:
        """log p(data_j | hyperparameters) for each point and group, shape (K, J)."""
        with np.errstate(all="ignore"):
            return self._log_marginal(z, self.stats) + self.constant

    def log_likelihood(self, z: np.ndarray) -> np.ndarray:
        """Sum over groups of the collapsed log likelihood, shape (K,)."""
        z = np.atleast_2d(z)
        out = np.empty(z.shape[0])
        for sl in _chunks(z.shape[0], self.total_weights.size):
            with np.errstate(all="ignore"):
                ll = self.family.log_marginal_total(
                    self.params(z[sl]),
                    self.total_stats,
                    self.total_weights,
                    self.pooling == "complete",
                )
            out[sl] = np.where(np.isnan(ll), -np.inf, ll)
        return out + self.constant_sum

    def log_prior(
        self, z: np.ndarray, jacobian: bool = True, skip: str | None = None
    ) -> np.ndarray:
        """Log prior density of the free hyperparameters at ``z`` (with the log-Jacobian),
        leaving out the hyperparameter ``skip``."""
        z = np.atleast_2d(z)
        out = np.zeros(z.shape[0])
        for i, (name, t) in enumerate(zip(self.names, self.transforms, strict=True)):
            if name == skip:
                continue
            with np.errstate(all="ignore"):
                out += self.priors[name].logpdf(t.forward(z[:, i]))
                if jacobian:
                    out += t.log_jacobian(z[:, i])
        return out

    def log_posterior(self, z: np.ndarray) -> np.ndarray:
        """Unnormalised log posterior density of z, shape (K,)."""
        lp = self.log_prior(z)
        ll = self.log_likelihood(z)
        out = lp + ll
        return np.where(np.isnan(out), -np.inf, out)

    def log_objective(self, z: np.ndarray) -> np.ndarray:
        """What empirical Bayes maximises: the log marginal likelihood, plus the log priors the
        user gave (MAP on the natural scale, no Jacobians), shape (K,)."""
        if self.user_priors:
            return self.log_likelihood(z) + self.log_prior(z, jacobian=False)
        return self.log_likelihood(z)

    def conditional(
        self, z: np.ndarray, groups: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and shrinkage at each point z for each *distinct* group (or the
        distinct groups ``groups``), each (K, U).

        Index the last axis with :attr:`inverse` to get every group.
        """
        p = self.params(z)
        unique = self.unique if groups is None else {k: v[groups] for k, v in self.unique.items()}
        if self.pooling == "complete":
            return self.family.pooled_conditional(p, unique)
        return self.family.conditional(p, unique)

    def sample_theta(self, z: np.ndarray, rng: np.random.Generator, groups: slice) -> np.ndarray:
        """One theta_j draw per row of ``z`` for the groups in ``groups``, shape (D, len)."""
        p = self.params(z)
        stats = {k: v[groups] for k, v in self.stats.items()}
        if self.pooling == "complete":
            loc = p[self.family.location]
            return np.broadcast_to(loc, (loc.shape[0], self.family.n(stats))).copy()
        return self.family.sample_conditional(p, stats, rng)

    def initial_point(self) -> np.ndarray:
        """A starting point for mode search, inside every prior's support."""
        guess = self.family.initial(self.stats)
        z = []
        for name, t in zip(self.names, self.transforms, strict=True):
            value = guess[name]
            lo, hi = t.lower, t.upper
            if not lo < value < hi:
                value = (
                    (lo + hi) / 2
                    if math.isfinite(hi - lo)
                    else (lo + 1 if math.isfinite(lo) else hi - 1)
                )
            z.append(float(t.inverse(value)))
        return np.array(z)


def _codes(column: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes in ``0 .. size - 1`` that are equal where the column's values are, and ``size``.

    Whole numbers of a narrow range are their own codes (no sort); other columns are sorted.
    """
    if column.dtype.kind in "iu" and column.size:
        low = int(column.min())
        span = int(column.max()) - low + 1
        if span <= 4 * column.size:
            return column.astype(np.int64) - low, span
    return _ranks(column.astype(float))


def _ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes ``0 .. distinct - 1`` of the values in sorted order (by a sort), and ``distinct``."""
    _, inverse = np.unique(values, return_inverse=True)
    return inverse.ravel(), int(inverse.max(initial=-1)) + 1


def _dense(code: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The same partition as ``code`` (values below ``size``), relabelled ``0 .. distinct - 1``."""
    if size <= 4 * code.size:
        present = np.bincount(code, minlength=size) > 0
        return (np.cumsum(present) - 1)[code], int(present.sum())
    return _ranks(code)


def _deduplicate(stats: Stats) -> tuple[Stats, np.ndarray, np.ndarray]:
    """Distinct rows of the statistics, their counts, and the map from each group to its row.

    Rows are coded column by column (each column's codes folded into the codes so far), so the
    work is a few counting passes or 1-d sorts rather than a sort of the rows themselves.
    """
    columns = [np.asarray(c) for c in stats.values()]
    j = columns[0].size
    everything = stats, np.ones(j), np.arange(j)
    code, size = np.zeros(j, dtype=np.int64), 1
    for column in columns:
        part, span = _codes(column)
        code, size = _dense(code * span + part, size * span)
        if size > 0.7 * j:
            return everything
    first = np.empty(size, dtype=np.int64)
    first[code] = np.arange(j)
    unique = {k: v[first] for k, v in zip(stats, columns, strict=True)}
    return unique, np.bincount(code, minlength=size).astype(float), code


def _split_priors(family: Family, priors: dict | None) -> tuple[dict[str, Prior], dict[str, float]]:
    if priors is None:
        priors = {}
    if not isinstance(priors, dict):
        raise TypeError(
            f"priors must be a dict from hyperparameter name to prior, got {type(priors).__name__}"
        )
    dists: dict[str, Prior] = {}
    fixed: dict[str, float] = {}
    family.parametrization(set(priors), "priors")
    for name, value in priors.items():
        lo, hi = family.supports[name]
        if isinstance(value, Prior):
            plo, phi = value.support
            if not isinstance(value, Flat) and (plo < lo or phi > hi):
                raise ValueError(
                    f"priors[{name!r}]: {value!r} has support ({plo:g}, {phi:g}) but {name} lies in "
                    f"({lo:g}, {hi:g}); use a prior on that range (e.g. HalfNormal for a scale)"
                )
            dists[name] = value
        elif isinstance(value, Real) and not isinstance(value, bool):
            v = float(value)
            if not (math.isfinite(v) and lo <= v <= hi) or (v == lo and name != "tau"):
                raise ValueError(
                    f"priors[{name!r}]: a fixed value must be finite and inside ({lo:g}, {hi:g}), got {value!r}"
                )
            fixed[name] = v
        else:
            raise TypeError(
                f"priors[{name!r}] must be a poolwise prior (e.g. poolwise.HalfNormal(1)) or a number, "
                f"got {type(value).__name__}"
            )
    family.parametrization(set(dists) | set(fixed), "priors")
    return dists, fixed


def build_model(family: Family, stats: Stats, pooling: str, priors: dict | None) -> PoolModel:
    """Combine a family, its group statistics, a pooling and priors into a :class:`PoolModel`."""
    if pooling not in POOLINGS:
        raise ValueError(
            f"pooling must be one of {', '.join(map(repr, POOLINGS))}, got {pooling!r}"
        )
    dists, fixed = _split_priors(family, priors)
    defaults = family.default_priors(stats)
    free = family.free_names(pooling, set(dists) | set(fixed))
    constants: dict[str, float] = {}
    if pooling == "none":
        unpooled = family.unpooled(fixed, {**defaults, **dists}, stats)
        constants.update({k: float(np.ravel(v)[0]) for k, v in unpooled.items()})
    elif pooling == "complete" and family.location == "mu" and "tau" in family.supports:
        constants["tau"] = 0.0
    guess = family.initial(stats)
    loc_scale = family.location_scale(stats)
    names, transforms, used = [], [], {}
    for name in free:
        if name in fixed:
            constants[name] = fixed[name]
            continue
        prior = dists.get(name, defaults.get(name))
        if prior is None:
            raise ValueError(
                f"priors: give a prior for {name!r} too (the population is parametrized by "
                f"{', '.join(n for n in free if n in family.supports)})"
            )
        lo, hi = family.supports[name]
        bounded = math.isfinite(lo) or math.isfinite(hi)
        t = intersect(
            (lo, hi),
            prior.support,
            loc=0.0 if bounded else guess[name],
            scale=1.0 if bounded else loc_scale,
        )
        names.append(name)
        transforms.append(t)
        used[name] = prior
    return PoolModel(
        family=family,
        stats=stats,
        pooling=pooling,
        names=tuple(names),
        transforms=tuple(transforms),
        priors=used,
        constants=constants,
        user_priors=set(dists),
    )
