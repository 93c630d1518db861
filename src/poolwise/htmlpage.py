"""The pieces of a self-contained HTML report: figures as inline SVG (drawn in two processes
where it pays), tables with numbers formatted for reading, summary cards, diagnostics, and the
page around them with its inlined style sheet.

No scripts, no fonts or styles fetched, so a page opens offline, can be mailed around, and prints
cleanly. :mod:`poolwise.report` (one factor) and :mod:`poolwise.glmm.report` (regressions) build
their reports from these.
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


def format_number(x: Any) -> str:
    """A number as a table shows it: four significant digits, thousands separated, – for NaN.

    Example
    -------
    >>> format_number(1234567.0), format_number(0.000123456), format_number(float("nan"))
    ('1,234,567', '0.0001235', '–')
    """
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
        cells = "".join(f"<td>{html.escape(format_number(v))}</td>" for v in values)
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


def card_row(cards: list[tuple[str, str, str]]) -> str:
    """Summary cards, each a (label, value, note) triple, as one row of HTML."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{html.escape(a)}</div>'
            f'<div class="value">{html.escape(b)}</div><div class="sub">{html.escape(c)}</div></div>'
            for a, b, c in cards
        )
        + "</div>"
    )


def diagnostics_list(items: list[tuple[str, str]], warned: tuple[str, ...]) -> str:
    """Named diagnostics as a definition list, then the fit's warnings (or that there were none)."""
    dl = "".join(f"<dt>{html.escape(a)}</dt><dd>{html.escape(b)}</dd>" for a, b in items)
    if warned:
        warn = (
            '<ul class="warnings">'
            + "".join(f"<li>{html.escape(w)}</li>" for w in warned)
            + "</ul>"
        )
    else:
        warn = '<p class="ok">No warnings: the fit finished without problems.</p>'
    return f'<dl class="diag">{dl}</dl><h3>Warnings</h3>{warn}'


def figure_html(svg_text: str, caption: str) -> str:
    """An inline SVG figure with its caption (HTML, as given)."""
    return (
        f'<figure role="img" aria-label="{html.escape(caption)}">{svg_text}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def page(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole HTML page: title, ``meta`` line (HTML), a table of contents and the
    ``(anchor, heading, HTML)`` sections, with the inlined style sheet."""
    from ._version import __version__

    css = (files("poolwise") / "templates" / "report.css").read_text(encoding="utf-8")
    toc = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{html.escape(name)}</h2>{content}</section>'
        for key, name, content in sections
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body><main>"
        f'<header><h1>{html.escape(title)}</h1><p class="meta">{meta}</p></header>'
        f'<nav class="toc">{toc}</nav>{body}'
        f"<footer>poolwise {__version__} · {stamp}</footer></main></body></html>\n"
    )


def output_path(path: Any, best: str) -> Path:
    """The report's file, checked before anything is drawn (and ``best``, the league's order)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    if best not in ("high", "low"):
        raise ValueError(f"best must be 'high' or 'low', got {best!r}")
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"path: {str(out)!r} is a directory; give a file name such as report.html")
    return out
