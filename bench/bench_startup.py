"""Start-up: ``import poolwise`` against ``import pandas``, and ``poolwise example eight_schools``.

Every measurement runs in a fresh interpreter, and the runs of the different measurements (and
code versions) alternate, so that a noisy machine slows them alike; the times printed are medians.

    python bench/bench_startup.py                       # this checkout's src
    python bench/bench_startup.py --repeat 9
    python bench/bench_startup.py --before /work/main/src --after src   # two versions side by side

Measured, in seconds:

* ``import pandas`` and ``import poolwise``: the time of the import statement (interpreter start
  excluded), and their ratio; importing poolwise includes importing pandas.
* ``poolwise example eight_schools``: the wall time of the whole command (interpreter start, fit,
  tables on the terminal, the HTML report written), and, in a separate run of the same steps in one
  script, each step's share: importing the command line, the fit, the tables, the report.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
STEPS = """
import contextlib, io, time, warnings
t0 = time.perf_counter()
import poolwise
from poolwise import cli
t1 = time.perf_counter()
warnings.simplefilter("ignore")
fit = poolwise.fit(poolwise.example_path("eight_schools"), **cli.EXAMPLES["eight_schools"])
t2 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    cli._show(fit, False)
t3 = time.perf_counter()
fit.report("steps.html")
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""
STEP_NAMES = ("  import poolwise.cli", "  fit", "  tables", "  report")


def run(code: list[str], src: str, cwd: str) -> str:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run(code, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def measure(src: str, cwd: str) -> dict[str, list[float]]:
    """One run of each measurement with poolwise from ``src``."""
    out: dict[str, list[float]] = {}
    for module in ("pandas", "poolwise"):
        out[f"import {module}"] = [
            float(run([sys.executable, "-c", IMPORT.format(module=module)], src, cwd))
        ]
    start = time.perf_counter()
    run([sys.executable, "-m", "poolwise.cli", "example", "eight_schools"], src, cwd)
    out["poolwise example eight_schools"] = [time.perf_counter() - start]
    steps = [float(x) for x in run([sys.executable, "-c", STEPS], src, cwd).split()]
    for name, value in zip(STEP_NAMES, steps, strict=True):
        out[name] = [value]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each measurement (median)")
    parser.add_argument("--before", help="src folder of another poolwise, measured alongside")
    parser.add_argument("--after", default=str(SRC), help="src folder of poolwise (default: ./src)")
    args = parser.parse_args()
    versions = {"after": os.path.abspath(args.after)}
    if args.before:
        versions = {"before": os.path.abspath(args.before), **versions}
    results: dict[str, dict[str, list[float]]] = {v: {} for v in versions}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeat):
            for version, src in versions.items():
                for key, values in measure(src, cwd).items():
                    results[version].setdefault(key, []).extend(values)
    medians = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in results.items()}
    keys = list(medians["after"])
    head = f"{'median of ' + str(args.repeat) + ' runs (s)':34}" + "".join(
        f"{v:>10}" for v in versions
    )
    print(head + ("  after/before" if args.before else ""))
    for key in keys:
        row = f"{key:34}" + "".join(f"{medians[v][key]:10.3f}" for v in versions)
        if args.before:
            row += f"{medians['after'][key] / medians['before'][key]:14.2f}"
        print(row)
    ratio = {v: m["import poolwise"] / m["import pandas"] for v, m in medians.items()}
    print(
        f"{'import poolwise / import pandas':34}" + "".join(f"{ratio[v]:10.2f}" for v in versions)
    )


if __name__ == "__main__":
    main()
