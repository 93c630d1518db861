"""Posterior marginals of an exact (grid) fit, as mixtures over the grid.

A group's theta mixes its conditional posterior (normal, beta or gamma) over the grid points. A
hyperparameter mixes, on its link scale (log or logit), one narrow normal per grid cell, centred
at the cell's point with the spread the hyperparameter has across the cell (the cell is even in
the grid's coordinates v, so each axis adds the variance of a uniform over the linearised change,
width² / 12); mu, when integrated in closed form, mixes its normal conditionals. Medians and
HDIs come from these mixtures by root-finding: the same numbers on every run.
"""

from __future__ import annotations

import math

import numpy as np

from .engines.exact import GridPosterior
from .intervals import hdi_moments, hdi_normal
from .location import ExpandedPosterior
from .mixture import BLOCK, Mixture, prune, to_link
from .model import PoolModel

# (grid points x distinct groups) up to which group intervals come from the mixture (by the cost of
# one component's distribution function); beyond, from the normal, beta or gamma distribution with
# the mixture's mean and variance
MIXTURE_BUDGET = {"normal": 1 << 22, "gamma": 1 << 20, "beta": 1 << 18}
# where, above the mode on the log scale, a tail's slope and a row's growth are read
TAIL_AT = 30.0


def theta_mixture(model: PoolModel, posterior: GridPosterior | ExpandedPosterior):
    """theta_j | data as a mixture: the conditional at grid points, and the grid (its points
    and weights; the reduced grid where mu is integrated in closed form)."""
    if isinstance(posterior, ExpandedPosterior):
        return posterior.collapsed.conditional, posterior.reduced
    return model.conditional, posterior


