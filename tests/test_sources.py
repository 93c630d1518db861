"""Every source gives the same fit: pandas, polars, pyarrow, DuckDB, files, Dask, Spark, summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import narwhals as nw
import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise import sources
from poolwise.cli import main
from poolwise.data import reduce

GROUPS = 12
ROWS = 480
# the normal family's 3-d quadrature is slow to converge on 12 groups: its fits here use "eb"
FAMILIES = {
    "normal": {"y": "y", "method": "eb"},
    "binomial": {"successes": "k", "trials": "n"},
    "poisson": {"counts": "c", "exposure": "e"},
}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Raw rows with real between-group variation in all three families (fixed seed).

    y and the exposures are multiples of 2^-8 and 2^-4, so that every engine sums them exactly
    whatever its summation order: the statistics then agree to the last bit (see
    ``test_statistics_agree_across_sources`` for what real-valued data give).
    """
    rng = np.random.default_rng(20240611)
    j = rng.integers(0, GROUPS, ROWS)
    theta = rng.normal(0.0, 1.0, GROUPS)
    p = rng.beta(4.0, 6.0, GROUPS)
    rate = rng.gamma(4.0, 0.5, GROUPS)
    n = rng.integers(1, 9, ROWS)
    e = rng.integers(8, 33, ROWS) / 16.0
    y = 3.0 + theta[j] + rng.normal(0.0, 1.5, ROWS)
    return pd.DataFrame(
        {
            "g": np.array([f"g{i:02d}" for i in range(GROUPS)])[j],
            "y": np.round(y * 256.0) / 256.0,
            "k": rng.binomial(n, p[j]),
            "n": n,
            "c": rng.poisson(rate[j] * e),
            "e": e,
        }
    )


