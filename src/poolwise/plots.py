"""Pictures of partial pooling. Every function returns a matplotlib Figure and never shows it.

Figures are built without pyplot (no global state, any backend). Each takes an optional ``ax``
to draw into instead of a new figure. Artists carry ids (``artist.get_gid()``): ``"raw"``,
``"pooled"``, ``"estimates"``, ``"shrinkage"``, ``"hdi"``, ``"population"``, ``"prior"``,
``"replicated"``, ``"observed"``, so that a figure can be inspected or restyled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .fitdata import FitData
    from .simulate import PredictiveCheck

RAW_COLOR, POOLED_COLOR, POPULATION_COLOR = "0.45", "C0", "C1"
# above this many groups, dense collections are drawn as an embedded image in vector output
RASTER_GROUPS = 1000
# the forest plot shows this many groups at each end when there are too many to list
FOREST_DEFAULT = 20


# ----------------------------------------------------------------------- helpers
def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _root(ax: Axes) -> Figure:
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure: climb to the Figure
        fig = fig.figure
    return fig


def _one_axes(ax: Any, width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.axes import Axes

    if ax is None:
        fig = _new_figure(width, height)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return _root(ax), ax


def _many_axes(ax: Any, n: int, width: float, height: float, rows: int = 1) -> tuple[Figure, list]:
    from matplotlib.axes import Axes

    if ax is None:
        fig = _new_figure(width, height)
        grid = fig.subplots(rows, n // rows, squeeze=False)
        return fig, list(grid.ravel())
    axes = (
        [ax]
        if isinstance(ax, Axes)
        else list(ax)
        if isinstance(ax, Sequence | np.ndarray)
        else None
    )
    if axes is None or not all(isinstance(a, Axes) for a in np.ravel(axes)):
        raise TypeError(
            f"ax must be a matplotlib Axes, a sequence of {n} Axes, or None; got {type(ax).__name__}"
        )
    axes = list(np.ravel(axes))
    if len(axes) != n:
        raise ValueError(f"ax: this plot needs {n} Axes, got {len(axes)}")
    return _root(axes[0]), axes


def group_sizes(fit: FitData) -> np.ndarray:
    """How much data each group has (rows, precision 1/se², trials, exposure), as floats."""
    return np.asarray(fit.family.size(fit.observed), dtype=float)


def marker_areas(sizes: np.ndarray, largest: float = 220.0, smallest: float = 6.0) -> np.ndarray:
    """Marker areas (points²) proportional to group size, with a floor to keep dots visible.

    Example
    -------
    >>> marker_areas(np.array([100.0, 50.0, 0.0])).tolist()
    [220.0, 113.0, 6.0]
    """
    sizes = np.asarray(sizes, dtype=float)
    top = np.nanmax(sizes) if sizes.size and np.nanmax(sizes) > 0 else 1.0
    return smallest + (largest - smallest) * np.nan_to_num(sizes / top)


def spread_labels(y: np.ndarray, gap: float) -> np.ndarray:
    """Label positions near ``y`` (same order) that are at least ``gap`` apart.

    Example
    -------
    >>> spread_labels(np.array([0.5, 0.51, 0.0]), 0.1).round(3).tolist()
    [0.455, 0.555, 0.0]
    """
    y = np.asarray(y, dtype=float)
    order = np.argsort(y, kind="stable")
    pos = y[order].copy()
    # push up from the bottom, then centre each cluster of labels on its points
    clusters: list[list[int]] = []
    for i in range(len(pos)):
        if clusters and pos[i] < pos[clusters[-1][-1]] + gap:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    out = np.empty_like(pos)
    for members in clusters:
        centre = pos[members].mean()
        offsets = (np.arange(len(members)) - (len(members) - 1) / 2) * gap
        out[members] = centre + offsets
    # clusters may now overlap their neighbours: repeat until stable (few labels, cheap)
    for _ in range(len(pos)):
        moved = False
        for i in range(1, len(out)):
            if out[i] < out[i - 1] + gap - 1e-12:
                out[i] = out[i - 1] + gap
                moved = True
        if not moved:
            break
    result = np.empty_like(out)
    result[order] = out
    return result


def posterior_centre(row: pd.Series) -> float:
    """A hyperparameter's posterior median (its mean may not exist), or its estimate where the
    table has no median."""
    median = row.get("median", np.nan)
    return float(row["mean"] if np.isnan(median) else median)


def population_mean(fit: FitData) -> float:
    """The posterior mean of the population location (mu or phi), the line estimates shrink to
    (0 for a regression's level effects, deviations whose family has no location)."""
    loc = fit.family.location
    if loc is None:
        return 0.0
    if loc in fit.population.index:
        row = fit.population.loc[loc]
        if np.isnan(row["mean"]) and "median" in row:  # a mean that does not exist
            return float(row["median"])
        return float(row["mean"])
    return float(np.average(fit.groups["mean"], weights=group_sizes(fit)))


def _style(fit: FitData) -> dict[str, float]:
    j = fit.n_groups
    return {
        "lw": 1.2 if j <= 50 else 0.8 if j <= 500 else 0.4,
        "alpha": 0.85 if j <= 50 else float(np.clip(40.0 / j, 0.04, 0.6)),
        "largest": 220.0 if j <= 50 else 60.0 if j <= 500 else 18.0,
        "smallest": 8.0 if j <= 50 else 2.0,
    }


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _population_line(ax: Axes, fit: FitData, vertical: bool = False) -> None:
    m = population_mean(fit)
    line = ax.axvline if vertical else ax.axhline
    line(
        m,
        color=POPULATION_COLOR,
        ls="--",
        lw=1.5,
        zorder=1,
        label=f"population mean {_fmt(m)}",
        gid="population",
    )


# ----------------------------------------------------------------------- shrinkage
def plot_shrinkage(
    fit: FitData,
    ax: Axes | None = None,
    *,
    labels: int | bool | None = None,
    title: str | None = None,
) -> Figure:
    """The shrinkage plot: raw estimate (left) → pooled posterior mean (right), one line per group.

    Marker area grows with the group's size; the dashed line is the population mean. Groups with
    little data travel furthest. ``labels``: ``True`` names every group, an integer names that
    many groups that moved the most, ``False`` none; by default all groups up to 12, else 3.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.DataFrame({"student": ["Alyssa", "Ben", "Carmen", "Diego", "Emi", "Farid"],
    ...                    "k": [70, 28, 6, 3, 2, 0], "n": [100, 40, 10, 5, 2, 1]})
    >>> fit = poolwise.fit(df, group="student", successes="k", trials="n", priors={"a": 6, "b": 4})
    >>> fig = fit.plot_shrinkage()
    >>> [c.get_gid() for c in fig.axes[0].collections]
    ['shrinkage', 'raw', 'pooled']
    """
    from matplotlib.collections import LineCollection

    j = fit.n_groups
    fig, ax = _one_axes(ax, 6.4, 5.2 if j <= 50 else 6.0)
    st = _style(fit)
    raw = fit.groups["raw"].to_numpy(dtype=float)
    pooled = fit.groups["mean"].to_numpy(dtype=float)
    areas = marker_areas(group_sizes(fit), st["largest"], st["smallest"])
    ok = np.isfinite(raw)
    dense = j > RASTER_GROUPS
    segments = np.stack(
        [
            np.column_stack([np.zeros(ok.sum()), raw[ok]]),
            np.column_stack([np.ones(ok.sum()), pooled[ok]]),
        ],
        axis=1,
    )
    lines = LineCollection(
        segments,
        colors=POOLED_COLOR,
        linewidths=st["lw"],
        alpha=st["alpha"] * 0.7,
        gid="shrinkage",
        zorder=2,
    )
    ax.add_collection(lines)
    ax.scatter(
        np.zeros(ok.sum()),
        raw[ok],
        s=areas[ok],
        color=RAW_COLOR,
        alpha=st["alpha"],
        edgecolors="white" if j <= 50 else "none",
        linewidths=0.5,
        zorder=3,
        gid="raw",
        label="raw estimate",
    )
    ax.scatter(
        np.ones(j),
        pooled,
        s=areas,
        color=POOLED_COLOR,
        alpha=st["alpha"],
        edgecolors="white" if j <= 50 else "none",
        linewidths=0.5,
        zorder=3,
        gid="pooled",
        label="partial pooling",
    )
    if dense:
        for c in ax.collections:
            c.set_rasterized(True)
    _population_line(ax, fit)
    # labels: the groups that moved most (all of them when few)
    if labels is None:
        labels = True if j <= 12 else 3
    if isinstance(labels, bool):
        chosen = np.arange(j) if labels else np.array([], dtype=int)
    elif isinstance(labels, int | np.integer) and labels >= 0:
        shift = np.where(ok, np.abs(pooled - np.nan_to_num(raw)), -np.inf)
        chosen = np.argsort(-shift, kind="stable")[: int(labels)]
    else:
        raise ValueError(f"labels must be True, False or a non-negative integer, got {labels!r}")
    names = fit.groups.index
    values = np.concatenate([raw[ok], pooled])
    span = float(np.ptp(values)) or 1.0
    placed = spread_labels(pooled[chosen], 0.045 * span)
    for i, y_text in zip(chosen, placed, strict=True):
        text = f"{names[i]}  " + (f"{_fmt(raw[i])} → " if ok[i] else "") + _fmt(pooled[i])
        ax.annotate(
            text,
            (1, pooled[i]),
            xytext=(1.12, y_text),
            textcoords="data",
            va="center",
            fontsize=8 if j <= 12 else 7,
            color="0.2",
            gid="label",
            # from the label's left edge, not clipped to its box (slow: bisections at every draw)
            arrowprops={
                "arrowstyle": "-",
                "color": "0.6",
                "lw": 0.6,
                "relpos": (0, 0.5),
                "patchA": None,
                "shrinkA": 2,
                "shrinkB": 3,
            },
        )
    ax.set_xlim(-0.3, 2.1 if len(chosen) else 1.3)
    ax.set_xticks([0, 1], [f"raw\n{fit.family.raw_label}", "partial pooling\nposterior mean"])
    ax.set_ylabel("theta")
    ax.legend(loc="best", fontsize=8, frameon=False, handles=ax.get_lines()[:1])
    ax.set_title(
        title or f"Shrinkage of {j:,} groups (marker area ∝ {fit.family.size_label})",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    return fig


# ----------------------------------------------------------------------- estimates vs size
POOLING_TITLE = {"none": "No pooling", "complete": "Complete pooling", "partial": "Partial pooling"}


def plot_estimates(
    fits: FitData | Mapping[str, FitData] | Any,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    poolings: Sequence[str] | None = None,
) -> Figure:
    """Each group's estimate and HDI against its size, one panel per pooling side by side.

    ``fits`` is one fit (drawn alone), a mapping of pooling to fit, or a
    :class:`~poolwise.Comparison` (its ``fits``); ``poolings`` picks and orders the panels
    (default: every fit given). A fit's own ``plot_estimates()`` fits no pooling next to it.
    The dashed line is the partially pooled population mean in every panel.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> fig = fit.plot_estimates()
    >>> [a.get_title() for a in fig.axes]
    ['No pooling', 'Partial pooling']
    """
    from .fitdata import FitData

    if isinstance(fits, FitData):
        source = {fits.pooling: fits}
    elif isinstance(fits, Mapping) or isinstance(getattr(fits, "fits", None), Mapping):
        source = dict(fits if isinstance(fits, Mapping) else fits.fits)
    else:
        raise TypeError(
            f"fits must be a PoolFit, a Comparison or a mapping of pooling to PoolFit, "
            f"got {type(fits).__name__}"
        )
    poolings = list(source) if poolings is None else list(poolings)
    missing = [p for p in poolings if p not in source]
    if missing:
        raise ValueError(
            f"poolings: {', '.join(map(repr, missing))} not among the fits "
            f"({', '.join(map(repr, source))})"
        )
    chosen = {p: source[p] for p in poolings}
    if not chosen:
        raise ValueError("poolings: name at least one pooling")
    first = next(iter(chosen.values()))
    reference = chosen.get("partial", first)
    fig, axes = _many_axes(ax, len(chosen), 5.2 * len(chosen), 4.4)
    sizes = group_sizes(first)
    logx = np.nanmin(sizes) > 0 and np.nanmax(sizes) / np.nanmin(sizes) > 30
    for a, (pooling, f) in zip(axes, chosen.items(), strict=True):
        _draw_estimates(a, f, reference, sizes, POOLING_TITLE.get(pooling, pooling))
        if logx:
            a.set_xscale("log")
    if len(axes) > 1:
        lo = min(a.get_ylim()[0] for a in axes)
        hi = max(a.get_ylim()[1] for a in axes)
        for a in axes:
            a.set_ylim(lo, hi)
    return fig


def _draw_estimates(
    ax: Axes, fit: FitData, reference: FitData, sizes: np.ndarray, title: str
) -> None:
    from matplotlib.collections import LineCollection

    st = _style(fit)
    g = fit.groups
    mean = g["mean"].to_numpy(dtype=float)
    segments = np.stack(
        [np.column_stack([sizes, g["hdi_low"]]), np.column_stack([sizes, g["hdi_high"]])], axis=1
    )
    hdi = LineCollection(
        segments,
        colors=POPULATION_COLOR,
        alpha=min(0.6, st["alpha"]),
        linewidths=st["lw"] * 1.5,
        gid="hdi",
        label=f"{int(fit.hdi_prob * 100)}% HDI",
    )
    ax.add_collection(hdi)
    ax.scatter(
        sizes,
        mean,
        s=marker_areas(sizes, st["largest"] / 3, st["smallest"]),
        color=POOLED_COLOR,
        alpha=st["alpha"],
        zorder=3,
        gid="estimates",
        label="posterior mean",
    )
    if fit.n_groups > RASTER_GROUPS:
        for c in ax.collections:
            c.set_rasterized(True)
    _population_line(ax, reference)
    ax.autoscale_view()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"group size ({fit.family.size_label})")
    ax.set_ylabel("theta")
    ax.legend(fontsize=8, loc="best", frameon=False)
    ax.grid(alpha=0.3)


# ----------------------------------------------------------------------- forest
def plot_forest(
    fit: FitData,
    ax: Axes | None = None,
    *,
    top: int | None = None,
    bottom: int | None = None,
    raw: bool = True,
) -> Figure:
    """Caterpillar plot: groups sorted by posterior mean, with HDIs and (crosses) raw estimates.

    With more than 40 groups and neither ``top`` nor ``bottom`` given, the 20 highest and the 20
    lowest are shown; ``top=k`` / ``bottom=k`` choose how many from each end.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> fig = fit.plot_forest(top=5, bottom=5)
    >>> len(fig.axes[0].get_yticks())
    10
    """
    from matplotlib.collections import LineCollection

    j = fit.n_groups
    for name, value in (("top", top), ("bottom", bottom)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
    if top is None and bottom is None:
        top = bottom = j if j <= 2 * FOREST_DEFAULT else FOREST_DEFAULT
    top, bottom = min(top or 0, j), min(bottom or 0, j)
    order = np.argsort(-fit.groups["mean"].to_numpy(dtype=float), kind="stable")
    head = order[:top]
    tail = order[max(j - bottom, top) :]
    shown = np.concatenate([head, tail])
    if len(shown) == 0:
        raise ValueError("top, bottom: ask for at least one group")
    gap = len(head) + len(tail) < j and len(tail) > 0 and len(head) > 0
    m = len(shown)
    fig, ax = _one_axes(ax, 6.4, min(2.0 + 0.22 * (m + gap), 30.0))
    y = np.arange(m, 0, -1, dtype=float)
    if gap:
        y[len(head) :] -= 1.0
    g = fit.groups.iloc[shown]
    segments = np.stack(
        [np.column_stack([g["hdi_low"], y]), np.column_stack([g["hdi_high"], y])], axis=1
    )
    ax.add_collection(
        LineCollection(
            segments,
            colors=POOLED_COLOR,
            linewidths=1.6,
            alpha=0.8,
            gid="hdi",
            label=f"{int(fit.hdi_prob * 100)}% HDI",
        )
    )
    sizes = group_sizes(fit)[shown]
    ax.scatter(
        g["mean"],
        y,
        s=marker_areas(sizes, 60.0, 10.0),
        color=POOLED_COLOR,
        zorder=3,
        gid="estimates",
        label="posterior mean",
    )
    if raw:
        ax.scatter(
            g["raw"],
            y,
            marker="x",
            s=18,
            color=RAW_COLOR,
            zorder=2,
            gid="raw",
            label="raw estimate",
        )
    _population_line(ax, fit, vertical=True)
    if gap:
        ax.axhline(len(tail) + 0.0, color="0.6", lw=0.8, ls=":", gid="gap")
        ax.annotate(
            f"… {j - m:,} groups not shown …",
            (0.5, len(tail)),
            xycoords=("axes fraction", "data"),
            ha="center",
            va="center",
            fontsize=8,
            color="0.4",
            bbox={"fc": "white", "ec": "none", "pad": 1},
        )
    ax.set_yticks(y, [str(label) for label in g.index], fontsize=8 if m <= 40 else 6)
    ax.set_ylim(0.3 - gap, m + 0.7)
    ax.autoscale_view(scaley=False)
    ax.set_xlabel("theta")
    shown_text = f"{m} of {j:,} groups" if m < j else f"{j} groups"
    ax.set_title(f"Group estimates, sorted ({shown_text})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


# ----------------------------------------------------------------------- population
def _free_names(fit: FitData) -> list[str]:
    fam = fit.family
    if not hasattr(fam, "parametrizations"):  # a regression: every sampled parameter
        return [n for n in fit.population.index if n in fit.hyper_draws]
    if fit.pooling == "none":
        candidates = list(fam.nuisance)
    elif fit.pooling == "complete":
        candidates = [fam.location, *fam.nuisance]
    else:
        candidates = [*fam.parametrizations[0], *fam.nuisance]
    return [n for n in candidates if n in fit.population.index]


def plot_population(fit: FitData, ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """Posterior of each population hyperparameter, with its prior (dashed) and HDI.

    Empirical-Bayes fits show the estimate and its normal approximation; fixed values are marked
    as such. NUTS fits also get a trace plot and a rank plot per hyperparameter (rows 2 and 3).

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> [a.get_title() for a in fit.plot_population().axes]
    ['phi', 'kappa']
    """
    names = _free_names(fit) or [n for n in fit.population.index[:1]]
    if not names:
        raise ValueError("fit: it has no population hyperparameters to plot")
    nuts = fit.method == "nuts"
    rows = 3 if nuts else 1
    fig, axes = _many_axes(ax, rows * len(names), 3.6 * len(names), 3.0 * rows, rows=rows)
    for i, name in enumerate(names):
        _draw_hyper(axes[i], fit, name)
        if nuts:
            _draw_trace(axes[len(names) + i], axes[2 * len(names) + i], fit, name)
    return fig


def _draw_hyper(ax: Axes, fit: FitData, name: str) -> None:
    from .priors import Normal, Prior

    draws = np.asarray(fit.hyper_draws.get(name, []), dtype=float)
    row = fit.population.loc[name]
    prior = fit.priors.get(name)
    fixed = draws.size == 0 or np.ptp(draws) == 0
    caption = f"{name} = {_fmt(float(row['mean']))}"
    if fixed and fit.method == "eb" and row["sd"] > 0:
        x = np.linspace(row["mean"] - 4 * row["sd"], row["mean"] + 4 * row["sd"], 200)
        ax.plot(
            x,
            np.exp(Normal(row["mean"], row["sd"]).logpdf(x)),
            color=POOLED_COLOR,
            gid="posterior",
            label="estimate ± se (normal approx.)",
        )
        ax.axvline(row["mean"], color=POOLED_COLOR, gid="mean")
    elif fixed:
        ax.axvline(
            row["mean"],
            color=POOLED_COLOR,
            gid="mean",
            label="fixed" if fit.method != "eb" else "estimate (at the boundary)",
        )
        ax.set_yticks([])
    else:
        lo, hi = np.quantile(draws, [0.001, 0.999])
        centre = posterior_centre(row)
        # a positive hyperparameter spread over decades (a heavy tail) is drawn on a log axis,
        # as densities per unit of log(x): the prior's is p(x) x
        log_axis = fit.family.supports.get(name, (-np.inf, 0.0))[0] >= 0 and 0 < 100 * lo < hi
        edges = np.geomspace(lo, hi, 41) if log_axis else np.linspace(lo, hi, 41)
        step = np.log(edges[1] / edges[0]) if log_axis else 1.0
        ax.hist(
            draws,
            bins=edges,
            density=not log_axis,
            weights=np.full(draws.size, 1.0 / (draws.size * step)) if log_axis else None,
            color=POOLED_COLOR,
            alpha=0.55,
            gid="posterior",
            label="posterior",
        )
        ax.axvline(centre, color=POOLED_COLOR, gid="median")
        ax.plot(
            [max(row["hdi_low"], lo) if log_axis else row["hdi_low"], row["hdi_high"]],
            [0, 0],
            color="k",
            lw=4,
            solid_capstyle="butt",
            gid="hdi",
            label=f"{int(fit.hdi_prob * 100)}% HDI",
            clip_on=False,
        )
        if log_axis:
            ax.set_xscale("log")
        if isinstance(prior, Prior):
            x = np.geomspace(lo, hi, 200) if log_axis else np.linspace(lo, hi, 200)
            with np.errstate(all="ignore"):
                density = np.exp(prior.logpdf(x)) * (x if log_axis else 1.0)
            if np.all(np.isfinite(density)) and prior.proper:
                ax.plot(x, density, color="0.3", ls="--", lw=1, gid="prior", label="prior")
        caption = f"{name}: median {_fmt(centre)}"
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(caption, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="best")


def _draw_trace(trace_ax: Axes, rank_ax: Axes, fit: FitData, name: str) -> None:
    draws = np.asarray(fit.hyper_draws[name], dtype=float)
    chains = fit._chains(len(draws))
    per = draws.reshape(chains, -1)
    for c in range(chains):
        trace_ax.plot(per[c], lw=0.5, alpha=0.7, gid=f"trace{c}")
    trace_ax.set_title(f"{name}: trace", fontsize=9)
    ranks = np.argsort(np.argsort(draws, kind="stable"), kind="stable").reshape(chains, -1)
    bins = np.linspace(0, len(draws), 21)
    for c in range(chains):
        counts, _ = np.histogram(ranks[c], bins=bins)
        rank_ax.step(bins[:-1], counts + c * per.shape[1] / 20 * 1.5, where="post", gid=f"rank{c}")
    rank_ax.set_title(f"{name}: rank plot (uniform if chains agree)", fontsize=9)
    rank_ax.set_yticks([])


# ----------------------------------------------------------------------- predictive check
def plot_check(ppc: PredictiveCheck, ax: Axes | None = None) -> Figure:
    """Histogram of a statistic over replicated data sets, with the observed value marked.

    Example
    -------
    >>> import pandas as pd, poolwise
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> fig = fit.check(seed=0).plot()
    >>> [line.get_gid() for line in fig.axes[0].get_lines()]
    ['observed']
    """
    fig, ax = _one_axes(ax, 5.2, 3.4)
    rep = ppc.replicated[np.isfinite(ppc.replicated)]
    ax.hist(
        rep,
        bins=40,
        color=POOLED_COLOR,
        alpha=0.6,
        gid="replicated",
        label=f"replicated ({len(rep)} draws)",
    )
    ax.axvline(
        ppc.observed, color="k", lw=2, gid="observed", label=f"observed {_fmt(ppc.observed)}"
    )
    ax.set_title(f"Posterior predictive check: p = {ppc.p_value:.2f}", fontsize=10)
    ax.set_xlabel(ppc.description)
    ax.set_yticks([])
    ax.legend(fontsize=8, frameon=False, loc="best")
    return fig
