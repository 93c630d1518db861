"""The HTML report of a regression: formula, priors, common effects, each grouping term's levels
and plots, the population, the posterior predictive check and the diagnostics.

Built from the one-factor report's pieces (:mod:`poolwise.htmlpage`, :mod:`poolwise.report`):
each grouping term is drawn as the one-factor record of its levels
(:meth:`~poolwise.fitdata.RegressionData.factor`). A diagnostic that the engine does not have
(divergences and r_hat without Markov chains) is reported as not applicable.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import htmlpage
from ..report import MAX_GROUP_ROWS, MAX_LEAGUE_ROWS, priors_table, verdict
from .checks import is_singular
from .model import prior_scale
from .predictive import check_cells, n_draws

if TYPE_CHECKING:
    from pathlib import Path

    from ..fitdata import RegressionData

# the columns of the parameters' table that the report shows beside the population's
SAMPLER_COLUMNS = ("ess_bulk", "ess_tail", "r_hat")


def _anchor(i: int) -> str:
    return f"term-{i}"


def common_effects(fit: RegressionData) -> pd.DataFrame:
    """The common effects' rows of the population table, with their ESS and r_hat where the
    engine gives them."""
    names = list(fit.design.names)
    return _with_sampler_columns(fit, fit.population.loc[names])


def variance_parameters(fit: RegressionData) -> pd.DataFrame:
    """The group sds (and sigma) of the population table, with ESS and r_hat where given."""
    names = [n for n in fit.population.index if n not in set(fit.design.names)]
    return _with_sampler_columns(fit, fit.population.loc[names])


def _with_sampler_columns(fit: RegressionData, frame: pd.DataFrame) -> pd.DataFrame:
    stats = fit.table
    if stats is None:
        return frame
    columns = [c for c in SAMPLER_COLUMNS if c in stats and stats[c].notna().any()]
    return frame.join(stats.loc[frame.index, columns]) if columns else frame


def _cards(fit: RegressionData) -> str:
    hdi = f"{int(fit.hdi_prob * 100)}% HDI"
    design = fit.design
    cards = [
        (
            "formula",
            fit.formula,
            f"{fit.family.description}; {len(design.names)} common effect(s)",
        )
    ]
    for t in design.groups[:2]:
        if t.sigma_name in fit.population.index:
            row = fit.population.loc[t.sigma_name]
            cards.append(
                (
                    f"{t.sigma_name}: sd of the {t.factor} effects, median",
                    htmlpage.format_number(row["median"]),
                    f"{hdi} {htmlpage.format_number(row['hdi_low'])} – {htmlpage.format_number(row['hdi_high'])}",
                )
            )
    levels = sum(t.n_levels for t in design.groups)
    cards.append(
        (
            "grouping terms · levels",
            f"{len(design.groups)} · {levels:,}",
            ", ".join(t.name for t in design.groups) or "none",
        )
    )
    cards.append(("cells · rows", f"{design.n_cells:,} · {fit.n_rows:,}", f"{fit.method} engine"))
    return htmlpage.card_row(cards)


def _diagnostics(fit: RegressionData, ppc: Any) -> str:
    info = fit.info or {}
    chains = f" in {info['chains']} chains" if "chains" in info else ""
    items = [
        ("engine", f"{fit.method}: {fit.method_reason}"),
        ("draws", f"{n_draws(fit):,}{chains}; seed {fit.seed}"),
    ]
    if "grid_points" in info:
        kept = info.get("kept_points", info["grid_points"])
        items.append(("variance parameters' grid", f"{kept:,} of {info['grid_points']:,} points"))
    absent = f"not applicable: the {fit.method} engine runs no Markov chains"
    divergences = htmlpage.format_number(info["divergences"]) if "divergences" in info else absent
    items.append(("divergences", divergences))
    stats = fit.table if fit.table is not None else pd.DataFrame()
    if "r_hat" in stats and stats["r_hat"].notna().any():
        worst = stats["r_hat"].idxmax()
        items.append(("largest r_hat", f"{stats['r_hat'].max():.3f} ({worst})"))
    else:
        items.append(("r_hat", absent))
    ess = [c for c in ("ess_bulk", "ess_tail") if c in stats and stats[c].notna().any()]
    if ess:
        low = stats[ess].min(axis=1)
        items.append(("smallest ESS", f"{low.min():,.0f} ({low.idxmin()})"))
    else:
        items.append(("ESS", absent))
    problems = [w for w in fit.warnings if w.startswith("identifiability")]
    identified = (
        info["identifiability"]
        if "identifiability" in info
        else f"{len(problems)} problem(s): see the warnings"
        if problems
        else "the data identify every common effect"
    )
    items.append(("identifiability", identified))
    singular = []
    for t, tp in zip(fit.design.groups, fit.plan.terms, strict=True):
        if t.sigma_name in fit.hyper_draws and tp.sd_prior is not None:
            draws = fit.hyper_draws[t.sigma_name]
            if is_singular(draws, prior_scale(tp.sd_prior)):
                singular.append(f"{t.sigma_name} (median {np.median(draws):.3g})")
    items.append(("singular factors", ", ".join(singular) or "none: every group sd is away from 0"))
    items.append(("posterior predictive check", verdict(ppc)))
    return htmlpage.diagnostics_list(items, fit.warnings)


def render(
    fit: RegressionData,
    *,
    title: str | None = None,
    best: str = "high",
    top: int = 3,
    processes: int = 1,
) -> str:
    """The report as an HTML string (see :func:`report`)."""
    from ..plots import plot_estimates, plot_forest, plot_population, plot_shrinkage

    design = fit.design
    title = title or f"Regression report: {fit.formula}"
    ppc = check_cells(fit, draws=min(500, n_draws(fit)))
    views = {t.name: fit.factor(t.name) for t in design.groups}
    jobs: dict[str, Any] = {"population": lambda: plot_population(fit)}
    for i, view in enumerate(views.values()):
        jobs[f"{i}-estimates"] = lambda view=view: plot_estimates(view)
        jobs[f"{i}-shrinkage"] = lambda view=view: plot_shrinkage(view)
        jobs[f"{i}-forest"] = lambda view=view: plot_forest(view)
    jobs["check"] = ppc.plot
    svgs = htmlpage.draw_svgs(jobs, processes)

    sections = [("summary", "Summary", _cards(fit))]
    model = (
        f"<p>{html.escape(fit.family.description)}: <code>{html.escape(fit.formula)}</code>."
        " Each grouping term's effects are deviations drawn from Normal(0, sd), one sd per term "
        "(named <code>term_sigma</code>); where the common part holds the same term they sum to "
        "zero, so the common effects and the group effects cannot trade level.</p>"
        "<h3>Priors</h3>" + htmlpage.table(priors_table(fit))
    )
    sections.append(("model", "Model", model))
    hdi = f"{int(fit.hdi_prob * 100)}% HDI"
    sections.append(
        (
            "common",
            "Common effects",
            f"<p>On the link scale, with the posterior mean, sd, median and {hdi}.</p>"
            + htmlpage.table(common_effects(fit)),
        )
    )
    population = htmlpage.figure_html(
        svgs["population"],
        "Posterior of each common effect and group sd (bars), its prior (dashed) and HDI "
        "(black), with the chains' traces and rank plots where a sampler made the draws.",
    )
    sections.append(
        (
            "population",
            "Group sds and population",
            htmlpage.table(variance_parameters(fit)) + population,
        )
    )
    for i, (name, view) in enumerate(views.items()):
        sections.append((_anchor(i), name, _term_section(fit, i, name, view, svgs, best, top)))
    check = htmlpage.figure_html(
        svgs["check"],
        f"Posterior predictive check: the {html.escape(ppc.description)} in data replicated from "
        f"the fitted model (bars) and in the observed data (black line); p = {ppc.p_value:.2f}.",
    )
    sections.append(("check", "Posterior predictive check", f"<p>{verdict(ppc)}</p>" + check))
    sections.append(("diagnostics", "Diagnostics", _diagnostics(fit, ppc)))
    meta = (
        f"{html.escape(fit.family.description)} · {fit.method} engine · "
        f"{len(design.groups)} grouping term(s) · {design.n_cells:,} cells · {fit.n_rows:,} rows"
    )
    return htmlpage.page(title, meta, sections)


def _term_section(
    fit: RegressionData, i: int, name: str, view: Any, svgs: dict, best: str, top: int
) -> str:
    """One grouping term: its levels, their league table and the shrinkage, estimates and
    forest plots."""
    from ..ranks import ranks

    groups = view.groups
    note = ""
    if len(groups) > MAX_GROUP_ROWS:
        groups = groups.head(MAX_GROUP_ROWS)
        note = (
            f'<p class="note">The first {MAX_GROUP_ROWS} of {view.n_groups:,} levels; all of '
            f"them are in <code>fit.groups.loc[{html.escape(repr(name))}]</code>.</p>"
        )
    league = ranks(view, top=min(top, view.n_groups), best=best)
    shown = league.head(MAX_LEAGUE_ROWS)
    figures = (
        htmlpage.figure_html(
            svgs[f"{i}-shrinkage"],
            "Each level's raw effect (left: its data alone) and pooled effect (right), on the "
            "link scale; marker area grows with the level's data.",
        )
        + htmlpage.figure_html(
            svgs[f"{i}-estimates"],
            "Pooled effects and HDIs against the level's data: levels with little data are "
            "pulled towards 0.",
        )
        + htmlpage.figure_html(
            svgs[f"{i}-forest"], "Levels sorted by posterior mean with HDIs; crosses are raw."
        )
    )
    return (
        f"<p>Levels of {html.escape(name.split('|', 1)[1])}: size, raw effect, pooled mean, sd, "
        f"HDI and shrinkage (the share of the raw effect pulled back to 0).</p>"
        + note
        + f'<div class="scroll">{htmlpage.table(groups)}</div>'
        + f"<h3>League table</h3><p>Ordered by posterior mean rank (1 = "
        f"{'highest' if best == 'high' else 'lowest'} effect).</p>"
        + f'<div class="scroll">{htmlpage.table(shown)}</div>'
        + figures
    )


def report(
    fit: RegressionData,
    path: str | os.PathLike = "report.html",
    *,
    title: str | None = None,
    best: str = "high",
    top: int = 3,
    processes: int = 1,
) -> Path:
    """Write a self-contained HTML report of a regression to ``path`` and return the path.

    The report holds the formula and the priors, the common effects, the group sds, for each
    grouping term its levels, league table (``best``, ``top`` as in :func:`poolwise.ranks.ranks`)
    and shrinkage, estimates and forest plots, the population plot, a posterior predictive check
    on the cells, and the diagnostics: divergences, r_hat, ESS (where the engine has them),
    identifiability and singular factors, and the fit's warnings.

    Example
    -------
    >>> import pandas as pd, poolwise, tempfile, os
    >>> df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "y": [1, 2.1, 1.2, 2, 0.9, 2.2]})
    >>> fit = poolwise.fit("y ~ x + (1|g)", data=df, seed=1)  # by the Laplace engine
    >>> path = fit.report(os.path.join(tempfile.mkdtemp(), "fit.html"))
    >>> path.read_text().count("<svg")
    5
    """
    out = htmlpage.output_path(path, best)
    text = render(fit, title=title, best=best, top=top, processes=processes)
    out.write_text(text, encoding="utf-8")
    return out