@pytest.fixture(scope="module")
def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The normal rows as two summary rows per group (n, mean, sd with ddof=1), one with n = 1."""
    part = np.where(rows.groupby("g").cumcount() == 0, "first", "rest")
    out = rows.groupby(["g", part])["y"].agg(["size", "mean", "std"]).reset_index()
    return out.rename(columns={"size": "size", "mean": "mean", "std": "sd"})[
        ["g", "size", "mean", "sd"]
    ]


@pytest.fixture(scope="module")
def files(rows: pd.DataFrame, summary: pd.DataFrame, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sources")
    out = {"csv": str(root / "rows.csv"), "summary": str(root / "summary.parquet")}
    rows.to_csv(out["csv"], index=False)
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        rows.iloc[part].to_parquet(root / f"rows_{i}.parquet", index=False)
    out["parquet"] = str(root / "rows_0.parquet")
    out["glob"] = str(root / "rows_*.parquet")
    summary.to_parquet(out["summary"], index=False)
    return out


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = (
            SparkSession.builder.master("local[1]")
            .appName("poolwise-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.default.parallelism", "1")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def dask_client():
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _source(kind: str, frame: pd.DataFrame, path: str, request) -> object:
    """``frame`` (or the file at ``path``) as the source ``kind``."""
    if kind == "pandas":
        return frame
    if kind in ("polars", "polars-lazy"):
        import polars as pl

        df = pl.from_pandas(frame)
        return df.lazy() if kind == "polars-lazy" else df
    if kind == "pyarrow":
        import pyarrow as pa

        return pa.Table.from_pandas(frame, preserve_index=False)
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect()
        request.addfinalizer(con.close)
        return con.read_parquet(path)
    if kind == "path":
        return path
    if kind == "dask":
        request.getfixturevalue("dask_client")
        import dask.dataframe as dd

        return dd.from_pandas(frame, npartitions=3)
    if kind == "spark":
        session = request.getfixturevalue("spark")
        return session.read.parquet(path)
    raise AssertionError(kind)


def assert_same_fit(fit: poolwise.PoolFit, ref: poolwise.PoolFit) -> None:
    """Every number of ``.groups`` and ``.population`` agrees to 1e-9, with the same labels.

    One exception: the empirical Bayes population's ``sd`` and HDI come from a finite-difference
    Hessian, which turns last-bit differences in the statistics (the engines' variance
    algorithms differ) into ~1e-9 relative ones: they are held to 1e-8 (seen 1.3e-9).
    """
    for name in ("groups", "population"):
        got, want = getattr(fit, name), getattr(ref, name)
        assert list(got.index) == list(want.index), name
        assert list(got.columns) == list(want.columns), name
        eb = name == "population" and fit.method == "eb"
        loose = ["sd", "hdi_low", "hdi_high"] if eb else []
        for col in got.columns:
            np.testing.assert_allclose(
                got[col].to_numpy(np.float64),
                want[col].to_numpy(np.float64),
                rtol=1e-8 if col in loose else 1e-9,
                atol=1e-12,
                err_msg=f"{name}.{col}",
            )


@pytest.fixture(scope="module")
def reference(rows: pd.DataFrame) -> dict[str, poolwise.PoolFit]:
    return {
        family: poolwise.fit(rows, group="g", seed=3, draws=1000, **cols)
        for family, cols in FAMILIES.items()
    }


# Spark is slow to start and to run small jobs: it has one test of its own (test_spark_...)
SOURCES = ["pandas", "polars", "polars-lazy", "pyarrow", "duckdb", "path", "dask"]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_gives_the_same_fit(kind, rows, files, reference, request):
    data = _source(kind, rows, files["glob"], request)
    for family, cols in FAMILIES.items():
        fit = poolwise.fit(data, group="g", seed=3, draws=1000, **cols)
        assert_same_fit(fit, reference[family])
        assert fit.n_rows == reference[family].n_rows


def test_csv_path_and_list_of_paths(rows, files, reference):
    parts = sorted(p for p in os.listdir(os.path.dirname(files["glob"])) if p.startswith("rows_"))
    listed = [os.path.join(os.path.dirname(files["glob"]), p) for p in parts]
    for data in (files["csv"], listed):
        fit = poolwise.fit(data, group="g", seed=3, draws=1000, **FAMILIES["normal"])
        assert_same_fit(fit, reference["normal"])


@pytest.mark.parametrize("kind", SOURCES)
def test_normal_summaries_give_the_fit_of_the_rows(kind, summary, files, reference, request):
    data = _source(kind, summary, files["summary"], request)
    fit = poolwise.fit(
        data, group="g", y="mean", n="size", sd="sd", method="eb", seed=3, draws=1000
    )
    assert fit.n_rows == len(summary)
    assert_same_fit(fit, reference["normal"])


def test_count_totals_per_group_are_the_rows_summed(rows, reference):
    totals = rows.groupby("g", as_index=False)[["k", "n", "c", "e"]].sum()
    for family in ("binomial", "poisson"):
        fit = poolwise.fit(totals, group="g", seed=3, draws=1000, **FAMILIES[family])
        assert_same_fit(fit, reference[family])


def test_summary_statistics_match_the_rows_closed_form(rows, summary):
    got = reduce(summary, "g", "normal", {"y": "mean", "n": "size", "sd": "sd"})
    by = rows.groupby("g")["y"]
    np.testing.assert_array_equal(got.stats["n"], by.size().to_numpy())
    np.testing.assert_allclose(got.stats["mean"], by.mean().to_numpy(), rtol=1e-13)
    m2 = by.var(ddof=0).to_numpy() * by.size().to_numpy()
    np.testing.assert_allclose(got.stats["m2"], m2, rtol=1e-11)


def test_compare_accepts_summaries(summary):
    cmp = poolwise.compare(
        summary, group="g", y="mean", n="size", sd="sd", method="eb", seed=1, poolings=("partial",)
    )
    assert cmp.estimates["n"].sum() == ROWS


def test_summary_layout_errors():
    df = pd.DataFrame(
        {
            "g": list("aabb"),
            "m": [1.0, 2.0, 3.0, 4.0],
            "n": [3, 0, 1, 2],
            "s": [1.0, 1.0, np.nan, -1],
        }
    )
    with pytest.raises(ValueError) as err:
        poolwise.fit(df, group="g", y="m", n="n", sd="s")
    assert str(err.value) == (
        "n: column 'n' has values below 1 (each row summarises at least one observation) in 1 of "
        "4 rows; sd: column 's' has negative values in 1 of 4 rows"
    )
    df.loc[1, "n"] = 4
    df.loc[2, "n"] = 2
    df.loc[3, "s"] = 1.0
    with pytest.raises(
        ValueError, match=r"sd: column 's' has missing or non-finite values \(null, "
    ):
        poolwise.fit(df, group="g", y="m", n="n", sd="s")
    with pytest.raises(TypeError, match="y with n and sd"):
        poolwise.fit(df, group="g", y="m", n="n")


BAD = pd.DataFrame(
    {
        "g": ["a", "a", "b", "b", "c", None],
        "k": [1.0, np.nan, 3.0, 7.0, -1.0, 1.0],
        "n": [2.0, 3.0, np.inf, 5.0, 2.0, 2.5],
    }
)
BAD_MESSAGE = (
    "group: column 'g' has missing labels in 1 of 6 rows; "
    "successes: column 'k' has missing or non-finite values (null, NaN or ±inf) in 1 of 6 rows; "
    "successes: column 'k' has negative values in 1 of 6 rows; "
    "trials: column 'n' has missing or non-finite values (null, NaN or ±inf) in 1 of 6 rows; "
    "trials: column 'n' has values that are not whole numbers in 1 of 6 rows; "
    "successes: column 'k' exceeds trials column 'n' in 1 of 6 rows"
)


@pytest.mark.parametrize("kind", SOURCES)
def test_bad_rows_give_the_same_message_from_every_source(kind, tmp_path, request):
    path = str(tmp_path / "bad.parquet")
    BAD.to_parquet(path, index=False)
    data = _source(kind, BAD, path, request)
    with pytest.raises(ValueError) as err:
        poolwise.fit(data, group="g", successes="k", trials="n")
    assert str(err.value) == BAD_MESSAGE


@pytest.mark.parametrize("statistics", [True, False])
def test_parquet_statistics_never_hide_bad_rows(statistics, tmp_path):
    """Integer columns, where a Parquet file's own statistics may rule checks out: the bad rows of
    the second file are reported as from the rows in memory, with or without the statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = pa.table({"g": ["a", "b", "c"], "k": [1, 2, 0], "n": [3, 4, 5]})
    bad = pa.table(
        {
            "g": pa.array(["a", None, "c"]),
            "k": pa.array([None, -2, 6], pa.int64()),
            "n": pa.array([3, -1, 5], pa.int64()),
        }
    )
    for i, table in enumerate([good, bad]):
        pq.write_table(table, tmp_path / f"part_{i}.parquet", write_statistics=statistics)
    messages = []
    for data in [pa.concat_tables([good, bad]), str(tmp_path / "part_*.parquet")]:
        with pytest.raises(ValueError) as err:
            poolwise.fit(data, group="g", successes="k", trials="n")
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    for text in [
        "missing labels in 1 of 6",
        "'k' has missing",
        "'k' has negative values in 1",
        "'n' has negative values in 1",
        "exceeds trials column 'n' in 1 of 6",
    ]:
        assert text in messages[1]


