"""Correlation coordinates and the LKJ density on them, against numpyro's transform and
distribution (the parametrization NUTS samples)."""

from __future__ import annotations

import numpy as np
import pytest

from poolwise.engines.correlation import corr_cholesky, correlations, lkj_log_density


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("eta", [1.0, 2.5])
def test_coordinates_and_density_are_numpyros(k, eta):
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions.transforms import CorrCholeskyTransform

    z = np.random.default_rng(k).normal(size=(7, k * (k - 1) // 2)) * 1.5
    L, logjac = corr_cholesky(z, k)
    with jax.enable_x64(True):
        t = CorrCholeskyTransform()
        theirs = np.asarray(t(jnp.asarray(z)))
        their_jac = np.asarray(t.log_abs_det_jacobian(jnp.asarray(z), jnp.asarray(theirs)))
        their_lp = np.asarray(dist.LKJCholesky(k, eta).log_prob(jnp.asarray(theirs)))
    np.testing.assert_allclose(L, theirs, atol=1e-12)
    np.testing.assert_allclose(logjac, their_jac, atol=1e-10)
    # up to numpyro's normalising constant, the same at every point
    diff = lkj_log_density(z, k, eta) - (their_lp + their_jac)
    np.testing.assert_allclose(diff, diff[0], atol=1e-10)
    R = L @ np.swapaxes(L, 1, 2)
    np.testing.assert_allclose(np.diagonal(R, axis1=1, axis2=2), 1.0, atol=1e-12)
    pairs = tuple((i, j) for i in range(k) for j in range(i))
    np.testing.assert_allclose(correlations(L, pairs)[:, -1], R[:, k - 1, k - 2], atol=1e-12)


def test_wrong_number_of_coordinates_is_refused():
    with pytest.raises(ValueError, match="3 x 3 needs 3 coordinates"):
        corr_cholesky(np.zeros((1, 2)), 3)
