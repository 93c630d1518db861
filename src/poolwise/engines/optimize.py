"""Mode finding and curvature on the unconstrained hyperparameter space (shared by the engines)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LogDensity = Callable[[np.ndarray], np.ndarray]
# a log density's value (K,), gradient (K, d) and a positive semi-definite stand-in for minus its
# Hessian (K, d, d) at rows of z (K, d)
Derivatives = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
# a log density's exact Hessian (K, d, d) at rows of z (K, d)
Hessian = Callable[[np.ndarray], np.ndarray]
GRAD_STEP = 1e-5
HESSIAN_STEP = 1e-3
NEWTON_STEPS = 50
# Newton stops when the squared decrement g' (-H)^-1 g, twice the gain still to come in the log
# density, is this small: the step is then ~1e-5 posterior sds, and the point it reaches (Newton's
# error squares each step) ~1e-10 from the mode
NEWTON_TOL = 1e-10
# no Newton step moves a coordinate further than this (a factor e^2 in a scale)
MAX_STEP = 2.0
# relative rounding error of a log density: a fall smaller than this is no fall
ROUNDING = 1e-10
# scoring (steps by the information) stops when the gain its step promises, g' step (the squared
# decrement where the step is not cut), is this small: the mode is then ~1e-4 sds away
SCORING_TOL = 1e-8
# forward-difference step of the Hessian from exact gradients
GRADIENT_STEP = 1e-4


def known_derivatives(target: object) -> tuple[Derivatives | None, Hessian | None]:
    """A target's exact derivatives and Hessian, where it offers them (else None)."""
    return getattr(target, "derivatives", None), getattr(target, "hessian", None)


def find_mode(log_density: LogDensity, z0: np.ndarray) -> tuple[np.ndarray, bool]:
    """Maximise ``log_density`` (vectorised over rows) from ``z0``; returns the mode and success.

    Newton's method on central differences (one vectorised evaluation a step) while the density
    is concave along the way; otherwise L-BFGS, polished by Nelder–Mead when it does not converge.

    Example
    -------
    >>> mode, ok = find_mode(lambda z: -((z - 2.0) ** 2).sum(axis=1), np.zeros(1))
    >>> round(float(mode[0]), 4), ok
    (2.0, True)
    """
    z0 = np.asarray(z0, dtype=float)
    found = _newton(log_density, z0)
    if found is not None:
        return found[0], True
    return _quasi_newton(log_density, z0)