def test_parquet_facts_rule_out_only_what_every_row_group_proves(tmp_path):
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from poolwise.sources import parquet_facts

    table = pa.table({"k": [0, 5, 2], "x": [-1.5, 2.0, None], "z": [1.0, float("nan"), 3.0]})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=1)
    pq.write_table(table, tmp_path / "b.parquet", write_statistics=False)
    facts = parquet_facts(str(tmp_path / "a.parquet"), duckdb.connect())
    assert facts["k"].no_nulls and facts["k"].low == 0.0
    # x: a row group of nulls records no minimum, so none is claimed
    assert not facts["x"].no_nulls and facts["x"].low == -np.inf
    assert not facts["z"].all_finite  # NaN is not in a file's min / max
    both = parquet_facts(str(tmp_path / "*.parquet"), duckdb.connect())
    assert not both["k"].no_nulls and both["k"].low == -np.inf
    pd.DataFrame({"k": [1]}).to_csv(tmp_path / "c.csv", index=False)
    assert parquet_facts(str(tmp_path / "c.csv"), duckdb.connect()) == {}


def test_spark_gives_the_same_fit_and_messages(rows, summary, files, reference, request, tmp_path):
    """One Spark session (local mode): raw rows, per-group summaries and bad rows."""
    data = _source("spark", rows, files["glob"], request)
    fit = poolwise.fit(data, group="g", seed=3, draws=1000, **FAMILIES["normal"])
    assert_same_fit(fit, reference["normal"])
    data = _source("spark", summary, files["summary"], request)
    fit = poolwise.fit(
        data, group="g", y="mean", n="size", sd="sd", method="eb", seed=3, draws=1000
    )
    assert_same_fit(fit, reference["normal"])
    path = str(tmp_path / "bad.parquet")
    BAD.to_parquet(path, index=False)
    with pytest.raises(ValueError) as err:
        poolwise.fit(_source("spark", BAD, path, request), group="g", successes="k", trials="n")
    assert str(err.value) == BAD_MESSAGE


def test_column_errors_name_the_column(rows):
    with pytest.raises(ValueError, match=r"trials: no column 'trials' in the data; columns are"):
        poolwise.fit(rows, group="g", successes="k", trials="trials")
    with pytest.raises(TypeError, match=r"y: column 'g' must be numeric, but it holds String"):
        poolwise.fit(rows, group="k", y="g")
    with pytest.raises(ValueError, match="data: the table has no rows"):
        poolwise.fit(rows.iloc[:0], group="g", y="y")
    with pytest.raises(ValueError, match=r"data: no file matches '.*nothing\*\.parquet'"):
        poolwise.fit("nothing*.parquet", group="g", y="y")
    with pytest.raises(ValueError, match=r"data: expected \.csv or \.parquet files"):
        poolwise.fit(__file__, group="g", y="y")
    with pytest.raises(TypeError, match="data must be a dataframe .* got int"):
        poolwise.fit(3, group="g", y="y")


