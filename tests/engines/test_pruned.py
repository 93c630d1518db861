"""The pruned grid: a normal's moments, a skewed density's, and its budget."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from poolwise.engines import pruned
from poolwise.engines.base import Density


def test_normal_moments_in_four_dimensions():
    """A correlated normal: the mean exact by symmetry, the covariance within 1 % (the
    trapezoid rule's error at spacing 1.5 is ~3e-4; the rest is the tail beyond DROP)."""
    cov = np.array([[1.0, 0.6, 0, 0], [0.6, 2.0, 0, 0], [0, 0, 0.5, -0.2], [0, 0, -0.2, 1.0]])
    prec, mu = np.linalg.inv(cov), np.array([1.0, -2.0, 0.5, 3.0])

    def lp(z):
        d = z - mu
        return -0.5 * np.einsum("ki,ij,kj->k", d, prec, d)

    post = pruned.fit(Density(lp, np.zeros(4)))
    m = post.weights @ post.points
    c = (post.points - m).T @ (post.weights[:, None] * (post.points - m))
    np.testing.assert_allclose(m, mu, atol=1e-9)
    assert np.all(np.abs(c - cov) < 0.01 * np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
    assert post.info["design"] == "pruned grid" and not post.stretched


def test_skewed_density_follows_its_long_tail():
    """log of a Gamma(2, 1) variable (a sd's log with the Jacobian), times three standard
    normals: the skewed coordinate's mean and sd are digamma(2) and sqrt(trigamma(2)), here
    within 0.03 sd and 1 % (seen: 0.014 sd, the long left tail cut beyond DROP)."""

    def lp(z):
        return 2 * z[:, 0] - np.exp(z[:, 0]) - 0.5 * (z[:, 1:] ** 2).sum(axis=1)

    post = pruned.fit(Density(lp, np.zeros(4)))
    x = post.points[:, 0]
    m = post.weights @ x
    sd = np.sqrt(post.weights @ (x - m) ** 2)
    assert m == pytest.approx(special.digamma(2.0), abs=0.03 * sd)
    assert sd == pytest.approx(np.sqrt(special.polygamma(1, 2.0)), rel=0.01)


def test_budget_warns(monkeypatch):
    monkeypatch.setattr(pruned, "MAX_POINTS", 50)
    post = pruned.fit(Density(lambda z: -0.5 * (z**2).sum(axis=1), np.zeros(4)))
    assert any("budget of points" in w for w in post.warnings)
