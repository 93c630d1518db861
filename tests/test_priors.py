"""The priors' log densities, supports and draws against scipy.stats, which poolwise follows."""

import numpy as np
import pytest
from scipy import stats

from poolwise.priors import (
    Beta,
    Exponential,
    Gamma,
    HalfCauchy,
    HalfNormal,
    Lomax,
    Normal,
    Pareto,
    Uniform,
)

CASES = [
    (Normal(1.5, 2.5), stats.norm(1.5, 2.5)),
    (HalfNormal(5.0), stats.halfnorm(scale=5.0)),
    (HalfCauchy(5.0), stats.halfcauchy(scale=5.0)),
    (Exponential(0.3), stats.expon(scale=1 / 0.3)),
    (Uniform(0.1, 0.3), stats.uniform(0.1, 0.3 - 0.1)),
    (Uniform(-2.0, 7.0), stats.uniform(-2.0, 9.0)),
    (Beta(0.5, 2.5), stats.beta(0.5, 2.5)),
    (Beta(2.0, 2.0), stats.beta(2.0, 2.0)),
    (Gamma(0.1, 0.2), stats.gamma(0.1, scale=1 / 0.2)),
    (Gamma(2.0, 5.0), stats.gamma(2.0, scale=1 / 5.0)),
    (Pareto(1.5, 2.0), stats.pareto(1.5, scale=2.0)),
    (Lomax(0.5, 1.0), stats.lomax(0.5, scale=1.0)),
    (Lomax(2.5, 3.0), stats.lomax(2.5, scale=3.0)),
]
IDS = [repr(p) for p, _ in CASES]
X = np.concatenate(
    [[-1.0, 0.0, 1e-300, 0.1, 0.3, 1.0, 2.0, 50.0, 1e5, np.nan, np.inf, -np.inf]]
    + [np.linspace(-3.0, 40.0, 997)]
)


@pytest.mark.parametrize(("prior", "frozen"), CASES, ids=IDS)
def test_logpdf_matches_scipy(prior, frozen):
    with np.errstate(all="ignore"):
        expected = frozen.logpdf(X)
    got = prior.logpdf(X)
    finite = np.isfinite(expected)
    # the same formulas as scipy's; Pareto's is the closed form of scipy's log(pdf): rounding apart
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(got[~finite], expected[~finite])  # -inf outside, nan at nan
    assert type(prior.logpdf(0.5)) is type(frozen.logpdf(0.5))  # a scalar for a scalar


@pytest.mark.parametrize(("prior", "frozen"), CASES, ids=IDS)
def test_support_matches_scipy(prior, frozen):
    assert prior.support == frozen.support()


@pytest.mark.parametrize(("prior", "frozen"), CASES, ids=IDS)
@pytest.mark.parametrize("size", [1, 1000, (3, 4)])
def test_draws_are_scipys(prior, frozen, size):
    """The same generator gives the very same draws as scipy's rvs: simulations do not move."""
    got = prior.sample(np.random.default_rng(7), size)
    expected = frozen.rvs(size=size, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(got, expected)