def test_parquet_input_collects_only_per_group_results(rows, files, monkeypatch):
    """Nothing but the checks' one row and the group-by's one row per group reaches Python."""
    collected = []
    real_collect = nw.LazyFrame.collect

    def spy(self, *args, **kwargs):
        out = real_collect(self, *args, **kwargs)
        collected.append(len(out))
        return out

    def refuse(*args, **kwargs):
        raise AssertionError("raw rows were read into Python")

    monkeypatch.setattr(nw.LazyFrame, "collect", spy)
    monkeypatch.setattr(pd, "read_parquet", refuse)
    monkeypatch.setattr(nw.LazyFrame, "to_native", refuse)
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "read_table", refuse)
    for family, cols in FAMILIES.items():
        collected.clear()
        cols = {k: v for k, v in cols.items() if k != "method"}
        stats = reduce(files["glob"], "g", family, cols)
        assert collected == [1, GROUPS], family
        assert stats.n_rows == ROWS if family != "normal" else stats.stats["n"].sum() == ROWS


def test_progress_reports_both_stages(files):
    seen = []
    cols = FAMILIES["binomial"]
    reduce(files["glob"], "g", "binomial", cols, progress=lambda *a: seen.append(a))
    stages = [s for s, _ in seen]
    assert stages[0] == "checking rows" and stages[-1] == "grouping"
    assert seen[-1] == ("grouping", 1.0)


def test_cli_reports_rows_and_groups(files, rows, capsys):
    args = ["fit", files["glob"], "--group", "g", "--y", "y", "--method", "eb", "--json"]
    code = main(args)
    out = capsys.readouterr()
    assert code == 0
    assert f"read {ROWS} rows in {GROUPS} groups" in out.err
    assert json.loads(out.out)["n_rows"] == ROWS
    code = main(["fit", files["summary"], "--group", "g", "--y", "mean", "--n", "size"])
    assert code == 2
    assert "y with n and sd" in capsys.readouterr().err


def test_import_stays_light():
    code = "import sys, poolwise; print(sorted({'duckdb', 'pyspark', 'dask'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_to_frame_wraps_without_reading(rows):
    frame = sources.to_frame(rows)
    assert frame.implementation.is_pandas()
    assert sources.to_frame(frame) is frame


@pytest.mark.parametrize("labels", ["int", "str", "category", "float", "index"])
def test_sound_pandas_rows_reduce_by_pandas_as_through_narwhals(labels, monkeypatch):
    from poolwise import data

    rng = np.random.default_rng(7)
    school = rng.integers(0, 40, 3000)
    df = pd.DataFrame({"g": school, "y": rng.normal(50, 10, school.size)})
    if labels == "str":
        df["g"] = "s" + df["g"].astype(str)
    elif labels == "category":
        df["g"] = df["g"].astype("category")
    elif labels == "float":
        df["g"], df["y"] = df["g"] / 2, (df["y"] * 10).round().astype(np.int64)
    elif labels == "index":
        df.index = df["g"]  # an index named like the group column
    assert (
        data._sound_pandas_rows(df, "g", {"y": "y"}, data.layout("normal", {"y": "y"})) is not None
    )
    fast = reduce(df, "g", "normal", {"y": "y"})
    monkeypatch.setattr(data, "_sound_pandas_rows", lambda *args: None)
    general = reduce(df, "g", "normal", {"y": "y"})
    assert fast.labels.equals(general.labels) and fast.labels.dtype == general.labels.dtype
    assert fast.n_rows == general.n_rows
    for key, value in general.stats.items():
        assert fast.stats[key].dtype == value.dtype and np.array_equal(fast.stats[key], value)


def test_pandas_rows_with_a_bad_value_take_the_general_path():
    from poolwise import data

    lay = data.layout("normal", {"y": "y"})
    for df in (
        pd.DataFrame({"g": [1, 1, 2], "y": [1.0, np.nan, 2.0]}),
        pd.DataFrame({"g": [1, None, 2], "y": [1.0, 3.0, 2.0]}),
        pd.DataFrame({"g": [1, 1, 2], "y": ["a", "b", "c"]}),
    ):
        assert data._sound_pandas_rows(df, "g", {"y": "y"}, lay) is None
    with pytest.raises(ValueError, match="missing or non-finite values"):
        reduce(pd.DataFrame({"g": [1, 1, 2], "y": [1.0, np.inf, 2.0]}), "g", "normal", {"y": "y"})
