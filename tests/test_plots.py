"""Plots: the artists drawn, for each family, at 6 and at 5,000 groups."""

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

import poolwise
from poolwise.plots import marker_areas, plot_check, spread_labels

COLUMNS = {
    "normal": {"y": "y"},
    "normal_se": {"y": "y", "se": "se"},
    "binomial": {"successes": "successes", "trials": "trials"},
    "poisson": {"counts": "counts", "exposure": "exposure"},
}
TRUTH = {
    "normal": {"mu": 1.0, "tau": 0.5, "sigma": 1.0},
    "normal_se": {"mu": 1.0, "tau": 0.5},
    "binomial": {"phi": 0.3, "kappa": 20.0},
    "poisson": {"mu": 2.0, "kappa": 5.0},
}
# six groups leave the normal-rows population vague under the default priors; give it a hint
PRIORS = {
    "normal": {
        "mu": poolwise.Normal(1, 1),
        "tau": poolwise.HalfNormal(1),
        "sigma": poolwise.HalfNormal(2),
    }
}


def sizes(family, j, rng):
    if family == "normal":
        return rng.integers(2, 12 if j > 100 else 30, j)
    if family == "normal_se":
        return rng.uniform(0.1, 1.0, j)
    if family == "binomial":
        return rng.integers(1, 200, j)
    return rng.uniform(0.5, 20.0, j)


def make_fit(family, j):
    rng = np.random.default_rng(j)
    df = poolwise.simulate(family, TRUTH[family], sizes(family, j, rng), seed=j)
    many = j > 100
    with warnings.catch_warnings():
        # the exact engine cannot yet refine its grid for six normal-rows groups; the plots of
        # the (still usable) fit are what is tested here
        warnings.filterwarnings("ignore", "the quadrature grid", poolwise.PoolwiseWarning)
        return poolwise.fit(
            df,
            group="group",
            **COLUMNS[family],
            priors=None if many else PRIORS.get(family),
            method="eb" if many else "auto",
            draws=200 if many else 1000,
            seed=1,
        )


@pytest.fixture(scope="module", params=[(f, j) for f in COLUMNS for j in (6, 5000)], ids=str)
def fit(request):
    return make_fit(*request.param)


def by_gid(ax, gid):
    found = [a for a in [*ax.collections, *ax.lines, *ax.patches, *ax.texts] if a.get_gid() == gid]
    assert found, f"no artist with gid {gid!r}"
    return found


def sizes_of(fit):
    return np.asarray(fit.family.size(fit.observed), dtype=float)


def assert_ordered_as(areas, group_size):
    """Marker areas sort exactly as the group sizes do (ties may go either way)."""
    order = np.argsort(group_size, kind="stable")
    assert np.all(np.diff(areas[order]) >= 0)
    assert np.ptp(areas) > 0


def assert_population_line(ax, fit, vertical=False):
    (line,) = by_gid(ax, "population")
    data = line.get_xdata() if vertical else line.get_ydata()
    location = fit.population.loc[fit.family.location, "mean"]
    np.testing.assert_allclose(np.asarray(data, float), location, rtol=1e-12)


def test_shrinkage_artists(fit):
    j = fit.n_groups
    fig = fit.plot_shrinkage()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    (lines,) = by_gid(ax, "shrinkage")
    assert isinstance(lines, LineCollection)
    segments = lines.get_segments()
    assert len(segments) == j  # one line per group (no group here has an undefined raw rate)
    raw, pooled = fit.groups["raw"].to_numpy(), fit.groups["mean"].to_numpy()
    np.testing.assert_allclose([s[0, 1] for s in segments], raw)
    np.testing.assert_allclose([s[1, 1] for s in segments], pooled)
    (raw_dots,) = by_gid(ax, "raw")
    (pooled_dots,) = by_gid(ax, "pooled")
    assert isinstance(pooled_dots, PathCollection)
    assert len(raw_dots.get_offsets()) == len(pooled_dots.get_offsets()) == j
    np.testing.assert_allclose(raw_dots.get_offsets()[:, 0], 0.0)
    np.testing.assert_allclose(pooled_dots.get_offsets()[:, 1], pooled)
    assert_ordered_as(pooled_dots.get_sizes(), sizes_of(fit))
    np.testing.assert_allclose(raw_dots.get_sizes(), pooled_dots.get_sizes())
    assert_population_line(ax, fit)
    labels = by_gid(ax, "label")
    assert len(labels) == (j if j <= 12 else 3)
    # thin, translucent lines when there are thousands
    assert (lines.get_linewidths()[0] < 0.5) == (j > 1000)
    assert (lines.get_alpha() < 0.1) == (j > 1000)


