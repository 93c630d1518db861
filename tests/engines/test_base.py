"""Every engine keeps one contract: fit(model) returns a posterior read through one interface."""

import numpy as np
import pytest

from poolwise.engines import ENGINES, Density


def target(d: int) -> Density:
    """A normal posterior with mean 1 and sd 0.5 along every axis."""
    return Density(lambda z: -2.0 * ((z - 1.0) ** 2).sum(axis=1), np.zeros(d))


@pytest.mark.parametrize(("name", "d"), [("exact", 2), ("ccd", 4), ("eb", 2)])
def test_every_engine_returns_the_same_interface(name, d):
    post = ENGINES[name](target(d))
    assert post.points.shape[1] == d and post.weights.shape == (post.points.shape[0],)
    assert post.weights.sum() == pytest.approx(1.0)
    # the mean (and, for the grids, the sd) of a normal posterior are exact on every rule
    np.testing.assert_allclose(post.weights @ post.points, np.ones(d), atol=1e-6)
    assert post.point == (name == "eb") and post.boundary == ()
    assert isinstance(post.info, dict) and post.warnings == []
    draws = post.sample(np.random.default_rng(0), 4000)
    assert draws.shape == (4000, d)
    if not post.point:
        sd = np.sqrt(post.weights @ (post.points - 1.0) ** 2)
        np.testing.assert_allclose(sd, 0.5, rtol=1e-3)
        # 4000 draws: their mean within 5 standard errors of the posterior's
        assert np.all(np.abs(draws.mean(axis=0) - 1.0) < 5 * 0.5 / np.sqrt(4000))
