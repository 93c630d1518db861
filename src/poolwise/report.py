"""One self-contained HTML report of a fit: the model, tables, league table, plots, diagnostics.

No scripts, no fonts or styles fetched: the CSS is inlined and every plot is inline SVG, so the
file opens offline, can be mailed around, and prints cleanly.
"""

from __future__ import annotations

import gc
import html
import io
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def svg(fig: Figure, salt: str = "poolwise") -> str:
    """A figure as an inline ``<svg>`` element (text kept as text; ids unique per ``salt``).

    Example
    -------
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(2, 1)); _ = fig.add_subplot().plot([0, 1])
    >>> svg(fig).startswith("<svg")
    True
    """
    import matplotlib
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    buf = io.StringIO()
    engine = fig.get_layout_engine()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        if isinstance(engine, ConstrainedLayoutEngine):
            # its margins already fit the artists: lay out once and draw once, without the
            # extra drawing passes that cropping to the artists ("tight") would take
            engine.execute(fig)
            fig.set_layout_engine("none")
            try:
                fig.savefig(buf, format="svg")
            finally:
                fig.set_layout_engine(engine)
        else:
            fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _num(x: Any) -> str:
    if isinstance(x, bool | np.bool_):
        return str(x)
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        if not np.isfinite(x):
            return "–" if np.isnan(x) else str(x)
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"
    return str(x)


