"""The pruned grid: a normal's moments, a skewed density's, a long tail's, and its budget."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from poolwise.engines import exact, pruned
from poolwise.engines.base import Density


def _moments(post):
    m = post.weights @ post.points
    c = (post.points - m).T @ (post.weights[:, None] * (post.points - m))
    return m, c


def test_normal_moments_in_four_dimensions():
    """A correlated normal: the mean exact by symmetry, the covariance within 0.3 % (seen:
    0.19 %, the trapezoid rule's aliasing and the tail beyond DROP), on under 200 points (the
    body-centred lattice: 169, where the square one of the same step took ~600)."""
    cov = np.array([[1.0, 0.6, 0, 0], [0.6, 2.0, 0, 0], [0, 0, 0.5, -0.2], [0, 0, -0.2, 1.0]])
    prec, mu = np.linalg.inv(cov), np.array([1.0, -2.0, 0.5, 3.0])

    def lp(z):
        d = z - mu
        return -0.5 * np.einsum("ki,ij,kj->k", d, prec, d)

    post = pruned.fit(Density(lp, np.zeros(4)))
    m, c = _moments(post)
    np.testing.assert_allclose(m, mu, atol=1e-9)
    assert np.all(np.abs(c - cov) < 0.003 * np.sqrt(np.outer(np.diag(cov), np.diag(cov))))
    assert post.info["design"] == "pruned grid" and len(post.weights) < 200
    # chol is the curvature's factor (what the checks of theta step along), the stretch apart
    np.testing.assert_allclose(post.chol @ post.chol.T, cov, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(post.points, post.mode + post.to_u(post.grid) @ post.chol.T)


def test_skewed_density_follows_its_long_tail():
    """log of a Gamma(2, 1) variable (a sd's log with the Jacobian), times three standard
    normals: the skewed coordinate's mean and sd are digamma(2) and sqrt(trigamma(2)), here
    within 0.01 sd and 1 % (seen: 0.004 sd and 0.1 %)."""

    def lp(z):
        return 2 * z[:, 0] - np.exp(z[:, 0]) - 0.5 * (z[:, 1:] ** 2).sum(axis=1)

    post = pruned.fit(Density(lp, np.zeros(4)))
    x = post.points[:, 0]
    m = post.weights @ x
    sd = np.sqrt(post.weights @ (x - m) ** 2)
    assert m == pytest.approx(special.digamma(2.0), abs=0.01 * sd)
    assert sd == pytest.approx(np.sqrt(special.polygamma(1, 2.0)), rel=0.01)


def test_a_half_normal_sds_log_is_followed_far_down_its_tail():
    """The log of a half-normal sd, whose density falls only as e^z towards minus infinity
    (a group sd that the data barely tell from zero), beside three standard normals: its mean
    -(Euler's gamma + log 2) / 2 and sd sqrt(pi^2 / 8) within 0.01 sd and 1 % (seen: 0.007 sd
    and 0.2 % on 233 points, where the square lattice of the same step took 685 points to miss
    by 0.035 sd and 3.9 %): the stretched lattice reaches 7 sds down in few steps."""

    def lp(z):
        return z[:, 0] - 0.5 * np.exp(2 * z[:, 0]) - 0.5 * (z[:, 1:] ** 2).sum(axis=1)

    post = pruned.fit(Density(lp, np.zeros(4)))
    m, c = _moments(post)
    sd = np.sqrt(np.pi**2 / 8)
    assert m[0] == pytest.approx(-(np.euler_gamma + np.log(2)) / 2, abs=0.01 * sd)
    assert np.sqrt(c[0, 0]) == pytest.approx(sd, rel=0.01)
    assert post.points[:, 0].min() < m[0] - 7 * sd and len(post.weights) < 300


def test_agrees_with_the_full_grid_in_three_dimensions():
    """A skewed, correlated density in 3 dimensions (a log sd with a Gamma(3, 2) posterior
    whose other coordinates' spread grows with it, a funnel): the pruned lattice's means and
    sds agree with the exact engine's adaptive full grid to 0.01 sd and 3 % (seen: 0.004 sd and
    2.6 % on 65 points; the square lattice of the same step, 0.018 sd and 2.3 % on 135: the
    funnel's narrow end is what neither resolves)."""

    def lp(z):
        s = z[:, 0]
        rest = (z[:, 1] - 0.5 * s) ** 2 + (z[:, 2] + 0.3 * z[:, 1]) ** 2
        return 3 * s - 2 * np.exp(s) - 0.5 * rest * np.exp(-0.6 * s) + 0.9 * s

    target = Density(lp, np.zeros(3))
    m, c = _moments(pruned.fit(target))
    mx, cx = _moments(exact.fit(target, moment_tol=1e-5))
    sd = np.sqrt(np.diag(cx))
    np.testing.assert_array_less(np.abs(m - mx), 0.01 * sd)
    np.testing.assert_array_less(np.abs(np.sqrt(np.diag(c)) / sd - 1), 0.03)


def test_budget_warns(monkeypatch):
    monkeypatch.setattr(pruned, "MAX_POINTS", 50)
    post = pruned.fit(Density(lambda z: -0.5 * (z**2).sum(axis=1), np.zeros(4)))
    assert any("budget of points" in w for w in post.warnings)
