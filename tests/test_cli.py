"""The command line: tables, JSON, and exit status 2 with a one-line reason."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings

import pandas as pd
import pytest

import poolwise
from poolwise.cli import main


def test_example_prints_tables(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["example", "pumps", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Population" in out and "Groups" in out and "kappa" in out


def test_fit_json_matches_the_python_fit(capsys):
    path = poolwise.example_path("eight_schools")
    assert (
        main(
            ["fit", path, "--group", "school", "--y", "y", "--se", "sigma", "--seed", "3", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    fit = poolwise.fit(path, group="school", y="y", se="sigma", seed=3)
    assert out["family"] == "normal_se" and out["n_groups"] == 8
    assert out["population"]["tau"]["mean"] == pytest.approx(
        fit.population.loc["tau", "mean"], rel=1e-12
    )
    assert [g["school"] for g in out["groups"]] == list("ABCDEFGH")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "nowhere.csv", "--group", "g", "--y", "y"], "data: no file matches 'nowhere.csv'"),
        (["fit", "EXAMPLE", "--group", "pump", "--counts", "nope"], "counts: no column 'nope'"),
    ],
)
def test_errors_exit_2_with_one_line(args, message, capsys):
    args = [poolwise.example_path("pumps") if a == "EXAMPLE" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_python_m_poolwise_flushes_its_output_and_exit_status(tmp_path):
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

    def program(*args):
        return subprocess.run(
            [sys.executable, "-m", "poolwise", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=buffered,
        )

    done = program("example", "eight_schools", "--seed", "1")
    assert done.returncode == 0, done.stderr
    # the whole output arrives (the program leaves without the interpreter's teardown)
    assert "Population" in done.stdout and done.stdout.rstrip().splitlines()[-1].startswith("H ")
    assert done.stderr.strip() == "report written to eight_schools.html"
    assert (tmp_path / "eight_schools.html").read_text(encoding="utf-8").count("<svg") == 5
    done = program("example", "pumps", "--json", "--report", "pumps.html")  # print(), buffered
    assert done.returncode == 0 and json.loads(done.stdout)["family"] == "poisson"
    done = program("fit", "nowhere.csv", "--group", "g", "--y", "y")
    assert done.returncode == 2 and "data: no file matches 'nowhere.csv'" in done.stderr


def test_console_script_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "poolwise.cli", "example", "rat_tumors", "--json", "--seed", "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(out.stdout)["family"] == "binomial"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("rat_tumors", ["--group", "experiment", "--successes", "y", "--trials", "n"]),
        ("radon_mn", ["--group", "county", "--y", "log_radon"]),
        ("pumps", ["--group", "pump", "--counts", "x_failures", "--exposure", "t_thousand_hours"]),
    ],
)
def test_tables_fit_80_columns_without_cut_cells(name, args, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["fit", poolwise.example_path(name), *args, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "…" not in out and max(map(len, lines)) <= 80
    # the labels' header and every label whole, on one line; hyperparameters by median and HDI
    header = next(line for line in lines if line.split()[:1] == [args[1]])
    assert header.split()[-1] == "shrinkage"
    assert any(
        line.split() == ["hyperparameter", "median", "hdi_low", "hdi_high"] for line in lines
    )


def test_numbers_in_the_tables_are_short():
    from poolwise.cli import _number

    cells = [_number(v) for v in (0.000153412, -0.000123456, 3013898856040.0, 123456.7, 1e-300)]
    assert cells == ["0.000153", "-0.00012", "3.01e+12", "1.23e+05", "1e-300"]
    assert all(len(c) <= 8 for c in cells) and _number(float("nan")) == "–"


THREAD_CSV = "distribution,trial_control,opens,sent\na,0,30,100\na,1,40,100\nb,0,20,100\n"
THREAD_CSV += "b,1,28,100\nc,0,35,100\nc,1,45,100\n"


def test_fit_a_formula_with_priors_and_hdi_prob(tmp_path, capsys):
    path = tmp_path / "thread.csv"
    path.write_text(THREAD_CSV)
    formula = "p(opens, sent) ~ 1 + trial_control + (1|distribution)"
    argv = ["fit", str(path), "--formula", formula, "--prior", "trial_control=Normal(0, 1)",
            "--prior", "1|distribution_sigma=0.5", "--hdi-prob", "0.9", "--draws", "400",
            "--seed", "1", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["priors"]["trial_control"] == repr(poolwise.Normal(0, 1))
    assert out["priors"]["1|distribution_sigma"] == "0.5"
    assert {row["level"] for row in out["groups"]} == {"a", "b", "c"}
    # the same fit from Python (its short chains warn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", poolwise.PoolwiseWarning)
        fit = poolwise.fit(
            formula,
            data=str(path),
            priors={"trial_control": poolwise.Normal(0, 1), "1|distribution_sigma": 0.5},
            hdi_prob=0.9,
            draws=400,
            seed=1,
        )
    assert out["method"] == fit.method == "laplace"  # auto: a formula's deterministic engine
    assert out["population"]["trial_control"]["mean"] == pytest.approx(
        float(fit.population.loc["trial_control", "mean"]), rel=1e-12
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--group", "distribution"], "a formula names its columns itself"),
        (["--prior", "tau"], "expected NAME=PRIOR"),
        (["--prior", "x=Cauchy(0, 1)"], "is not a number or a poolwise prior"),
        (["--family", "poisson"], "poisson"),
    ],
)
def test_formula_errors_exit_2(tmp_path, capsys, extra, message):
    path = tmp_path / "thread.csv"
    path.write_text(THREAD_CSV)
    argv = ["fit", str(path), "--formula", "p(opens, sent) ~ 1 + (1|distribution)", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_one_factor_fit_needs_a_group_or_a_formula(tmp_path, capsys):
    path = tmp_path / "thread.csv"
    path.write_text(THREAD_CSV)
    assert main(["fit", str(path), "--successes", "opens", "--trials", "sent"]) == 2
    assert "--group, or give --formula" in capsys.readouterr().err


def test_fit_a_formula_with_a_family_prints_its_tables(tmp_path, capsys):
    """--family bernoulli reads 0/1 rows; the terminal tables name the formula and its levels."""
    rows = ["g,x,won"] + [f"{g},{x},{int((i * 7 + x) % 3 == 0)}" for i, (g, x) in
                          enumerate([(g, x) for g in "abc" for x in (0, 1)] * 5)]  # fmt: skip
    path = tmp_path / "won.csv"
    path.write_text("\n".join(rows) + "\n")
    argv = ["fit", str(path), "--formula", "won ~ x + (1|g)", "--family", "bernoulli",
            "--prior", "1|g_sigma=0.5", "--draws", "400", "--seed", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "GlmmFit: won ~ x + (1|g)" in out and "bernoulli" in out
    assert "levels: 3 of g; 6 cells, 30 rows" in out
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["family"] == "bernoulli" and printed["n_rows"] == 30


def test_warnings_are_printed_as_written(capsys):
    """A level's name in brackets, theta[b], is text, not terminal markup."""
    from poolwise.cli import _show

    fit = poolwise.fit(pd.DataFrame({"g": list("ab"), "k": [1, 2], "n": [5, 5]}), group="g",
                       successes="k", trials="n", priors={"a": 1, "b": 1})  # fmt: skip
    _show(dataclasses.replace(fit, warnings=("theta[b] looks odd [bold]",)), as_json=False)
    assert "theta[b] looks odd [bold]" in capsys.readouterr().out
