"""What the in-process benchmarks share: their command line and a fit's median time.

Each fit is timed after a first (warm-up) call in the same process; the median and the fastest
of ``--repeats`` calls are reported, with the warnings of the fits silenced.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any


def parse(doc: str, argv: list[str] | None = None, repeats: int = 7) -> argparse.Namespace:
    """The benchmark's arguments: ``--repeats`` (timed calls after the warm-up)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser.parse_args(argv)


def timed(call: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median and fastest seconds of ``repeats`` calls after a warm-up call, and the last result."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), min(times[1:]), result