def test_shrinkage_labels_the_groups_that_moved_most():
    fit = make_fit("binomial", 6)
    shift = np.abs(fit.groups["mean"] - fit.groups["raw"]).sort_values(ascending=False)
    fig = fit.plot_shrinkage(labels=2)
    texts = [t.get_text().split()[0] for t in by_gid(fig.axes[0], "label")]
    assert texts == [str(g) for g in shift.index[:2]]
    assert by_gid(fit.plot_shrinkage(labels=False).axes[0], "shrinkage")
    with pytest.raises(ValueError, match="labels must be True, False or a non-negative integer"):
        fit.plot_shrinkage(labels=-1)


def test_estimates_artists(fit):
    j = fit.n_groups
    fig = fit.plot_estimates()
    assert [a.get_title() for a in fig.axes] == ["No pooling", "Partial pooling"]
    for ax in fig.axes:
        (hdi,) = by_gid(ax, "hdi")
        assert len(hdi.get_segments()) == j
        (dots,) = by_gid(ax, "estimates")
        assert len(dots.get_offsets()) == j
        np.testing.assert_allclose(dots.get_offsets()[:, 0], sizes_of(fit))
        assert_ordered_as(dots.get_sizes(), sizes_of(fit))
        assert_population_line(ax, fit)  # the partially pooled population mean in both panels
    partial = by_gid(fig.axes[1], "estimates")[0].get_offsets()[:, 1]
    np.testing.assert_allclose(partial, fit.groups["mean"])
    # no pooling: each group alone, so the estimates spread out more than the pooled ones
    alone = by_gid(fig.axes[0], "estimates")[0].get_offsets()[:, 1]
    assert np.std(alone) > np.std(partial)


def test_forest_artists(fit):
    j = fit.n_groups
    shown = j if j <= 40 else 40
    fig = fit.plot_forest()
    (ax,) = fig.axes
    (hdi,) = by_gid(ax, "hdi")
    assert len(hdi.get_segments()) == shown
    (dots,) = by_gid(ax, "estimates")
    means = dots.get_offsets()
    assert len(means) == shown
    assert np.all(np.diff(means[:, 1]) < 0)  # top to bottom
    assert np.all(np.diff(means[:, 0]) <= 0)  # sorted by posterior mean, highest first
    assert len(by_gid(ax, "raw")[0].get_offsets()) == shown
    assert len(ax.get_yticks()) == shown
    assert_population_line(ax, fit, vertical=True)
    if j > 40:
        assert by_gid(ax, "gap")
        np.testing.assert_allclose(means[0, 0], fit.groups["mean"].max())
        np.testing.assert_allclose(means[-1, 0], fit.groups["mean"].min())


def test_forest_top_and_bottom():
    fit = make_fit("poisson", 5000)
    fig = fit.plot_forest(top=5, bottom=0)
    (dots,) = by_gid(fig.axes[0], "estimates")
    top5 = np.sort(fit.groups["mean"].to_numpy())[::-1][:5]
    np.testing.assert_allclose(dots.get_offsets()[:, 0], top5)
    fig = fit.plot_forest(bottom=3)
    assert len(by_gid(fig.axes[0], "estimates")[0].get_offsets()) == 3
    with pytest.raises(ValueError, match="top must be a non-negative integer"):
        fit.plot_forest(top=-2)


def test_population_artists(fit):
    fig = fit.plot_population()
    free = {
        "normal": ["mu", "tau", "sigma"],
        "normal_se": ["mu", "tau"],
        "binomial": ["phi", "kappa"],
        "poisson": ["mu", "kappa"],
    }[fit.family.name]
    assert [a.get_title() for a in fig.axes] == free
    for ax, name in zip(fig.axes, free, strict=True):
        row = fit.population.loc[name]
        if fit.method == "exact":
            (median,) = by_gid(ax, "median")  # the centre: a mean may not exist
            np.testing.assert_allclose(median.get_xdata(), row["median"])
            bars = by_gid(ax, "posterior")
            heights = np.array([b.get_height() for b in bars])
            left = np.array([b.get_x() for b in bars])
            right = left + np.array([b.get_width() for b in bars])
            # a density, per unit of log(x) on a log axis
            step = np.log(right / left) if ax.get_xscale() == "log" else right - left
            assert len(bars) == 40
            assert (heights * step).sum() == pytest.approx(1.0, abs=0.01)
            (hdi,) = by_gid(ax, "hdi")
            lo, hi = hdi.get_xdata()
            assert hi == row["hdi_high"] and lo >= row["hdi_low"]
            assert lo == row["hdi_low"] or ax.get_xscale() == "log"
            assert by_gid(ax, "prior")
        else:  # empirical Bayes: the estimate with its normal approximation
            (mean,) = by_gid(ax, "mean")
            np.testing.assert_allclose(mean.get_xdata(), row["mean"])
            (curve,) = by_gid(ax, "posterior")
            x = curve.get_xdata()
            assert x[np.argmax(curve.get_ydata())] == pytest.approx(row["mean"], rel=0.02, abs=1e-3)