def _newton(log_density: LogDensity, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mode by damped Newton steps from ``z`` and the Hessian of the last step (a step of
    ~1e-7 sds from the mode: the same to that share), or None where that does not get there."""
    d = z.size
    offsets = np.vstack([np.eye(d) * GRAD_STEP, -np.eye(d) * GRAD_STEP])
    top, moved = -np.inf, np.zeros(d)
    for _ in range(NEWTON_STEPS):
        values = log_density(np.vstack([_hessian_points(z, HESSIAN_STEP), z + offsets]))
        if not np.all(np.isfinite(values)):
            return None
        if values[0] < top - ROUNDING * (1 + abs(top)):  # downhill: back to half the step
            moved /= 2
            if not np.any(np.abs(moved) > ROUNDING * (1 + np.abs(z))):
                return None
            z = z - moved
            continue
        grad = (values[-2 * d : -d] - values[-d:]) / (2 * GRAD_STEP)
        h = _hessian_from(values, HESSIAN_STEP, d)
        try:
            step = _newton_step(h, grad)
        except np.linalg.LinAlgError:
            return None
        top = values[0]
        if float(grad @ step) < NEWTON_TOL:  # the squared Newton decrement
            return z + step, h
        moved = step * min(1.0, MAX_STEP / float(np.max(np.abs(step))))
        z = z + moved
    return None


def _newton_step(h: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """-H^-1 g where -H is positive definite (else LinAlgError)."""
    chol = np.linalg.cholesky(-h)
    return np.linalg.solve(chol.T, np.linalg.solve(chol, grad))


def _quasi_newton(log_density: LogDensity, z0: np.ndarray) -> tuple[np.ndarray, bool]:
    """L-BFGS on central-difference gradients, then Nelder–Mead where it does not converge."""
    from scipy.optimize import minimize  # slow to import: only where Newton's method fails

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


def _scoring(derivatives: Derivatives, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mode and the gradient there by steps ``I^-1 g`` (I the information), halved while
    the density falls; None where that does not get there."""
    f, g, info = (a[0] for a in derivatives(z[None]))
    for _ in range(NEWTON_STEPS):
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            return None
        w, v = np.linalg.eigh(info)
        step = v @ ((v.T @ g) / np.maximum(w, 1e-12 * max(float(w.max()), 1.0)))
        step *= MAX_STEP / max(float(np.max(np.abs(step))), MAX_STEP)
        if float(g @ step) < SCORING_TOL:
            return z, g
        for _ in range(40):
            fn, gn, infon = (a[0] for a in derivatives((z + step)[None]))
            if fn >= f - ROUNDING * (1 + abs(f)):
                break
            step /= 2
        else:
            return None
        z, f, g, info = z + step, fn, gn, infon
    return None


def mode_and_hessian(
    log_density: LogDensity,
    z0: np.ndarray,
    derivatives: Derivatives | None = None,
    exact_hessian: Hessian | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The mode of ``log_density`` (searched from ``z0``), its Hessian there and whether the
    search succeeded. With ``derivatives`` (the same density's exact gradient and information):
    scoring steps, then the Hessian: ``exact_hessian``'s where given, else by forward
    differences of the gradient (d evaluations); else Newton's method on the values alone, the
    Hessian its last step's (or L-BFGS's mode and :func:`hessian` there).

    Example
    -------
    >>> f = lambda z: -((z - 2.0) ** 2).sum(axis=1)
    >>> d = lambda z: (f(z), -2 * (z - 2.0), np.tile(2 * np.eye(z.shape[1]), (len(z), 1, 1)))
    >>> mode, h, ok = mode_and_hessian(f, np.zeros(1), d)
    >>> round(float(mode[0]), 4), round(float(h[0, 0]), 4), ok
    (2.0, -2.0, True)
    """
    z0 = np.asarray(z0, dtype=float)
    found = None if derivatives is None else _scoring(derivatives, z0)
    if found is None:
        found = _newton(log_density, z0)
        if found is not None:
            return *found, True
        mode, ok = _quasi_newton(log_density, z0)
        return mode, hessian(log_density, mode) if ok else np.full((z0.size,) * 2, np.nan), ok
    mode, g = found
    if exact_hessian is not None:
        return mode, exact_hessian(mode[None])[0], True
    ahead = derivatives(mode + GRADIENT_STEP * np.eye(mode.size))[1]
    h = (ahead - g) / GRADIENT_STEP
    return mode, 0.5 * (h + h.T), True


def _hessian_points(z: np.ndarray, step: float) -> np.ndarray:
    """``z`` first, then the central-difference stencil that :func:`_hessian_from` reads."""
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
    return np.array(points)


def _hessian_from(values: np.ndarray, step: float, d: int) -> np.ndarray:
    """The Hessian from the log density at :func:`_hessian_points` (and anything after them)."""
    f0, h = values[0], np.empty((d, d))
    pos = 1
    for i in range(d):
        h[i, i] = (values[pos] - 2 * f0 + values[pos + 1]) / step**2
        pos += 2
        for j in range(i):
            pp, mm, pm, mp = values[pos : pos + 4]
            h[i, j] = h[j, i] = (pp + mm - pm - mp) / (4 * step**2)
            pos += 4
    return h


def hessian(log_density: LogDensity, z: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of ``log_density`` at ``z`` (one vectorised evaluation)."""
    return _hessian_from(log_density(_hessian_points(z, step)), step, z.size)


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


def gaussian_at_mode(
    log_density: LogDensity,
    z0: np.ndarray,
    derivatives: Derivatives | None = None,
    exact_hessian: Hessian | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The mode of ``log_density`` (searched from ``z0``; by ``derivatives`` where given, see
    :func:`mode_and_hessian`), the Cholesky factor of the covariance from its curvature there,
    and whether it is concave there (else a diagonal stands in).

    Example
    -------
    >>> mode, chol, concave = gaussian_at_mode(lambda z: -((z - 1.0) ** 2).sum(axis=1), np.zeros(2))
    >>> mode.round(4).tolist(), np.diag(chol).round(4).tolist(), concave
    ([1.0, 1.0], [0.7071, 0.7071], True)
    """
    mode, h, ok = mode_and_hessian(log_density, z0, derivatives, exact_hessian)
    if not ok:
        raise ValueError(
            "the posterior density of the hyperparameters is zero or undefined everywhere tried: "
            "check the priors against the data"
        )
    cov, concave = covariance(h)
    return mode, np.linalg.cholesky(cov), concave
