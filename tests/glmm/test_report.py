"""The report of a regression: its sections, the fit's numbers in its tables, diagnostics that an
engine does not have said to be absent, and the command line."""

import dataclasses
import html
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.cli import main
from poolwise.htmlpage import format_number

FORMULA = "p(opens, sent) ~ 1 + trial_control + (1|distribution) + (1|segment)"
THREAD = pd.DataFrame(
    {
        "distribution": list("aabbccdd") * 2,
        "segment": ["s"] * 8 + ["t"] * 8,
        "trial_control": [0, 1] * 8,
        "opens": [30, 40, 20, 28, 35, 45, 25, 33, 28, 41, 22, 25, 37, 44, 21, 35],
        "sent": [100] * 16,
    }
)


def _fit(formula, data, **options):
    with warnings.catch_warnings():  # short chains warn of their r_hat and ESS
        warnings.simplefilter("ignore", poolwise.PoolwiseWarning)
        return poolwise.fit(formula, data=data, seed=3, draws=800, tune=400, progress=False,
                            **options)  # fmt: skip


@pytest.fixture(scope="module")
def fit():
    return _fit(FORMULA, THREAD)


@pytest.fixture(scope="module")
def page(fit, tmp_path_factory):
    path = fit.report(tmp_path_factory.mktemp("report") / "thread.html", best="low", top=2)
    return path.read_text(encoding="utf-8")


def _section(text, anchor):
    return re.search(f'<section id="{anchor}">(.*?)</section>', text, re.S).group(1)


def _rows(section, which=0):
    """Each row of a section's ``which``-th table: its label and its cells' text."""
    body = re.findall(r"<tbody>(.*?)</tbody>", section, re.S)[which]
    rows = re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", body, re.S)
    return {label: re.findall(r"<td>(.*?)</td>", cells) for label, cells in rows}


def test_report_has_every_section_and_figure(fit, page):
    anchors = re.findall(r'<section id="([^"]+)">', page)
    assert anchors == ["summary", "model", "common", "population", "term-0", "term-1", "check",
                       "diagnostics"]  # fmt: skip
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[4:6] == ["1|distribution", "1|segment"]
    # population, then shrinkage, estimates and forest per term, then the check
    assert page.count("<svg") == 1 + 3 * 2 + 1
    assert html.escape(FORMULA) in _section(page, "model")
    # nothing fetched: no scripts, no external sources, links or stylesheets
    assert "<script" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"url\((?!#)", page)


def test_tables_hold_the_fits_numbers(fit, page):
    common = _rows(_section(page, "common"))
    assert list(common) == ["Intercept", "trial_control"]
    for name, cells in common.items():
        row = fit.population.loc[name]
        expected = [format_number(row[c]) for c in ("mean", "sd", "median", "hdi_low", "hdi_high")]
        expected += [
            format_number(fit.table.loc[name, c]) for c in ("ess_bulk", "ess_tail", "r_hat")
        ]
        assert cells == expected, name
    sds = _rows(_section(page, "population"))
    assert list(sds) == ["1|distribution_sigma", "1|segment_sigma"]
    assert sds["1|segment_sigma"][0] == format_number(fit.population.loc["1|segment_sigma", "mean"])
    priors = _rows(_section(page, "model"))
    assert priors["trial_control"] == [html.escape(repr(fit.priors["trial_control"])), "prior"]
    term = _section(page, "term-1")
    levels = fit.groups.loc["1|segment"]
    rows = _rows(term)
    for level in ("s", "t"):
        assert rows[level][:3] == [
            format_number(levels.loc[level, c]) for c in ("n", "raw", "mean")
        ]
    # the league table ranks the lowest effect first (best="low") with P(top 2)
    league = fit.ranks(factor="1|distribution", best="low", top=2)
    assert "p_top2" in _section(page, "term-0")
    assert list(_rows(_section(page, "term-0"), which=1)) == [str(x) for x in league.index]


