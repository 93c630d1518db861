"""Mode and curvature on theta (engines/optimize.py): Newton's stencil against closed forms."""

from __future__ import annotations

import numpy as np

from poolwise.engines import optimize


def _density(z: np.ndarray) -> np.ndarray:
    """A smooth, skewed log density in 3 dimensions: a correlated normal plus cubic terms."""
    A = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.5]])
    c = z - np.array([0.5, -1.0, 0.2])
    return (
        -0.5 * np.einsum("ki,ij,kj->k", c, A, c)
        + 0.1 * c[:, 0] ** 3
        - 0.05 * c[:, 1] ** 2 * c[:, 2]
    )


def _hessian(z: np.ndarray) -> np.ndarray:
    A = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.5]])
    c = z - np.array([0.5, -1.0, 0.2])
    h = -A.copy()
    h[0, 0] += 0.6 * c[0]
    h[1, 1] -= 0.1 * c[2]
    h[1, 2] -= 0.1 * c[1]
    h[2, 1] -= 0.1 * c[1]
    return h


def test_two_corner_stencil_is_the_hessian_to_second_order():
    # each pair's entry from z +- h (e_i + e_j) and the axes' points (d^2 + d + 1 points): the
    # Hessian to O(h^2) like the four-corner stencil's (here to ~1e-7, h = 1e-3)
    z = np.array([0.3, -0.4, 0.9])
    for corners, size in ((2, 13), (4, 19)):
        points = optimize._hessian_points(z, optimize.HESSIAN_STEP, corners)
        assert len(points) == size
        h = optimize._hessian_from(_density(points), optimize.HESSIAN_STEP, 3, corners)
        np.testing.assert_allclose(h, _hessian(z), atol=1e-6)


def test_newton_finds_the_mode_and_its_curvature():
    # the mode where the gradient vanishes (scipy's, to 1e-9), the Hessian there; a looser
    # decrement stops a step earlier, still within ~sqrt(tol) sds
    from scipy.optimize import minimize

    ref = minimize(
        lambda z: -_density(z[None])[0], np.zeros(3), method="BFGS", options={"gtol": 1e-11}
    ).x
    mode, h, ok = optimize.mode_and_hessian(_density, np.zeros(3))
    assert ok
    np.testing.assert_allclose(mode, ref, atol=1e-7)
    np.testing.assert_allclose(h, _hessian(mode), atol=1e-5)
    loose, _, _ = optimize.mode_and_hessian(_density, np.zeros(3), tol=1e-5)
    assert np.abs(loose - ref).max() < 1e-3
