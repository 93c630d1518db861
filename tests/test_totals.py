"""The families' compact totals give the summed likelihood of the groups they stand for."""

import numpy as np
import pytest

from poolwise.families import Binomial, NormalRows
from poolwise.location import collapse_location
from poolwise.model import build_model


def _per_group(model, z):
    """Σ_j log m_j(z) from each group's own log marginal: the definition the totals must keep."""
    return model.group_log_likelihood(z).sum(axis=1)


def normal_stats(rng, j, center):
    n = 1 + rng.poisson(5, j)
    mean = center + rng.normal(0, 1, j)
    m2 = rng.chisquare(np.maximum(n - 1, 1)) * (n > 1)
    return {"n": n, "mean": mean, "m2": m2}


def binomial_stats(rng, j):
    n = 1 + rng.poisson(60, j)
    return {"successes": rng.binomial(n, rng.beta(3, 7, j)), "trials": n}


@pytest.mark.parametrize("pooling", ["partial", "complete"])
@pytest.mark.parametrize(
    ("family", "make"),
    [
        (NormalRows(), lambda rng: normal_stats(rng, 5000, 0.0)),
        (NormalRows(), lambda rng: normal_stats(rng, 5000, 1e6)),
        (Binomial(), lambda rng: binomial_stats(rng, 5000)),
    ],
)
def test_totals_keep_the_summed_likelihood(family, make, pooling):
    rng = np.random.default_rng(3)
    model = build_model(family, make(rng), pooling, None)
    # the compact form is in use: far fewer rows than groups
    assert model.total_weights.size < 0.1 * model.n_groups
    z = model.initial_point() + rng.normal(0, 0.5, (6, model.dim))
    expected = _per_group(model, z)
    # sums of 5000 terms of size ~10: float64 rounding is ~1e-11 relative
    np.testing.assert_allclose(model.log_likelihood(z), expected, rtol=1e-10)


def test_mu_integrated_with_totals_equals_the_per_group_form():
    rng = np.random.default_rng(4)
    model = build_model(NormalRows(), normal_stats(rng, 3000, 50.0), "partial", None)
    collapsed = collapse_location(model)
    reduced = np.delete(model.initial_point(), collapsed.index) + rng.normal(0, 0.3, (5, 2))
    compact = collapsed.mu_given(reduced)
    model.total_stats, model.total_weights = model.unique, model.multiplicity
    per_group = collapsed.mu_given(reduced)
    for a, b in zip(compact, per_group, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize(
    "stats",
    [
        # narrow whole numbers (counted), a wide range and negatives (sorted), reals (sorted)
        {"successes": [3, 1, 3, 0, 1, 3], "trials": [5, 5, 5, 2, 5, 6]},
        {"a": [10**12, -4, 10**12, -4, 7, 7], "b": [1, 2, 1, 2, 3, 3]},
        {"y": [0.5, 0.25, 0.5, 0.5, 0.25, 0.5], "se": [1.0, 1.0, 1.0, 2.0, 1.0, 1.0]},
    ],
)
def test_deduplicate_finds_the_distinct_rows(stats):
    from poolwise.model import _deduplicate

    stats = {k: np.asarray(v) for k, v in stats.items()}
    rows = np.column_stack([v.astype(float) for v in stats.values()])
    expected, expected_counts = np.unique(rows, axis=0, return_counts=True)
    unique, counts, inverse = _deduplicate(stats)
    got = np.column_stack([v.astype(float) for v in unique.values()])
    order = np.lexsort(got.T[::-1])
    np.testing.assert_array_equal(got[order], expected)
    np.testing.assert_array_equal(counts[order], expected_counts)
    np.testing.assert_array_equal(got[inverse], rows)
    for key, value in unique.items():
        assert value.dtype == stats[key].dtype