def test_diagnostics_name_each_check(fit, page):
    diag = _section(page, "diagnostics")
    terms = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", diag))
    assert terms["divergences"] == format_number(fit.info["divergences"])
    assert terms["largest r_hat"].startswith(f"{fit.table['r_hat'].max():.3f} (")
    assert terms["identifiability"] == "the data identify every common effect"
    assert terms["posterior predictive check"].startswith("p = ")
    sds = [t.sigma_name for t in fit.design.groups]
    boundary = [s for s in sds if any(w.startswith(f"{s} sits at its lower boundary")
                                      for w in fit.warnings)]  # fmt: skip
    if boundary:
        assert all(s in terms["singular factors"] for s in boundary)
    else:
        assert terms["singular factors"].startswith("none")
    for w in fit.warnings:
        assert html.escape(w) in diag


def test_a_fit_without_chains_says_its_diagnostics_do_not_apply(fit, tmp_path):
    """Draws from an engine without Markov chains (no divergences, r_hat or ESS)."""
    info = {k: v for k, v in fit.info.items() if k not in ("divergences", "chains")}
    laplace = dataclasses.replace(
        fit,
        method="laplace",
        info=info,
        table=fit.table.drop(columns=["ess_bulk", "ess_tail", "r_hat"]),
    )
    text = laplace.report(tmp_path / "laplace.html").read_text(encoding="utf-8")
    terms = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", _section(text, "diagnostics")))
    absent = "not applicable: the laplace engine runs no Markov chains"
    assert terms["divergences"] == terms["r_hat"] == terms["ESS"] == absent
    assert "r_hat" not in _section(text, "common")


def test_a_singular_factor_is_named(tmp_path):
    """Levels that differ by nothing but noise: the sd piles at 0, and the report says so."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(list("abcdef"), 40), "x": np.tile([0, 1], 120)})
    df["y"] = 0.5 * df["x"] + rng.normal(size=240)
    fit = _fit("y ~ 1 + x + (1|g)", df, priors={"1|g_sigma": poolwise.HalfNormal(5)})
    text = fit.report(tmp_path / "singular.html").read_text(encoding="utf-8")
    terms = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", _section(text, "diagnostics")))
    median = np.median(fit.hyper_draws["1|g_sigma"])
    assert terms["singular factors"] == f"1|g_sigma (median {median:.3g})"


def test_report_errors(fit, tmp_path):
    with pytest.raises(ValueError, match="path: .* is a directory; give a file name"):
        fit.report(tmp_path)
    with pytest.raises(ValueError, match="best must be 'high' or 'low', got 'mid'"):
        fit.report(tmp_path / "r.html", best="mid")
    with pytest.raises(TypeError, match="path must be a file path, got int"):
        fit.report(3)


def test_command_line_reports_a_formula(tmp_path, capsys):
    data = tmp_path / "thread.csv"
    THREAD.to_csv(data, index=False)
    out = tmp_path / "thread.html"
    argv = ["report", str(data), "--formula", FORMULA, "--draws", "400", "--seed", "1",
            "--prior", "trial_control=Normal(0, 1)", "--hdi-prob", "0.9", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "Normal(mu=0, sigma=1)" in text and "90% HDI" in text
    assert "not applicable: the laplace engine runs no Markov chains" in text  # auto: laplace
    assert re.findall(r'<section id="(term-\d)">', text) == ["term-0", "term-1"]
    # fit --report: the tables as JSON and the report beside them
    out2 = tmp_path / "fit.html"
    argv = ["fit", str(data), "--formula", FORMULA, "--draws", "400", "--seed", "1", "--json",
            "--method", "nuts", "--report", str(out2)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "nuts" and out2.exists()
    assert {row["term"] for row in printed["groups"]} == {"1|distribution", "1|segment"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--formula", "p(opens, sent) ~ 1 + (1|nope)"], "no column 'nope' in the data"),
        (["--formula", FORMULA, "--successes", "opens"], "--successes: a formula names"),
        (["--formula", FORMULA, "--prior", "nope=Normal(0, 1)"], "priors: no term 'nope'"),
        (["--formula", FORMULA, "--hdi-prob", "1.5"], "hdi_prob"),
        (["--formula", FORMULA, "--pooling", "none"], "a formula fit pools partially"),
    ],
)
def test_command_line_report_exits_2_on_bad_input(tmp_path, capsys, extra, message):
    data = tmp_path / "thread.csv"
    THREAD.to_csv(data, index=False)
    argv = ["report", str(data), *extra, "--draws", "100", "-o", str(tmp_path / "r.html")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("poolwise: error:") and message in err
    assert not (tmp_path / "r.html").exists()
