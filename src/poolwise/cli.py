"""The ``poolwise`` command line: fit a file and print the tables (rich), or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
    fit = sub.add_parser("fit", help="fit one grouping factor from a CSV or Parquet file (or glob)")
    fit.add_argument("file")
    fit.add_argument("--group", required=True)
    for name in ("y", "se", "successes", "trials", "counts", "exposure"):
        fit.add_argument(f"--{name}")
    _common(fit)
    example = sub.add_parser("example", help="fit a bundled example data set")
    example.add_argument("name", choices=sorted(EXAMPLES))
    _common(example)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pooling", default="partial", choices=["partial", "none", "complete"])
    p.add_argument("--method", default="auto", choices=["auto", "exact", "eb"])
    p.add_argument("--draws", type=int, default=4000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _table(title: str, frame: pd.DataFrame):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(frame.index.name or "", style="bold")
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for label, row in frame.iterrows():
        table.add_row(str(label), *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
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
            "population": json.loads(fit.population.to_json(orient="index")),
            "groups": json.loads(
                fit.groups.reset_index()
                .astype({fit.groups.index.name or "index": str})
                .to_json(orient="records")
            ),
            "warnings": fit.warnings,
        }
        print(json.dumps(out, indent=2))
        return
    from rich.console import Console

    console = Console()
    for line in fit._header():
        console.print(line, highlight=False)
    console.print(_table("Population", fit.population))
    console.print(_table("Groups", fit.groups))
    for w in fit.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poolwise`` command."""
    import warnings

    from . import fit as fit_fn
    from .data import example_path

    args = _parser().parse_args(argv)
    options = {
        "pooling": args.pooling,
        "method": args.method,
        "draws": args.draws,
        "seed": args.seed,
    }
    if args.command == "example":
        source, columns = example_path(args.name), EXAMPLES[args.name]
    else:
        source = args.file
        names = ("group", "y", "se", "successes", "trials", "counts", "exposure")
        columns = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_fn(source, **columns, **options)
    except (ValueError, TypeError) as err:
        print(f"poolwise: error: {err}", file=sys.stderr)
        return 2
    _show(fit, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