def test_a_heavy_tailed_hyperparameter_is_drawn_on_a_log_axis():
    # the bento students at the default priors: kappa's posterior reaches 1e12 and has no mean
    students = pd.DataFrame(
        {"s": list("ABCDEF"), "k": [70, 28, 6, 3, 2, 0], "n": [100, 40, 10, 5, 2, 1]}
    )
    with pytest.warns(poolwise.PoolwiseWarning, match="kappa"):
        fit = poolwise.fit(students, group="s", successes="k", trials="n", seed=1)
    phi, kappa = fit.plot_population().axes
    assert phi.get_xscale() == "linear" and kappa.get_xscale() == "log"
    (prior,) = by_gid(kappa, "prior")
    bars = by_gid(kappa, "posterior")
    # the posterior spreads over the axis (not one bar) and the prior is drawn across it
    heights = np.array([b.get_height() for b in bars])
    assert (heights > 0.05 * heights.max()).sum() >= 10
    assert prior.get_xdata().min() <= bars[0].get_x() * 1.01


def test_population_fixed_values_are_marked():
    df = pd.DataFrame({"s": list("ABC"), "k": [7, 3, 0], "n": [10, 5, 1]})
    fit = poolwise.fit(
        df, group="s", successes="k", trials="n", priors={"a": 6, "b": 4}, seed=0, draws=100
    )
    fig = fit.plot_population()
    assert [a.get_title() for a in fig.axes] == ["phi", "kappa"]
    assert [line.get_label() for line in by_gid(fig.axes[0], "mean")] == ["fixed"]
    np.testing.assert_allclose(by_gid(fig.axes[0], "mean")[0].get_xdata(), 0.6)


def test_plots_draw_into_a_given_axes():
    fit = make_fit("binomial", 6)
    fig = Figure()
    ax1, ax2, ax3 = fig.subplots(1, 3)
    assert fit.plot_shrinkage(ax=ax1) is fig
    assert fit.plot_forest(ax=ax2) is fig
    assert fit.plot_estimates(ax=ax3) is fig  # one axes: this fit's own estimates only
    assert ax3.get_title() == "Partial pooling"
    assert len(fig.axes) == 3
    fig2 = Figure()
    pair = fig2.subplots(1, 2)
    assert fit.plot_population(ax=pair) is fig2
    with pytest.raises(ValueError, match="ax: this plot needs 2 Axes, got 3"):
        fit.plot_population(ax=fig.axes)
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes or None, got str"):
        fit.plot_shrinkage(ax="left")


def test_estimates_from_a_comparison():
    df = pd.read_csv(poolwise.example_path("rat_tumors"))
    cmp = poolwise.compare(df, group="experiment", successes="y", trials="n", seed=0, draws=400)
    fig = cmp.plot_estimates()
    none = by_gid(fig.axes[0], "estimates")[0].get_offsets()[:, 1]
    np.testing.assert_allclose(none, cmp.fits["none"].groups["mean"])
    fig = poolwise.plots.plot_estimates(cmp, poolings=("none", "complete", "partial"))
    assert [a.get_title() for a in fig.axes] == [
        "No pooling",
        "Complete pooling",
        "Partial pooling",
    ]
    with pytest.raises(ValueError, match="poolings: 'sideways' not among the fits"):
        poolwise.plots.plot_estimates(cmp, poolings=("sideways",))
    with pytest.raises(TypeError, match="fits must be a PoolFit, a Comparison or a mapping"):
        poolwise.plots.plot_estimates([1, 2])


def test_check_plot():
    fit = make_fit("poisson", 6)
    ppc = fit.check(draws=300, seed=0)
    fig = plot_check(ppc)
    (observed,) = by_gid(fig.axes[0], "observed")
    np.testing.assert_allclose(observed.get_xdata(), ppc.observed)
    bars = by_gid(fig.axes[0], "replicated")
    assert sum(b.get_height() for b in bars) == 300


def test_marker_areas_and_label_spreading():
    np.testing.assert_allclose(marker_areas(np.array([100.0, 50.0, 0.0])), [220, 113, 6])
    y = np.array([0.5, 0.5, 0.5, 0.9, 0.0])
    placed = spread_labels(y, 0.1)
    assert np.all(np.diff(np.sort(placed)) >= 0.1 - 1e-12)
    np.testing.assert_allclose(placed[:3].mean(), 0.5)  # a cluster stays centred on its points
    np.testing.assert_allclose(placed[4], 0.0)  # a lone label stays put
