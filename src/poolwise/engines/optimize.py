"""Mode finding and curvature on the unconstrained hyperparameter space (shared by the engines)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

LogDensity = Callable[[np.ndarray], np.ndarray]
GRAD_STEP = 1e-5
GRAD_STEP = 1e-5


def find_mode(log_density: LogDensity, z0: np.ndarray) -> tuple[np.ndarray, bool]:
    """Maximise ``log_density`` (vectorised over rows) from ``z0``; returns the mode and success.

    Example
    -------
    >>> mode, ok = find_mode(lambda z: -((z - 2.0) ** 2).sum(axis=1), np.zeros(1))
    >>> round(float(mode[0]), 4), ok
    (2.0, True)
    """
    z0 = np.asarray(z0, dtype=float)
    d = z0.size
    offsets = np.vstack([np.zeros(d), np.eye(d) * GRAD_STEP, -np.eye(d) * GRAD_STEP])

    def objective(z):
        value = float(log_density(z[None, :])[0])
        return -value if np.isfinite(value) else 1e300

    def with_gradient(z):
        values = log_density(z + offsets)
        if not np.all(np.isfinite(values)):
            return objective(z), np.zeros(d)
        grad = (values[1 : d + 1] - values[d + 1 :]) / (2 * GRAD_STEP)
        return -float(values[0]), -grad

    options = {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 500}
    best = minimize(with_gradient, z0, jac=True, method="L-BFGS-B", options=options)
    if not best.success:
        polished = minimize(
            objective, best.x, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12}
        )
        if polished.fun < best.fun:
            best = polished
    return best.x, bool(np.isfinite(best.fun) and best.fun < 1e300)


def hessian(log_density: LogDensity, z: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of ``log_density`` at ``z`` (one vectorised evaluation)."""
    d = z.size
    eye = np.eye(d) * step
    points = [z]
    for i in range(d):
        points += [z + eye[i], z - eye[i]]
        for j in range(i):
            points += [
                z + eye[i] + eye[j],
                z - eye[i] - eye[j],
                z + eye[i] - eye[j],
                z - eye[i] + eye[j],
            ]
    values = log_density(np.array(points))
    f0, h = values[0], np.empty((d, d))
    diag = {}
    pos = 1
    for i in range(d):
        diag[i] = (values[pos] - 2 * f0 + values[pos + 1]) / step**2
        h[i, i] = diag[i]
        pos += 2
        for j in range(i):
            pp, mm, pm, mp = values[pos : pos + 4]
            h[i, j] = h[j, i] = (pp + mm - pm - mp) / (4 * step**2)
            pos += 4
    return h


def covariance(h: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance from the Hessian of a log density; falls back to a diagonal when not concave."""
    d = h.shape[0]
    if d == 0:
        return np.zeros((0, 0)), True
    if np.all(np.isfinite(h)):
        try:
            cov = np.linalg.inv(-h)
            np.linalg.cholesky(cov)
            return cov, True
        except np.linalg.LinAlgError:
            pass
    curv = np.abs(np.diag(h))
    curv = np.where(np.isfinite(curv) & (curv > 1e-8), curv, 1.0)
    return np.diag(1.0 / curv), False
