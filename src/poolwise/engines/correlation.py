"""Correlation matrices from unconstrained coordinates, and the LKJ prior's density on them
(arrays only).

A k x k correlation matrix ``R = L L'`` has k (k - 1) / 2 free coordinates ``z`` on the whole
line: numpyro's ``CorrCholeskyTransform`` (the lower triangle of ``tanh(z)``, row by row, then a
signed stick-breaking that gives each row of ``L`` unit length), so that a fit by NUTS and one by
the Laplace engine share the parametrization. For k = 2 the one coordinate is ``atanh(r)``.
"""

from __future__ import annotations

import numpy as np

# the largest coordinate taken (see :func:`beyond_range`)
CORR_MAX = 10.0


def corr_cholesky(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The Cholesky factors ``L`` (n, k, k) of the correlation matrices at the rows of ``z``
    (n, k (k - 1) / 2), and the log Jacobian (n,) of the map from ``z`` to L's strict lower
    triangle (as numpyro's ``CorrCholeskyTransform.log_abs_det_jacobian``).

    Example
    -------
    >>> L, logjac = corr_cholesky(np.array([[np.arctanh(-0.5)]]), 2)
    >>> np.round(L[0] @ L[0].T, 12).tolist(), round(float(logjac[0]), 6)  # log(1 - r^2)
    ([[1.0, -0.5], [-0.5, 1.0]], -0.287682)
    """
    z = np.atleast_2d(np.asarray(z, dtype=float))
    if z.shape[1] != k * (k - 1) // 2:
        raise ValueError(f"corr_cholesky: {k} x {k} needs {k * (k - 1) // 2} coordinates")
    t = np.tanh(z)
    # 1 - tanh(z)^2 = sech(z)^2, without the cancellation near |tanh(z)| = 1
    log_sech2 = 2 * (np.log(2.0) - np.abs(z) - np.log1p(np.exp(-2 * np.abs(z))))
    n = len(z)
    L = np.zeros((n, k, k))
    L[:, 0, 0] = 1.0
    logjac = log_sech2.sum(axis=1)
    for i in range(1, k):
        log_left = np.zeros(n)  # log(1 - the squared entries so far of row i)
        for j in range(i):
            c = i * (i - 1) // 2 + j  # (i, j)'s place in the lower triangle, row by row
            if j:
                logjac += 0.5 * log_left
            L[:, i, j] = t[:, c] * np.exp(0.5 * log_left)
            log_left = log_left + log_sech2[:, c]
        L[:, i, i] = np.exp(0.5 * log_left)
    return L, logjac


def beyond_range(z: np.ndarray) -> np.ndarray:
    """Rows of ``z`` (n, c) with a coordinate beyond ``CORR_MAX`` (n,): a correlation within
    ~1e-8 of +-1, where the prior precision's entries reach 1e8 / sd^2 and the effects' mode
    loses its accuracy to round-off; the LKJ prior leaves e^-20 of its mass there.

    >>> beyond_range(np.array([[3.0], [-11.0]])).tolist()
    [False, True]
    """
    return np.any(np.abs(z) > CORR_MAX, axis=1)


def lkj_log_density(z: np.ndarray, k: int, eta: float) -> np.ndarray:
    """Log density (n,) of the coordinates ``z`` (n, k (k - 1) / 2) of a k x k correlation
    matrix under LKJ(``eta``), up to a constant: numpyro's ``LKJCholesky`` density of L plus
    the transform's log Jacobian.

    Example
    -------
    >>> z = np.arctanh(np.array([[0.0], [0.5]]))
    >>> d = lkj_log_density(z, 2, 1.0)  # r uniform: density of z is 1 - r^2
    >>> round(float(d[1] - d[0]), 6)
    -0.287682
    """
    L, logjac = corr_cholesky(z, k)
    diag = np.log(np.diagonal(L, axis1=1, axis2=2)[:, 1:])
    order = 2.0 * (eta - 1.0) + k - 1 - np.arange(1, k)
    return diag @ order + logjac


def correlations(L: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The correlations ``R[i, j]`` of ``R = L L'`` for each pair, (n, pairs).

    >>> L, _ = corr_cholesky(np.array([[0.3]]), 2)
    >>> bool(np.isclose(correlations(L, ((1, 0),))[0, 0], np.tanh(0.3)))
    True
    """
    return np.stack([(L[:, i, :] * L[:, j, :]).sum(axis=1) for i, j in pairs], axis=1)