def table(frame: pd.DataFrame, caption: str | None = None) -> str:
    """A dataframe as an escaped HTML table with numbers formatted for reading.

    Example
    -------
    >>> table(pd.DataFrame({"x": [1.23456]}, index=pd.Index(["a"], name="g")))[:18]
    '<table class="data'
    """
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    index_name = html.escape(str(frame.index.name or ""))
    rows = []
    for label, values in zip(frame.index, frame.itertuples(index=False), strict=True):
        cells = "".join(f"<td>{html.escape(_num(v))}</td>" for v in values)
        rows.append(f"<tr><th>{html.escape(str(label))}</th>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="data">{cap}<thead><tr><th>{index_name}</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def draw_svgs(jobs: Mapping[str, Callable[[], Figure]], processes: int = 1) -> dict[str, str]:
    """Each job's figure as inline SVG (:func:`svg`, salted by the job's name), in two processes
    when ``processes`` is 2 or more, fork is at hand (Linux), there are CPUs to spare and JAX is
    not loaded.

    The two processes take the jobs in turn from a shared queue (a pipe of job numbers: list the
    costliest first); the forked copy sends back what it drew. A job it could not draw is drawn
    here, so that any error is raised in this process.

    Example
    -------
    >>> from matplotlib.figure import Figure
    >>> def line():
    ...     fig = Figure(figsize=(2, 1)); _ = fig.add_subplot().plot([0, 1]); return fig
    >>> svgs = draw_svgs({"a": line, "b": line}, processes=2)
    >>> list(svgs), all(text.startswith("<svg") for text in svgs.values())
    (['a', 'b'], True)
    """
    names = list(jobs)
    drawn: dict[str, str] = {}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    # JAX's threads (a NUTS fit) make a fork unsafe: it says so itself, and it is not done then
    can_fork = hasattr(os, "fork") and cpus > 1 and "jax" not in sys.modules
    with _collection_paused():
        if processes > 1 and 1 < len(names) <= 256 and can_fork:
            drawn = _forked(jobs)
        return {name: drawn[name] if name in drawn else svg(jobs[name](), name) for name in names}


@contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (then restored as it was): matplotlib makes many
    lasting objects while it draws, and the full collections they set off walk every object of
    the process (pandas', scipy's, matplotlib's): 7 % of the report's time. The figures'
    reference cycles are freed at the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _forked(jobs: Mapping[str, Callable[[], Figure]]) -> dict[str, str]:
    import matplotlib.backends.backend_svg  # noqa: F401 (imported once, before the fork)
    import matplotlib.figure  # noqa: F401

    queue, queue_in = os.pipe()
    os.write(queue_in, bytes(range(len(jobs))))
    os.close(queue_in)
    results, results_in = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns of a fork with threads running (numpy's, DuckDB's): the copy only
        # draws with matplotlib, and leaves with os._exit
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the copy: draw, send, and leave at once (none of this process's exit work)
        status = 1
        try:
            os.close(results)
            with os.fdopen(results_in, "w", encoding="utf-8") as out:
                json.dump(_take(jobs, queue), out)
            status = 0
        finally:
            os._exit(status)
    os.close(results_in)
    reader = os.fdopen(results, encoding="utf-8")
    try:
        drawn = _take(jobs, queue)
        sent = reader.read()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        reader.close()
        os.close(queue)
        status = os.waitpid(pid, 0)[1]
    if status == 0:  # else the copy failed, and what it took is drawn here
        drawn.update(json.loads(sent))
    return drawn


def _take(jobs: Mapping[str, Callable[[], Figure]], queue: int) -> dict[str, str]:
    """Draw the jobs whose numbers this process reads from ``queue`` until it is empty."""
    names = list(jobs)
    drawn = {}
    while taken := os.read(queue, 1):
        name = names[taken[0]]
        drawn[name] = svg(jobs[name](), name)
    return drawn


def _priors(fit: FitData) -> pd.DataFrame:
    from .priors import Prior

    rows = {}
    for name, value in fit.priors.items():
        if isinstance(value, Prior):
            rows[name] = (repr(value), "prior")
        else:
            rows[name] = (_num(value), "fixed")
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
                _num(posterior_centre(row)),
                f"{hdi} {_num(row['hdi_low'])} – {_num(row['hdi_high'])}",
            )
        )
    spread = fit.family.spread
    if spread in fit.population.index and fit.pooling == "partial":
        row = fit.population.loc[spread]
        cards.append(
            (
                f"{spread}: {fit.family.spread_words}, median",
                _num(posterior_centre(row)),
                f"{hdi} {_num(row['hdi_low'])} – {_num(row['hdi_high'])}",
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
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{html.escape(a)}</div>'
            f'<div class="value">{html.escape(b)}</div><div class="sub">{html.escape(c)}</div></div>'
            for a, b, c in cards
        )
        + "</div>"
    )


def _diagnostics(fit: FitData, ppc: Any) -> str:
    items = [("engine", f"{fit.method}: {fit.method_reason}")]
    info = fit.info or {}
    if "grid_points" in info:
        items.append(("quadrature grid", f"{info['grid_points']:,} points"))
    if "edge_mass" in info:
        items.append(("posterior mass at the grid's edge", f"{info['edge_mass']:.2g}"))
    for key in ("divergences", "max_rhat", "min_ess"):
        if key in info:
            items.append((key.replace("_", " "), _num(info[key])))
    items.append(("draws", f"{len(next(iter(fit.hyper_draws.values()), [])):,}; seed {fit.seed}"))
    if ppc is not None:
        verdict = (
            "the model reproduces the spread of the raw estimates"
            if 0.05 <= ppc.p_value <= 0.95
            else "the raw estimates are more spread out than the model predicts"
            if ppc.p_value < 0.05
            else "the raw estimates are less spread out than the model predicts"
        )
        items.append(("posterior predictive check", f"p = {ppc.p_value:.2f}: {verdict}"))
    dl = "".join(f"<dt>{html.escape(a)}</dt><dd>{html.escape(b)}</dd>" for a, b in items)
    if fit.warnings:
        warn = (
            '<ul class="warnings">'
            + "".join(f"<li>{html.escape(w)}</li>" for w in fit.warnings)
            + "</ul>"
        )
    else:
        warn = '<p class="ok">No warnings: the fit finished without problems.</p>'
    return f'<dl class="diag">{dl}</dl><h3>Warnings</h3>{warn}'


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
    from ._version import __version__
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
        "<h3>Priors</h3>" + table(_priors(fit))
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
        return (
            f'<figure role="img" aria-label="{html.escape(caption)}">{svgs[name]}'
            f"<figcaption>{caption}</figcaption></figure>"
        )

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

    css = (files("poolwise") / "templates" / "report.css").read_text(encoding="utf-8")
    toc = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{html.escape(name)}</h2>{content}</section>'
        for key, name, content in sections
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"{html.escape(fit.family.description)} · {fit.pooling} pooling · {fit.method} engine · "
        f"{fit.n_groups:,} groups ({html.escape(str(group))}) · {fit.n_rows:,} rows"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body><main>"
        f'<header><h1>{html.escape(title)}</h1><p class="meta">{meta}</p></header>'
        f'<nav class="toc">{toc}</nav>{body}'
        f"<footer>poolwise {__version__} · {stamp}</footer></main></body></html>\n"
    )


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
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    if best not in ("high", "low"):
        raise ValueError(f"best must be 'high' or 'low', got {best!r}")
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"path: {str(out)!r} is a directory; give a file name such as report.html")
    text = render(fit, title=title, best=best, top=top, poolings=poolings, processes=processes)
    out.write_text(text, encoding="utf-8")
    return out
