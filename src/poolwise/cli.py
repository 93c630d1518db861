"""The ``poolwise`` command line: fit a file and print the tables (rich), or JSON."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import pandas as pd

EXAMPLES = {
    "eight_schools": {"group": "school", "y": "y", "se": "sigma"},
    "rat_tumors": {"group": "experiment", "successes": "y", "trials": "n"},
    "pumps": {"group": "pump", "counts": "x_failures", "exposure": "t_thousand_hours"},
    "surgical": {"group": "hospital", "successes": "r_deaths", "trials": "n_operations"},
    "radon_mn": {"group": "county", "y": "log_radon"},
    "dyes": {"group": "batch", "y": "yield_g"},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolwise", description="Partial pooling for grouped data."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser(
        "fit", help="fit a grouping factor or a formula from CSV or Parquet files (or globs)"
    )
    _data_options(fit)
    _common(fit)
    fit.add_argument("--report", metavar="FILE", help="also write an HTML report to FILE")
    example = sub.add_parser("example", help="fit a bundled example data set")
    example.add_argument("name", choices=sorted(EXAMPLES))
    _common(example)
    example.add_argument("--report", metavar="FILE", help="the HTML report (default NAME.html)")
    _report_and_simulate_parsers(sub)
    return parser


def _report_and_simulate_parsers(sub) -> None:
    report = sub.add_parser("report", help="fit a file and write a self-contained HTML report")
    _data_options(report)
    _common(report)
    report.add_argument("-o", "--output", default="report.html", help="default report.html")
    sim = sub.add_parser("simulate", help="simulate grouped data from the hierarchy, as CSV")
    sim.add_argument("--family", default="binomial",
                     help="a registered family: normal, normal_se, binomial, poisson, ...")  # fmt: skip
    sim.add_argument("--hyperparameters", default="", metavar="NAME=VALUE,...",
                     help="e.g. phi=0.6,kappa=10; missing ones are drawn from default priors")  # fmt: skip
    sim.add_argument("--sizes", default="10,10,10,10,10,10", metavar="S1,S2,...",
                     help="per group: rows, standard error, trials or exposure")  # fmt: skip
    sim.add_argument("--groups", type=int, default=None, help="repeat a single --sizes value")
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument("-o", "--output", default=None, help="CSV file (default: standard output)")


def _simulate(args) -> int:
    from .families import family_of
    from .simulate import simulate

    try:
        pairs = [p for p in args.hyperparameters.split(",") if p.strip()]
        if any(p.count("=") != 1 for p in pairs):
            raise ValueError(
                f"hyperparameters: expected NAME=VALUE pairs, got {args.hyperparameters!r}"
            )
        hyper = {k.strip(): float(v) for k, v in (p.split("=") for p in pairs)}
        sizes = [float(x) for x in args.sizes.split(",") if x.strip()]
        if args.groups is not None:
            if len(sizes) != 1:
                raise ValueError("sizes: give one size to repeat with --groups")
            sizes = sizes * args.groups
        if family_of(args.family).integer_sizes and all(x == int(x) for x in sizes):
            sizes = [int(x) for x in sizes]
        df = simulate(args.family, hyper, sizes, seed=args.seed)
    except (ValueError, TypeError) as err:
        print(f"poolwise: error: {err}", file=sys.stderr)
        return 2
    if args.output:
        df.to_csv(args.output, index=False)
    else:
        df.to_csv(sys.stdout, index=False)
    return 0


def _report_path(args) -> str | None:
    if args.command == "report":
        return args.output
    if args.command == "example":
        return args.report or f"{args.name}.html"
    return args.report


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="+", help="CSV or Parquet files, globs or a directory")
    p.add_argument("--group", help="the grouping column (one factor; or give --formula)")
    p.add_argument(
        "--formula", help="an lme4-style formula, e.g. 'p(k, n) ~ 1 + x + (1|g)' (not with --group)"
    )
    p.add_argument("--family", choices=["normal", "binomial", "bernoulli", "poisson"],
                   help="with --formula: the outcome's family (default: from the response)")  # fmt: skip
    for name in ("y", "se", "successes", "trials", "counts", "exposure"):
        p.add_argument(f"--{name}")
    p.add_argument("--n", help="per-group summaries: the column of group sizes (with --y, --sd)")
    p.add_argument("--sd", help="per-group summaries: the column of sample sds (ddof=1)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pooling", default="partial", choices=["partial", "none", "complete"])
    p.add_argument("--method", default="auto", choices=["auto", "exact", "eb", "laplace", "nuts"])
    p.add_argument("--draws", type=int, default=4000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--hdi-prob", type=float, default=0.94, help="the HDIs' probability")
    p.add_argument("--prior", action="append", default=[], metavar="NAME=PRIOR",
                   help="e.g. tau=HalfNormal(5), 'x=Normal(0, 1)', '1|g_sigma=0.5'; repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def parse_prior(text: str) -> tuple[str, Any]:
    """``NAME=PRIOR`` of the command line: a poolwise prior with numeric arguments, or a number.

    Example
    -------
    >>> parse_prior("tau=HalfNormal(5)")
    ('tau', HalfNormal(sigma=5))
    >>> parse_prior("1|g_sigma=0.5")
    ('1|g_sigma', 0.5)
    """
    from . import priors

    name, sep, value = (part.strip() for part in text.partition("="))
    if not sep or not name or not value:
        raise ValueError(f"prior: expected NAME=PRIOR such as tau=HalfNormal(5), got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        pass
    match = re.fullmatch(r"([A-Za-z]\w*)\((.*)\)", value)
    cls = getattr(priors, match.group(1), None) if match else None
    if not (isinstance(cls, type) and issubclass(cls, priors.Prior)):
        raise ValueError(
            f"prior {name!r}: {value!r} is not a number or a poolwise prior such as Normal(0, 1)"
        )
    try:
        args = [float(a) for a in match.group(2).split(",") if a.strip()]
        return name, cls(*args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"prior {name!r}: {value!r}: {err}") from None


# the most characters a number takes in the terminal tables (fewer significant digits beyond)
NUMBER_WIDTH = 8


def _number(value) -> str:
    """A table cell: a whole number as it is, others in at most NUMBER_WIDTH characters.

    Example
    -------
    >>> [_number(v) for v in (20, 0.0001534, 3013898856040.0, float("nan"))]
    ['20', '0.000153', '3.01e+12', '–']
    """
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "–"
    for digits in (4, 3, 2, 1):
        text = f"{value:.{digits}g}"
        if len(text) <= NUMBER_WIDTH:
            break
    return text


def _table(title: str, frame: pd.DataFrame):
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    labels = [" ".join(map(str, x)) if isinstance(x, tuple) else str(x) for x in frame.index]
    name = " ".join(str(n) for n in frame.index.names if n is not None)
    # the labels' column keeps its header and short labels whole; a long label folds, never cut
    widest = max([len(name), *(min(len(x), 20) for x in labels)])
    table.add_column(name, style="bold", overflow="fold", min_width=widest)
    for col in frame.columns:
        table.add_column(str(col), justify="right", overflow="fold")
    for label, row in zip(labels, frame.itertuples(index=False), strict=True):
        table.add_row(label, *[_number(v) for v in row])
    return table


def _show(fit, as_json: bool) -> None:
    if as_json:
        out = {
            "family": fit.family.name,
            "pooling": fit.pooling,
            "method": fit.method,
            "method_reason": fit.method_reason,
            "n_groups": fit.n_groups,
            "n_rows": fit.n_rows,
            "priors": {k: repr(v) for k, v in fit.priors.items()},
            "population": json.loads(fit.population.to_json(orient="index", double_precision=15)),
            "groups": json.loads(
                fit.groups.reset_index()
                .astype({name or "index": str for name in fit.groups.index.names})
                .to_json(orient="records", double_precision=15)
            ),
            "warnings": list(fit.warnings),
        }
        print(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for line in fit._header():
        console.print(line, highlight=False, markup=False)
    # the hyperparameters' median and HDI: their means may not exist (fit.population has them)
    population = fit.population
    if "median" in population:
        population = population.drop(columns=["mean", "sd"])
    console.print(_table("Population", population))
    console.print(_table("Groups", fit.groups))
    for w in fit.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")  # a level's [name] kept


def _fit_files(source, columns: dict, options: dict):
    """Reduce the files (progress on stderr), say how many rows and groups were read, then fit."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .api import family_for, fit_stats
    from .data import reduce

    family, mapping = family_for(**{r: c for r, c in columns.items() if r != "group"})
    err = Console(stderr=True)
    columns_shown = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    with Progress(*columns_shown, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("reading", total=None)

        def report(stage: str, fraction: float | None) -> None:
            total = None if fraction is None else 1.0
            bar.update(task, description=stage, total=total, completed=fraction or 0.0)

        stats = reduce(source, columns["group"], family, mapping, progress=report)
    err.print(f"read {stats.n_rows:,} rows in {len(stats.labels):,} groups", highlight=False)
    return fit_stats(stats, family, **options)


def _fit_formula(source, args, columns: dict, options: dict):
    """A formula fit of the files; only ``--exposure`` of the column options applies."""
    from . import fit as fit_fn

    exposure = columns.pop("exposure", None)
    if columns:
        flags = ", ".join(f"--{k}" for k in columns)
        raise TypeError(f"{flags}: a formula names its columns itself; leave them out")
    return fit_fn(args.formula, data=source, family=args.family, exposure=exposure, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poolwise`` command."""
    import warnings

    from . import fit as fit_fn
    from .data import example_path

    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    try:
        options = {
            "pooling": args.pooling,
            "method": args.method,
            "draws": args.draws,
            "seed": args.seed,
            "hdi_prob": args.hdi_prob,
            "priors": dict(parse_prior(p) for p in args.prior) or None,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if args.command == "example":
                # a bundled example is small: pandas reads it at once (DuckDB takes longer to start)
                source = pd.read_csv(example_path(args.name))
                fit = fit_fn(source, **EXAMPLES[args.name], **options)
            else:
                source = args.file[0] if len(args.file) == 1 else args.file
                names = ("group", "y", "se", "successes", "trials", "counts", "exposure", "n", "sd")
                columns = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
                if args.formula is not None:
                    fit = _fit_formula(source, args, columns, options)
                elif args.family is not None:
                    raise TypeError("--family applies to --formula; a one-factor fit takes its "
                                    "family from the columns named")  # fmt: skip
                elif "group" not in columns:
                    raise TypeError("name the grouping column with --group, or give --formula")
                else:
                    fit = _fit_files(source, columns, options)
    except (ValueError, TypeError) as err:
        print(f"poolwise: error: {err}", file=sys.stderr)
        return 2
    if args.command != "report":
        _show(fit, args.json)
    path = _report_path(args)
    if path is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                written = fit.report(path, processes=2)
        except (ValueError, TypeError, OSError) as err:
            print(f"poolwise: error: {err}", file=sys.stderr)
            return 2
        print(f"report written to {written}", file=sys.stderr)
    return 0


def _program() -> NoReturn:
    """The ``poolwise`` program: :func:`main` on the command line, its output flushed, then exit
    at once, without the interpreter's teardown (freeing the modules of pandas, scipy and
    matplotlib one by one took a quarter of a second, for nothing left to do)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _program()
