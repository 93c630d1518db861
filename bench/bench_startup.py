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
  tables on the terminal, the HTML report written) and its CPU time (all its processes), and, in
  a separate run of the same command in one script, each step's share: importing the command
  line, the fit, the tables, the report (its figures drawn as the command draws them: in two
  processes where it can).
* the same command on a fresh machine: matplotlib's font cache empty (a new ``MPLCONFIGDIR`` for
  each run, as on CI), so that matplotlib first builds its list of the system's fonts.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
STEPS = """
import contextlib, io, time
t0 = time.perf_counter()
import poolwise, poolwise.results
from poolwise import cli
t1 = time.perf_counter()
spent = {}

def timed(name, function):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
    return run

poolwise.fit = timed("fit", poolwise.fit)
cli._show = timed("tables", cli._show)
poolwise.results.PoolFit.report = timed("report", poolwise.results.PoolFit.report)
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    assert cli.main(["example", "eight_schools"]) == 0
print(t1 - t0, spent["fit"], spent["tables"], spent["report"])
"""
STEP_NAMES = ("  import poolwise.cli", "  fit", "  tables", "  report")


def run(code: list[str], src: str, cwd: str, **environ: str) -> str:
    env = dict(os.environ, PYTHONPATH=src, **environ)
    done = subprocess.run(code, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def children_cpu() -> float:
    """User and system CPU seconds of the finished subprocesses (and theirs), so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(src: str, cwd: str) -> dict[str, list[float]]:
    """One run of each measurement with poolwise from ``src``."""
    out: dict[str, list[float]] = {}
    for module in ("pandas", "poolwise"):
        out[f"import {module}"] = [
            float(run([sys.executable, "-c", IMPORT.format(module=module)], src, cwd))
        ]
    command = [sys.executable, "-m", "poolwise.cli", "example", "eight_schools"]
    start, cpu = time.perf_counter(), children_cpu()
    run(command, src, cwd)
    out["poolwise example eight_schools"] = [time.perf_counter() - start]
    out["  its CPU time (all processes)"] = [children_cpu() - cpu]
    steps = [float(x) for x in run([sys.executable, "-c", STEPS], src, cwd).split()]
    for name, value in zip(STEP_NAMES, steps, strict=True):
        out[name] = [value]
    with tempfile.TemporaryDirectory() as fonts:
        start = time.perf_counter()
        run(command, src, cwd, MPLCONFIGDIR=fonts)
        out["  the same, font cache empty"] = [time.perf_counter() - start]
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
