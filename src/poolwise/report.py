"""One self-contained HTML report of a fit: the model, tables, league table, plots, diagnostics
(its pieces, the inline SVG figures and the page, are :mod:`poolwise.htmlpage`'s)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .htmlpage import (
    card_row,
    diagnostics_list,
    draw_svgs,
    figure_html,
    format_number,
    output_path,
    page,
    table,
)

if TYPE_CHECKING:
    from .fitdata import FitData

# tables longer than this are cut (the full tables are on the fit object)
MAX_GROUP_ROWS = 200
MAX_LEAGUE_ROWS = 50

_POOLING_WORDS = {
    "partial": "Partial pooling: the population is learned from all groups at once, so each "
    "group's estimate is pulled towards the population mean, more strongly the less data it has.",
    "none": "No pooling: the population is fixed in advance (at the values below), so each group "
    "is estimated from its own data alone under that common prior.",
    "complete": "Complete pooling: all groups share one value of θ; only the population mean "
    "is estimated.",
}


def priors_table(fit: FitData) -> pd.DataFrame:
    """Each prior (its repr) or fixed value, by parameter."""
    from .priors import Prior

    rows = {}
    for name, value in fit.priors.items():
        if isinstance(value, Prior):
            rows[name] = (repr(value), "prior")
        else:
            rows[name] = (format_number(value), "fixed")
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["prior or value", "kind"])
    frame.index.name = "hyperparameter"
    return frame


def _cards(fit: FitData) -> str:
    from .plots import posterior_centre

    cards = []
    hdi = f"{int(fit.hdi_prob * 100)}% HDI"
    loc = fit.family.location
    if loc in fit.population.index:
        row = fit.population.loc[loc]
        cards.append(
            (
                f"population mean ({loc}), median",
                format_number(posterior_centre(row)),
                f"{hdi} {format_number(row['hdi_low'])} – {format_number(row['hdi_high'])}",
            )
        )
    spread = fit.family.spread
    if spread in fit.population.index and fit.pooling == "partial":
        row = fit.population.loc[spread]
        cards.append(
            (
                f"{spread}: {fit.family.spread_words}, median",
                format_number(posterior_centre(row)),
                f"{hdi} {format_number(row['hdi_low'])} – {format_number(row['hdi_high'])}",
            )
        )
    shrink = fit.groups["shrinkage"].to_numpy(dtype=float)
    cards.append(
        (
            "shrinkage towards the population",
            f"{np.nanmedian(shrink):.0%} median",
            f"from {np.nanmin(shrink):.0%} (most data) to {np.nanmax(shrink):.0%} (least)",
        )
    )
    cards.append(("groups · rows", f"{fit.n_groups:,} · {fit.n_rows:,}", f"{fit.method} engine"))
    return card_row(cards)


def _diagnostics(fit: FitData, ppc: Any) -> str:
    items = [("engine", f"{fit.method}: {fit.method_reason}")]
    info = fit.info or {}
    if "grid_points" in info:
        items.append(("quadrature grid", f"{info['grid_points']:,} points"))
    if "edge_mass" in info:
        items.append(("posterior mass at the grid's edge", f"{info['edge_mass']:.2g}"))
    for key in ("divergences", "max_rhat", "min_ess"):
        if key in info:
            items.append((key.replace("_", " "), format_number(info[key])))
    items.append(("draws", f"{len(next(iter(fit.hyper_draws.values()), [])):,}; seed {fit.seed}"))
    if ppc is not None:
        items.append(("posterior predictive check", verdict(ppc)))
    return diagnostics_list(items, fit.warnings)


def verdict(ppc: Any) -> str:
    """A predictive check of the spread in words, with its p-value."""
    words = (
        "the model reproduces the spread of the raw estimates"
        if 0.05 <= ppc.p_value <= 0.95
        else "the raw estimates are more spread out than the model predicts"
        if ppc.p_value < 0.05
        else "the raw estimates are less spread out than the model predicts"
    )
    return f"p = {ppc.p_value:.2f}: {words}"


def render(
    fit: FitData,
    *,
    title: str | None = None,
    best: str = "high",
    top: int = 3,
    poolings: Mapping[str, FitData] | None = None,
    processes: int = 1,
) -> str:
    """The report as an HTML string (see :func:`report`)."""
    from .plots import plot_estimates, plot_forest, plot_population, plot_shrinkage
    from .ranks import ranks
    from .simulate import check

    title = title or f"Partial pooling report: {fit.n_groups:,} groups"
    words, symbols = fit.family.symbols
    group = fit.groups.index.name or "group"
    sections: list[tuple[str, str, str]] = []

    sections.append(("summary", "Summary", _cards(fit)))
    model = (
        f"<p>{words}</p><p>{html.escape(_POOLING_WORDS[fit.pooling])}</p>"
        f'<div class="math">{"".join(f"<div>{s}</div>" for s in symbols)}</div>'
        "<h3>Priors</h3>" + table(priors_table(fit))
    )
    sections.append(("model", "Model", model))

    ppc = check(fit, draws=min(500, len(next(iter(fit.hyper_draws.values())))))
    # the costliest first: drawn in two processes, each takes the next one left
    svgs = draw_svgs(
        {
            "population": lambda: plot_population(fit),
            "estimates": lambda: plot_estimates(poolings or fit),
            "shrinkage": lambda: plot_shrinkage(fit),
            "forest": lambda: plot_forest(fit),
            "check": ppc.plot,
        },
        processes,
    )

    def figure(name: str, caption: str) -> str:
        return figure_html(svgs[name], caption)

    pop = figure(
        "population",
        "Posterior of each population hyperparameter (bars), its prior (dashed) and HDI (black).",
    )
    sections.append(("population", "Population", table(fit.population) + pop))

    shrink = figure(
        "shrinkage",
        "Each group's raw estimate (left) and partially pooled estimate (right). Marker area grows "
        "with the group's size; the dashed line is the population mean.",
    )
    estimates = figure(
        "estimates",
        "Estimates and HDIs against group size, each group alone (left) and partially pooled "
        "(right): small groups are pulled towards the population mean.",
    )
    sections.append(("shrinkage", "Shrinkage", shrink + estimates))

    top = min(top, fit.n_groups)
    league = ranks(fit, top=top, best=best)
    shown = league.head(MAX_LEAGUE_ROWS)
    note = (
        f'<p class="note">The first {MAX_LEAGUE_ROWS} of {len(league):,} groups; '
        "all of them are in <code>fit.ranks()</code>.</p>"
        if len(league) > MAX_LEAGUE_ROWS
        else ""
    )
    league_html = (
        f"<p>Groups ordered by posterior mean rank (1 = {'highest' if best == 'high' else 'lowest'} "
        f"θ). The rank interval holds {int(fit.hdi_prob * 100)}% of the posterior; "
        "<code>raw_rank</code> is the order of the raw estimates, which puts small groups at the "
        "extremes by luck.</p>"
        + note
        + f'<div class="scroll">{table(shown)}</div>'
        + figure(
            "forest",
            "Groups sorted by posterior mean with HDIs; crosses are the raw estimates.",
        )
    )
    sections.append(("league", "League table", league_html))

    groups = fit.groups
    gnote = ""
    if len(groups) > MAX_GROUP_ROWS:
        groups = groups.head(MAX_GROUP_ROWS)
        gnote = (
            f'<p class="note">The first {MAX_GROUP_ROWS} of {fit.n_groups:,} groups; '
            "all of them are in <code>fit.groups</code>.</p>"
        )
    sections.append(("groups", "Groups", gnote + f'<div class="scroll">{table(groups)}</div>'))

    ppc_html = figure(
        "check",
        f"Posterior predictive check: the {html.escape(ppc.description)} in data replicated from "
        f"the fitted model (bars) and in the observed data (black line); p = {ppc.p_value:.2f}.",
    )
    sections.append(("diagnostics", "Diagnostics", _diagnostics(fit, ppc) + ppc_html))

    meta = (
        f"{html.escape(fit.family.description)} · {fit.pooling} pooling · {fit.method} engine · "
        f"{fit.n_groups:,} groups ({html.escape(str(group))}) · {fit.n_rows:,} rows"
    )
    return page(title, meta, sections)


def report(
    fit: FitData,
    path: str | os.PathLike = "report.html",
    *,
    title: str | None = None,
    best: str = "high",
    top: int = 3,
    poolings: Mapping[str, FitData] | None = None,
    processes: int = 1,
) -> Path:
    """Write a self-contained HTML report of ``fit`` to ``path`` and return the path.

    ``poolings`` (pooling name to fit, e.g. :meth:`poolwise.PoolFit.poolings`) are drawn side
    by side in the estimates plot; without them, ``fit`` alone.

    The report holds the model in words and symbols, the priors, the population and group tables,
    a league table (``best="low"`` when a low theta is better, e.g. mortality; ``top`` for
    P(top k)), the shrinkage, estimates, forest and population plots as inline SVG, a posterior
    predictive check, and the fit's diagnostics and warnings. Nothing is loaded from the network.
    ``processes=2`` draws the five figures in two processes where it can (see :func:`draw_svgs`;
    the ``poolwise`` command does this).

    Example
    -------
    >>> import pandas as pd, poolwise, tempfile, os
    >>> df = pd.read_csv(poolwise.example_path("rat_tumors"))
    >>> fit = poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0)
    >>> path = fit.report(os.path.join(tempfile.mkdtemp(), "rats.html"))
    >>> path.read_text().count("<svg")
    5
    """
    out = output_path(path, best)
    text = render(fit, title=title, best=best, top=top, poolings=poolings, processes=processes)
    out.write_text(text, encoding="utf-8")
    return out