def group_intervals(
    model: PoolModel,
    posterior: GridPosterior | ExpandedPosterior,
    kind: str,
    moments: tuple[np.ndarray, np.ndarray],
    prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """HDIs of each distinct group's theta, from its mixture over the grid.

    ``moments`` are the mixtures' exact means and variances (the start: the normal, beta or gamma
    HDI with those moments). The groups' conditionals are built a block of groups at a time,
    a block's (points x groups) arrays cache-sized.
    """
    mean, var = moments
    lo, hi = hdi_moments(kind, mean, var, prob)
    conditional, grid = theta_mixture(model, posterior)
    points, weights = grid.points, grid.weights
    keep = prune(weights)
    cols = np.flatnonzero(var > 0)
    # normal: the budget counts every point and distinct group
    size = weights.size * var.size if kind == "normal" else keep.size * cols.size
    if weights.size == 1 or cols.size == 0 or size > MIXTURE_BUDGET[kind]:
        return lo, hi
    w = weights[keep] / weights[keep].sum()
    coarse = None if grid.coarse is None else grid.coarse[keep]
    params = None if kind == "normal" else model.params(points[keep])
    step = max(1, BLOCK // keep.size)
    for start in range(0, cols.size, step):
        c = cols[start : start + step]
        if kind == "normal":
            # on the whole grid, where mu's normals were computed for the moments, then pruned
            m, v = (a[keep] for a in conditional(points, c)[:2])
            mix = Mixture(kind, w, m, np.sqrt(v, out=v), None)
        else:
            unique = {k: u[c] for k, u in model.unique.items()}
            mix = Mixture.of(kind, w, *model.family.conditional_parameters(params, unique))
        lo[c], hi[c], _ = mix.hdi(prob, lo[c], hi[c], coarse)
    return lo, hi


def bounds(model: PoolModel, name: str) -> tuple[float, float]:
    """The range of a hyperparameter: its transform's for a free one, else the family's."""
    if name in model.names:
        t = model.transforms[model.names.index(name)]
        return float(t.lower), float(t.upper)
    return model.family.supports[name]


def scaled_link(lower: float, upper: float) -> tuple[str, float, float]:
    """The link for a variable in (lower, upper), applied to (x - shift) / scale."""
    if math.isfinite(lower) and math.isfinite(upper):
        return "logit", lower, upper - lower
    if math.isfinite(lower):
        return "log", lower, 1.0
    return "identity", 0.0, 1.0


class _Grid:
    """The grid a posterior's hyperparameters are integrated on, seen as full points z."""

    def __init__(self, model: PoolModel, posterior: GridPosterior | ExpandedPosterior) -> None:
        self.model, self.posterior = model, posterior
        self.expanded = isinstance(posterior, ExpandedPosterior)
        self.grid = posterior.reduced if self.expanded else posterior
        self.names = posterior.collapsed.names if self.expanded else model.names

    def full(self, reduced: np.ndarray) -> np.ndarray:
        """Points z of every hyperparameter (mu, integrated out, at 0: nothing else uses it)."""
        if not self.expanded:
            return reduced
        return np.insert(reduced, self.posterior.collapsed.index, 0.0, axis=1)

    def mu_normals(self, reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, precision, _ = self.posterior.collapsed.mu_given(reduced, likelihood=False)
        return mean, 1.0 / precision


def hyper_moments(
    model: PoolModel, posterior: GridPosterior | ExpandedPosterior, names: list[str]
) -> dict[str, tuple[float, float]]:
    """Posterior mean and sd of each hyperparameter in ``names``, over the grid's points (mu,
    where integrated in closed form, from its normal conditionals at each point)."""
    g = _Grid(model, posterior)
    weights, points = g.grid.weights, g.grid.points
    p = model.params(g.full(points))
    out = {}
    for name in names:
        if g.expanded and name == "mu":
            centre, spread = g.mu_normals(points)
        else:
            centre, spread = p[name][:, 0], 0.0
        mean = float(weights @ centre)
        var = float(weights @ ((centre - mean) ** 2 + spread))
        out[name] = mean, math.sqrt(max(var, 0.0))
    return out


def hyper_marginals(
    model: PoolModel, posterior: GridPosterior | ExpandedPosterior, names: list[str], prob: float
) -> dict[str, tuple[float, float, float]]:
    """Median, HDI low and HDI high of each hyperparameter in ``names``."""
    g = _Grid(model, posterior)
    grid = g.grid
    keep = prune(grid.weights)
    weights = grid.weights[keep] / grid.weights[keep].sum()
    v, points = grid.grid[keep], grid.points[keep]
    centre = model.params(g.full(points))
    sides = []
    for i in range(v.shape[1]):
        half = np.zeros(v.shape[1])
        half[i] = grid.spacing[i] / 2
        ends = [g.full(grid.mode + np.sinh(v + s * half) @ grid.chol.T) for s in (-1, 1)]
        sides.append([model.params(e) for e in ends])
    out = {}
    # the rows' mixtures by kind, link and points used: those of one are solved together
    batches: dict[tuple, list[tuple[str, float, float, np.ndarray, np.ndarray]]] = {}
    for name in names:
        x = centre[name][:, 0]
        if g.expanded and name == "mu":
            # on the whole grid, as the groups' moments had them (computed once), then pruned
            mean, var = (a[keep] for a in g.mu_normals(grid.points))
            key, shift, scale = ("normal", "identity", b""), 0.0, 1.0
            ok = slice(None)
        elif np.ptp(x) == 0:
            out[name] = (float(x[0]),) * 3
            continue
        else:
            link, shift, scale = scaled_link(*bounds(model, name))
            eta = to_link(link, (x - shift) / scale)
            width2 = sum(
                (
                    to_link(link, (b[name][:, 0] - shift) / scale)
                    - to_link(link, (a[name][:, 0] - shift) / scale)
                )
                ** 2
                for a, b in sides
            )
            ok = np.isfinite(eta) & np.isfinite(width2)
            w = weights[ok] / weights[ok].sum()
            mean = eta[ok]
            spread = np.sqrt(w @ (mean - w @ mean) ** 2)
            # a bandwidth of the cell's width: a smooth density whatever the grid's projection
            var = np.maximum(width2[ok], (1e-6 * spread) ** 2 + 1e-300)
            key = ("kernel", link, ok.tobytes())
        batches.setdefault(key, []).append((name, shift, scale, mean, var))
    for (kind, link, used), rows in batches.items():
        ok = np.frombuffer(used, dtype=bool) if used else slice(None)
        w = weights[ok] / weights[ok].sum()
        first, second = (np.stack([row[k] for row in rows], axis=1) for k in (3, 4))
        mix = Mixture.of(kind, w, first, second, link)
        values, sound = _medians_and_hdis(mix, prob)
        if not sound.all():
            # the points thin out abruptly near an end (a steep tail across wide cells), where a
            # fourth-order kernel dips below zero: a positive one of the same bandwidth (which
            # widens the interval, by about bandwidth² / sd)
            bad = ~sound
            mix = Mixture.of("normal", w, first[:, bad], second[:, bad], link)
            values[bad] = _medians_and_hdis(mix, prob)[0]
        for (name, shift, scale, _, _), row in zip(rows, values, strict=True):
            out[name] = tuple(float(shift + scale * q) for q in row)
    return out


def _medians_and_hdis(mix: Mixture, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Median, HDI low and high of each variable of a mixture (n, 3), and whether each HDI is
    sound."""
    m = mix.weights @ mix.first
    var = mix.weights @ (mix.first - m) ** 2
    if mix.kind == "normal":
        var += mix.weights @ mix.second**2
    lo, hi, sound = mix.hdi(prob, *hdi_normal(m, var, prob))
    median = mix.quantile(0.5, m)
    return np.stack([median, lo, hi], axis=1), sound


def missing_moments(
    model: PoolModel,
    posterior: GridPosterior | ExpandedPosterior,
    tails: dict[str, tuple[float, bool]],
    names: list[str],
) -> dict[str, tuple[bool, bool]]:
    """Whether each row's posterior mean, and its sd, fail to exist.

    ``tails`` holds (as its first entry) the slope s of the log density, per unit of the log scale z, far up each heavy
    upper tail. A row growing there like e^(g z) has no mean where s + g > 0 and no sd where
    s + 2 g > 0 (g is read between the same far points; mu, integrated out, grows with its
    conditional sd).
    """
    g = _Grid(model, posterior)
    out = dict.fromkeys(names, (False, False))
    for hyper, (slope, _) in tails.items():
        far = np.repeat(g.grid.mode[None, :], 2, axis=0)
        far[:, g.names.index(hyper)] += [TAIL_AT, 2 * TAIL_AT]
        p = model.params(g.full(far))
        for name in names:
            if g.expanded and name == "mu":
                mean, var = g.mu_normals(far)
                size = np.abs(mean) + np.sqrt(var)
            else:
                size = np.abs(p[name][:, 0])
            with np.errstate(divide="ignore", invalid="ignore"):
                growth = float(np.diff(np.log(size))[0] / TAIL_AT)
            no_mean, no_sd = out[name]
            out[name] = (no_mean or slope + growth > 0, no_sd or slope + 2 * growth > 0)
    return out
