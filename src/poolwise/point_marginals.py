"""The hyperparameters' rows of an empirical-Bayes fit, from its normal approximation.

Empirical Bayes approximates the posterior of the free hyperparameters z (each on its
unconstrained scale) by a normal at the estimate with the inverse curvature as covariance. A
hyperparameter's link value, the log or logit of its place in its range (see
:func:`poolwise.marginals.scaled_link`), is z itself for a free one: it is exactly normal there,
and the HDI of the hyperparameter is that of a transformed normal, found by root-finding on its
distribution (a one-component :class:`~poolwise.mixture.Mixture`), with no draws. A row derived
from the free ones (the binomial's a and b from phi and kappa) gets the normal of its link value's
linearisation in z: exact where that value is affine in z (Poisson's beta = kappa / mu, the
binomial's phi = a / (a + b)), first order otherwise.

At the edge of a range (a singular fit), or along a direction the data leave flat (the normal's
sd there spans more than ``RUNAWAY`` units of z, as far as the search goes before calling a
coordinate run off to an edge), the curvature says nothing: rows that move with such a coordinate
get no sd or HDI (NaN), and the fit says so (:func:`edge_notes`).
"""

from __future__ import annotations

import numpy as np

from .engines.eb import RUNAWAY, PointPosterior
from .intervals import hdi_normal
from .marginals import bounds, scaled_link
from .mixture import Mixture, to_link
from .model import PoolModel

# step in z of the central differences that linearise a derived row's link value
STEP = 1e-4
# a link value moving less than this per unit of z does not depend on that coordinate
DEPENDS = 1e-8


def point_rows(
    model: PoolModel, post: PointPosterior, names: list[str], prob: float
) -> dict[str, tuple[float, float, float, float, float]]:
    """Estimate (as mean and median), sd and HDI of each hyperparameter in ``names``.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> from poolwise.onefactor import run_engine
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> stats = {"successes": df["y"].to_numpy(), "trials": df["n"].to_numpy()}
    >>> run = run_engine(poolwise.families.Binomial(), stats, "partial", "eb", None)
    >>> rows = point_rows(run.model, run.posterior, ["phi"], 0.94)
    >>> [round(v, 4) for v in rows["phi"]]
    [0.1423, 0.013, 0.1423, 0.1186, 0.1675]
    """
    estimate = model.params(post.points)
    edge = set(edge_rows(model, post, names, loose(post)))
    rows, normals = {}, {}
    for name in names:
        est = float(estimate[name][0, 0])
        if name in edge:
            rows[name] = (est, np.nan, est, np.nan, np.nan)
            continue
        rows[name] = (est, _delta_se(model, post, name), est, est, est)
        centre, grad = _linearised(model, post, name)
        var = float(grad @ post.cov @ grad) if model.dim else 0.0
        if var > 0:
            normals[name] = (centre, var)
    for name, (lo, hi) in _hdis(model, normals, prob).items():
        rows[name] = (*rows[name][:3], lo, hi)
    return rows


def edge_rows(
    model: PoolModel, post: PointPosterior, names: list[str], coords: list[int]
) -> list[str]:
    """The rows in ``names`` whose link value moves with a coordinate in ``coords``, or cannot be
    linearised at all (it over- or underflows)."""
    out = []
    for name in names:
        centre, grad = _linearised(model, post, name)
        moves = any(abs(grad[i]) > DEPENDS for i in coords)
        if moves or not (np.isfinite(centre) and np.isfinite(grad).all()):
            out.append(name)
    return out


def loose(post: PointPosterior) -> list[int]:
    """Coordinates estimated at the edge of their range, then those the data leave flat."""
    flat = np.sqrt(np.diag(post.cov)) > RUNAWAY
    return [*post.boundary, *(i for i in np.flatnonzero(flat) if i not in post.boundary)]


