"""Benchmark of the reduction layer: poolwise fits from a Parquet file, polars and Spark.

Each measurement runs in a fresh subprocess (so that peak RSS is its own). Data sets are generated
on first use under ``bench/_data/`` (never committed) with a fixed seed::

    python bench/bench_reduce.py                      # 1e8 rows in 1e6 groups, all measurements
    python bench/bench_reduce.py --rows 1e7 --groups 1e5 --repeat 1 --only file

Printed: one row per measurement with the median wall time, peak RSS, and the ratio to DuckDB's
bare GROUP BY of the same statistics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
SEED = 20240611
CHUNK = 5_000_000


def dataset(rows: int, groups: int) -> Path:
    """A Parquet file of ``rows`` rows in ``groups`` groups: g (int32), y (float64), k, n (int32).

    y ~ N(theta_g, 3²), theta_g ~ N(5, 2²); n ~ 1 + Poisson(4) trials with k ~ Binomial(n, p_g),
    p_g ~ Beta(3, 7). Written in row groups of 5e6 rows; generated once and reused.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = DATA / f"rows_{rows:.0e}_groups_{groups:.0e}.parquet".replace("+", "")
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    rng = np.random.default_rng(SEED)
    theta = 5.0 + 2.0 * rng.standard_normal(groups)
    p = rng.beta(3.0, 7.0, groups)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema(
        [("g", pa.int32()), ("y", pa.float64()), ("k", pa.int32()), ("n", pa.int32())]
    )
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, CHUNK):
            size = min(CHUNK, rows - start)
            g = rng.integers(0, groups, size, dtype=np.int32)
            y = theta[g] + 3.0 * rng.standard_normal(size)
            n = 1 + rng.poisson(4.0, size).astype(np.int32)
            k = rng.binomial(n, p[g]).astype(np.int32)
            writer.write_table(pa.table({"g": g, "y": y, "k": k, "n": n}, schema=schema))
    tmp.rename(path)
    return path


COLUMNS = {"normal": {"y": "y"}, "binomial": {"successes": "k", "trials": "n"}}
SQL = {
    "normal": "count(*) AS n, avg(y) AS mean, var_pop(y) AS var",
    "binomial": "count(*) AS rows, sum(k) AS k, sum(n) AS n",
}


def _child(name: str, path: str, family: str) -> dict:
    """One measurement, run in this (fresh) process: wall seconds of the timed part."""
    import resource

    out: dict = {}
    if name == "poolwise-file":
        import poolwise

        t = time.perf_counter()
        fit = poolwise.fit(path, group="g", seed=1, **COLUMNS[family])
        out["seconds"] = time.perf_counter() - t
        out["groups"], out["method"] = fit.n_groups, fit.method
    elif name == "duckdb-file":
        import duckdb

        t = time.perf_counter()
        con = duckdb.connect()
        con.sql(f"SELECT g, {SQL[family]} FROM read_parquet('{path}') GROUP BY g").fetchnumpy()
        out["seconds"] = time.perf_counter() - t
    elif name == "pandas-file":
        import pandas as pd

        t = time.perf_counter()
        cols = ["g", *COLUMNS[family].values()]
        df = pd.read_parquet(path, columns=cols)
        if family == "normal":
            df.groupby("g")["y"].agg(["size", "mean", lambda s: s.var(ddof=0)])
        else:
            df.groupby("g")[["k", "n"]].sum()
        out["seconds"] = time.perf_counter() - t
    elif name.startswith("polars-"):
        import polars as pl

        df = pl.read_parquet(path)
        if name == "polars-poolwise":
            import poolwise  # outside the clock, as for the file measurements
        t = time.perf_counter()
        if name == "polars-poolwise":
            poolwise.fit(df, group="g", seed=1, **COLUMNS[family])
        elif name == "polars-groupby":
            y = pl.col("y")
            aggs = (
                [pl.len(), y.mean().alias("mean"), y.var(ddof=0).alias("var")]
                if family == "normal"
                else [pl.len(), pl.col("k").sum(), pl.col("n").sum()]
            )
            df.group_by("g").agg(aggs)
        elif name == "polars-duckdb":
            import duckdb

            duckdb.sql(f"SELECT g, {SQL[family]} FROM df GROUP BY g").fetchnumpy()
        out["seconds"] = time.perf_counter() - t
    elif name == "spark-poolwise":
        import warnings

        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        from pyspark.sql import SparkSession

        spark = (
            SparkSession.builder.master("local[*]")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", "4g")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        out["startup"] = time.perf_counter() - t0
        import poolwise

        t1 = time.perf_counter()
        poolwise.fit(spark.read.parquet(path), group="g", seed=1, **COLUMNS[family])
        out["fit"] = time.perf_counter() - t1
        out["seconds"] = time.perf_counter() - t0
        spark.stop()
    else:
        raise ValueError(f"unknown measurement {name!r}")
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def measure(name: str, path: Path, family: str, repeat: int) -> dict:
    """Median over ``repeat`` fresh processes; peak RSS is the largest seen."""
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", name, "--path", str(path), "--family", family]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {k: v for k, v in runs[-1].items() if not isinstance(v, float)}
    for key in [k for k, v in runs[0].items() if isinstance(v, float)]:
        values = [r[key] for r in runs]
        out[key] = max(values) if key == "peak_rss_gib" else statistics.median(values)
    out["all_seconds"] = [round(r["seconds"], 2) for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=1e8)
    parser.add_argument("--groups", type=float, default=1e6)
    parser.add_argument("--small-rows", type=float, default=1e7, help="polars and Spark rows")
    parser.add_argument("--small-groups", type=float, default=1e5)
    parser.add_argument("--families", default="normal,binomial")
    parser.add_argument("--only", default="file,polars,spark")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--path")
    parser.add_argument("--family", default="normal")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.path, args.family)))
        return
    big = dataset(int(args.rows), int(args.groups))
    small = dataset(int(args.small_rows), int(args.small_groups))
    plan = {
        "file": (big, ["duckdb-file", "poolwise-file", "pandas-file"]),
        "polars": (small, ["polars-groupby", "polars-duckdb", "polars-poolwise"]),
        "spark": (small, ["spark-poolwise"]),
    }
    print(
        f"{'measurement':<18}{'family':<10}{'rows':>8}{'median s':>10}{'ratio':>8}"
        f"{'peak GiB':>10}  runs / notes",
        flush=True,
    )
    for family in args.families.split(","):
        for part in args.only.split(","):
            path, names = plan[part]
            rows = f"{int(args.rows if part == 'file' else args.small_rows):.0e}"
            base = None
            for name in names:
                r = measure(name, path, family, 1 if name.startswith("spark") else args.repeat)
                base = base or r["seconds"]
                note = str(r["all_seconds"])
                if "startup" in r:
                    note = f"start-up {r['startup']:.1f} s ({r['startup'] / r['seconds']:.0%}), fit {r['fit']:.1f} s"
                print(
                    f"{name:<18}{family:<10}{rows:>8}{r['seconds']:>10.2f}"
                    f"{r['seconds'] / base:>8.2f}{r['peak_rss_gib']:>10.2f}  {note}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
