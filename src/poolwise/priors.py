"""Prior distributions for hyperparameters, with PyMC's names and parameter names.

Each prior knows its log density, its support, how to draw from it and, lazily, its numpyro twin
for the NUTS engine. A proper prior is a standard density moved by a location and a scale, as in
:mod:`scipy.stats`, with the same formulas and the same ways of drawing: its log densities agree
with scipy's to rounding, and a generator gives the same draws as scipy's ``rvs`` would.

Example
-------
>>> from poolwise.priors import HalfCauchy
>>> [float(x) for x in HalfCauchy(beta=5).support]
[0.0, inf]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ._lazy import special

_LOG_SQRT_2PI = float(np.log(np.sqrt(2 * np.pi)))  # as scipy.stats.norm

__all__ = [
    "Prior",
    "Normal",
    "HalfNormal",
    "HalfCauchy",
    "Exponential",
    "Uniform",
    "Beta",
    "LKJ",
    "Gamma",
    "Pareto",
    "Lomax",
    "Power",
    "Flat",
]


@dataclass(frozen=True)
class Prior:
    """Base class: a univariate prior density for one hyperparameter."""

    def _check(self, **positive: float) -> None:
        for name, value in positive.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{type(self).__name__}: {name} must be a positive finite number, got {value!r}"
                )

    # The standard density's (lower, upper) support; x = loc + scale * z.
    _standard_support: ClassVar[tuple[float, float]] = (-math.inf, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, 1.0

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    @property
    def support(self) -> tuple[float, float]:
        """The (lower, upper) bounds of the prior's support."""
        loc, scale = self._loc_scale
        lower, upper = self._standard_support
        return lower * scale + loc, upper * scale + loc

    @property
    def proper(self) -> bool:
        """Whether the density integrates to one."""
        return True

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` (``-inf`` outside the support, ``nan`` at ``nan``).

        >>> float(Exponential(lam=2.0).logpdf(0.5))  # log 2 - 2 * 0.5
        -0.3068528194400547
        """
        loc, scale = self._loc_scale
        lower, upper = self._standard_support
        z = (np.asarray(x, dtype=float) - loc) / scale
        with np.errstate(all="ignore"):
            inside = (lower <= z) & (z <= upper)
            out = np.where(inside, self._standard_logpdf(z) - math.log(scale), -np.inf)
        out = np.where(np.isnan(z), np.nan, out)
        return out[()] if out.ndim == 0 else out

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Draw ``size`` values.

        >>> HalfNormal(sigma=2.0).sample(np.random.default_rng(0), 3).round(3)
        array([0.251, 0.264, 1.281])
        """
        loc, scale = self._loc_scale
        return self._standard_draws(rng, size) * scale + loc

    def to_numpyro(self) -> Any:
        """The numpyro distribution with the same density."""
        raise NotImplementedError(f"{self!r} has no numpyro counterpart")

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True, repr=False)
class Normal(Prior):
    """Normal(mu, sigma)."""

    mu: float = 0.0
    sigma: float = 1.0

    def __post_init__(self) -> None:
        self._check(sigma=self.sigma)
        if not math.isfinite(self.mu):
            raise ValueError(f"Normal: mu must be finite, got {self.mu!r}")

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return self.mu, self.sigma

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return -(z**2) / 2.0 - _LOG_SQRT_2PI

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(size)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Normal(self.mu, self.sigma)


@dataclass(frozen=True, repr=False)
class HalfNormal(Prior):
    """HalfNormal(sigma) on (0, inf)."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        self._check(sigma=self.sigma)

    _standard_support = (0.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, self.sigma

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return 0.5 * np.log(2.0 / np.pi) - z * z / 2.0

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return abs(rng.standard_normal(size=size))

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.HalfNormal(self.sigma)


@dataclass(frozen=True, repr=False)
class HalfCauchy(Prior):
    """HalfCauchy(beta) on (0, inf); ``beta`` is the scale, as in PyMC."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        self._check(beta=self.beta)

    _standard_support = (0.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, self.beta

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return np.log(2.0 / np.pi) - special.log1p(z * z)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return np.tan(np.pi / 2 * rng.uniform(size=size))  # the quantile function of uniforms

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.HalfCauchy(self.beta)


@dataclass(frozen=True, repr=False)
class Exponential(Prior):
    """Exponential(lam) with rate ``lam``."""

    lam: float = 1.0

    def __post_init__(self) -> None:
        self._check(lam=self.lam)

    _standard_support = (0.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, 1.0 / self.lam

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return -z

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.standard_exponential(size)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Exponential(self.lam)


@dataclass(frozen=True, repr=False)
class Uniform(Prior):
    """Uniform(lower, upper)."""

    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper
        ):
            raise ValueError(
                f"Uniform: need finite lower < upper, got lower={self.lower!r}, upper={self.upper!r}"
            )

    _standard_support = (0.0, 1.0)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return self.lower, self.upper - self.lower

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return np.zeros_like(z)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.uniform(0.0, 1.0, size)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Uniform(self.lower, self.upper)


@dataclass(frozen=True, repr=False)
class Beta(Prior):
    """Beta(alpha, beta) on (0, 1)."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        self._check(alpha=self.alpha, beta=self.beta)

    _standard_support = (0.0, 1.0)

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        a, b = self.alpha, self.beta
        return special.xlog1py(b - 1.0, -z) + special.xlogy(a - 1.0, z) - special.betaln(a, b)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.beta(self.alpha, self.beta, size)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Beta(self.alpha, self.beta)


@dataclass(frozen=True, repr=False)
class LKJ(Prior):
    """LKJ(eta): the prior of a correlation matrix (Lewandowski, Kurowicka and Joe), density
    proportional to det(R)^(eta - 1); eta = 1 is uniform over correlation matrices, larger eta
    favours weaker correlations. The prior of a correlated block ``(1 + x|g)``, keyed by the
    block's correlations (``"1 + x|g_corr"``); ``dim`` is the matrix's size, set by the fit.

    As a density of one number it is the marginal of one correlation: (r + 1) / 2 ~
    Beta(b, b) with b = eta - 1 + dim / 2 (uniform on (-1, 1) for eta = 1, dim = 2).

    >>> round(float(LKJ(2.0).logpdf(0.0)), 6)  # 3/4 (1 - r^2) at r = 0
    -0.287682
    """

    eta: float = 1.0
    dim: int = 2

    def __post_init__(self) -> None:
        self._check(eta=self.eta)
        if not (isinstance(self.dim, int) and not isinstance(self.dim, bool) and self.dim >= 2):
            raise ValueError(f"LKJ: dim must be an integer >= 2, got {self.dim!r}")

    _standard_support = (0.0, 1.0)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return -1.0, 2.0

    @property
    def _b(self) -> float:
        return self.eta - 1.0 + self.dim / 2.0

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        b = self._b
        return special.xlog1py(b - 1.0, -z) + special.xlogy(b - 1.0, z) - special.betaln(b, b)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.beta(self._b, self._b, size)

    def cholesky_numpyro(self) -> Any:
        """numpyro's LKJCholesky(dim, eta): the distribution of the matrix's Cholesky factor."""
        import numpyro.distributions as dist

        return dist.LKJCholesky(self.dim, self.eta)

    def __repr__(self) -> str:
        return (
            f"LKJ(eta={self.eta:g})" if self.dim == 2 else f"LKJ(eta={self.eta:g}, dim={self.dim})"
        )


@dataclass(frozen=True, repr=False)
class Gamma(Prior):
    """Gamma(alpha, beta) with shape ``alpha`` and rate ``beta``, as in PyMC."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        self._check(alpha=self.alpha, beta=self.beta)

    _standard_support = (0.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, 1.0 / self.beta

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        a = self.alpha
        return special.xlogy(a - 1.0, z) - z - special.gammaln(a)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.standard_gamma(self.alpha, size)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Gamma(self.alpha, self.beta)


@dataclass(frozen=True, repr=False)
class Pareto(Prior):
    """Pareto(alpha, m): density alpha m^alpha / x^(alpha+1) on (m, inf)."""

    alpha: float = 1.0
    m: float = 1.0

    def __post_init__(self) -> None:
        self._check(alpha=self.alpha, m=self.m)

    _standard_support = (1.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, self.m

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return math.log(self.alpha) - (self.alpha + 1.0) * np.log(z)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        # the quantile function of uniforms
        return pow(1 - rng.uniform(size=size), -1.0 / self.alpha)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist

        return dist.Pareto(self.m, self.alpha)


def _positive(cls: Any) -> Any:
    """``cls`` declaring the support (0, inf): numpyro cannot infer it through a shift, and a
    sampler given a real support would propose negative values."""
    from numpyro.distributions import constraints

    return type(f"Positive{cls.__name__}", (cls,), {"support": constraints.positive})


@dataclass(frozen=True, repr=False)
class Lomax(Prior):
    """Lomax(alpha, scale): Pareto type II, density (alpha/scale) (1 + x/scale)^-(alpha+1) on (0, inf).

    ``Lomax(0.5, 1)`` on a concentration ``kappa`` is uniform on ``1/sqrt(1 + kappa)``, the relative
    spread of the population: poolwise's default for ``kappa``.
    """

    alpha: float = 0.5
    scale: float = 1.0

    def __post_init__(self) -> None:
        self._check(alpha=self.alpha, scale=self.scale)

    _standard_support = (0.0, math.inf)

    @property
    def _loc_scale(self) -> tuple[float, float]:
        return 0.0, self.scale

    def _standard_logpdf(self, z: np.ndarray) -> np.ndarray:
        return np.log(self.alpha) - (self.alpha + 1) * special.log1p(z)

    def _standard_draws(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        # the quantile function of uniforms
        return special.expm1(-special.log1p(-rng.uniform(size=size)) / self.alpha)

    def to_numpyro(self) -> Any:
        import numpyro.distributions as dist
        from numpyro.distributions.transforms import AffineTransform

        base = dist.Pareto(self.scale, self.alpha)
        return _positive(dist.TransformedDistribution)(base, AffineTransform(-self.scale, 1.0))


@dataclass(frozen=True, repr=False)
class Power(Prior):
    """Improper power-law prior, density proportional to x^exponent on (0, inf).

    BDA3's rat-tumour prior p(a, b) ∝ (a + b)^(-5/2) is, in the (phi, kappa) parametrization,
    ``{"phi": Uniform(0, 1), "kappa": Power(-1.5)}`` (the Jacobian of (a, b) → (phi, kappa) is kappa).
    """

    exponent: float = -1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.exponent):
            raise ValueError(f"Power: exponent must be finite, got {self.exponent!r}")

    @property
    def support(self) -> tuple[float, float]:
        return (0.0, math.inf)

    @property
    def proper(self) -> bool:
        return False

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, self.exponent * np.log(x), -np.inf)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        raise ValueError(f"{self!r} is improper: it cannot be sampled from")


@dataclass(frozen=True, repr=False)
class Flat(Prior):
    """Improper flat prior on the hyperparameter's whole support."""

    @property
    def support(self) -> tuple[float, float]:
        return (-math.inf, math.inf)

    @property
    def proper(self) -> bool:
        return False

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        return np.zeros_like(np.asarray(x, dtype=float))

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        raise ValueError("Flat() is improper: it cannot be sampled from")

    def __repr__(self) -> str:
        return "Flat()"