def edge_notes(model: PoolModel, post: PointPosterior) -> list[str]:
    """What the fit says about coordinates at an edge or left flat, naming the rows shown
    without sd or HDI (every row :func:`point_rows` leaves missing is named once).

    Example
    -------
    >>> import poolwise
    >>> from poolwise.onefactor import run_engine
    >>> stats = {"y": np.array([1.0, 1.1, 0.9, 1.0]), "se": np.ones(4)}
    >>> run = run_engine(poolwise.families.family_of("normal_se"), stats, "partial", "eb", None)
    >>> edge_notes(run.model, run.posterior)[0][-33:]
    'shows no sd or HDI (NaN) for tau.'
    """
    present = model.params(post.points)
    names = [name for name in model.family.supports if name in present]
    notes, named = [], set()
    for i in post.boundary:
        rows = edge_rows(model, post, names, [i])
        notes.append(
            f"{model.names[i]} was estimated at the edge of its range (between-group variation "
            "near zero or infinite concentration, like lme4's singular fit): the groups look "
            "completely pooled; prefer method='exact' to see the uncertainty. The normal "
            "approximation says nothing there: the population table shows no sd or HDI (NaN) "
            f"for {', '.join(rows)}."
        )
        named.update(rows)
    rest = [n for n in edge_rows(model, post, names, loose(post)) if n not in named]
    flat = [model.names[i] for i in loose(post) if i not in post.boundary]
    cause = (
        f"the marginal likelihood is nearly flat in {', '.join(flat)} about its maximum (an sd "
        f"over {RUNAWAY:g} on the log or logit scale)"
        if flat
        else "the estimate over- or underflows"
    )
    if rest:
        notes.append(
            f"{cause}: the normal approximation of empirical Bayes says nothing there, and the "
            f"population table shows no sd or HDI (NaN) for {', '.join(rest)}"
        )
    return notes


def _link_value(model: PoolModel, name: str, z: np.ndarray) -> np.ndarray:
    """The link value of a hyperparameter at points z (K, d)."""
    link, shift, scale = scaled_link(*bounds(model, name))
    x = model.params(z)[name][:, 0]
    with np.errstate(all="ignore"):
        return to_link(link, (x - shift) / scale)


def _linearised(model: PoolModel, post: PointPosterior, name: str) -> tuple[float, np.ndarray]:
    """A row's link value at the estimate and its gradient in z: exact for a free row (z itself,
    or the identity transform's loc + scale z), central differences for a derived one."""
    if name in model.names:
        i = model.names.index(name)
        t = model.transforms[i]
        link = scaled_link(t.lower, t.upper)[0]
        grad = np.zeros(model.dim)
        grad[i] = t.scale if link == "identity" else 1.0
        value = model.params(post.points)[name][0, 0] if link == "identity" else post.mode[i]
        return float(value), grad
    centre = float(_link_value(model, name, post.points)[0])
    if model.dim == 0:
        return centre, np.zeros(0)
    steps = STEP * np.eye(model.dim)
    ahead = _link_value(model, name, post.mode + steps)
    behind = _link_value(model, name, post.mode - steps)
    with np.errstate(invalid="ignore"):
        return centre, (ahead - behind) / (2 * STEP)


def _hdis(
    model: PoolModel, normals: dict[str, tuple[float, float]], prob: float
) -> dict[str, tuple[float, float]]:
    """HDI of each row whose link value is N(centre, var) (``normals``), the rows of one link
    solved together."""
    out = {}
    links = {name: scaled_link(*bounds(model, name)) for name in normals}
    for link in dict.fromkeys(v[0] for v in links.values()):
        group = [name for name in normals if links[name][0] == link]
        first, second = (np.array([[normals[name][k] for name in group]]) for k in (0, 1))
        mix = Mixture.of("normal", np.ones(1), first, second, link)
        lo, hi, _ = mix.hdi(prob, *hdi_normal(first[0], second[0], prob))
        for k, name in enumerate(group):
            _, shift, scale = links[name]
            out[name] = (float(shift + scale * lo[k]), float(shift + scale * hi[k]))
    return out


def _delta_se(model: PoolModel, post: PointPosterior, name: str) -> float:
    """Standard error of a hyperparameter estimate by the delta method (0 when it is fixed)."""
    if model.dim == 0:
        return 0.0
    step = 1e-6
    base = model.params(post.points)[name][0, 0]
    grad = np.array(
        [
            (model.params(post.points + step * np.eye(model.dim)[i])[name][0, 0] - base) / step
            for i in range(model.dim)
        ]
    )
    return float(np.sqrt(max(grad @ post.cov @ grad, 0.0)))
