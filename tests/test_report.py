"""The HTML report: self-contained, complete, and rendered by a real browser."""

import json
import os
import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import poolwise
from poolwise.cli import main

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does this)",
)

# injected into a copy of the report: records errors from the first byte on, then the checks
PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(
  "error: " + (e.message || (e.target && (e.target.src || e.target.href)) || "resource")), true);
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { window.__errors.push(level + ": " + args.join(" ")); original(...args); };
}
</script>"""
PROBE_BODY = """<script>
window.addEventListener("load", () => {
  const svgs = [...document.querySelectorAll("figure svg")].map(s => {
    const r = s.getBoundingClientRect();
    return {width: r.width, height: r.height, shapes: s.querySelectorAll("path, use, image, text").length};
  });
  const imgs = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, src: i.src.slice(0, 40)}));
  const tables = [...document.querySelectorAll("table")].map(t => t.querySelectorAll("tbody tr").length);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({errors: window.__errors, svgs, imgs, tables,
    sections: [...document.querySelectorAll("section")].map(s => s.id)});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def rats():
    df = pd.read_csv(poolwise.example_path("rat_tumors"))
    return poolwise.fit(df, group="experiment", successes="y", trials="n", seed=0, draws=1000)


@pytest.fixture(scope="module")
def rats_report(rats, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "rats.html"
    assert rats.report(path, title="Rat tumours") == path
    return path


def test_report_is_self_contained_and_complete(rats, rats_report):
    text = rats_report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Rat tumours</title>" in text
    # nothing fetched: no scripts, no external sources, links or stylesheets
    assert "<script" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"url\((?!#)", text)
    assert "@import" not in text
    # the plots, inline
    assert text.count("<svg") == 5
    assert text.count("<figure") == 5
    for section in (
        "summary",
        "model",
        "population",
        "shrinkage",
        "league",
        "groups",
        "diagnostics",
    ):
        assert f'<section id="{section}">' in text
    # the model in symbols and words, the priors used
    assert "θ<sub>j</sub> ~ Beta(a, b), a = φκ, b = (1 − φ)κ" in text
    assert "Beta(alpha=1, beta=1)" in text and "Lomax(alpha=0.5, scale=1)" in text
    # tables carry the fit's numbers (4 significant digits)
    assert f"<td>{rats.population.loc['phi', 'mean']:.4g}</td>" in text
    league = rats.ranks()
    first = league.index[0]
    assert re.search(rf"<tr><th>{first}</th><td>{league.iloc[0]['raw']:.4g}</td>", text)
    assert text.count("<tr><th>") >= 2 + 4 + 50 + 71  # priors, population, league, groups
    assert "No warnings" in text
    assert "posterior predictive check" in text


@needs_chromium
def test_report_renders_in_headless_chromium(rats_report, tmp_path):
    text = rats_report.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(
        text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>"),
        encoding="utf-8",
    )
    shot = tmp_path / "shot.png"

    def chromium(*args):
        profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
        return subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    run = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert match, run.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert probe["sections"] == [
        "summary", "model", "population", "shrinkage", "league", "groups", "diagnostics"
    ]  # fmt: skip
    assert len(probe["svgs"]) == 5
    for svg in probe["svgs"]:  # every plot laid out at a visible size, with its drawing inside
        assert svg["width"] > 300 and svg["height"] > 150, svg
        assert svg["shapes"] > 20, svg
    assert all(img["ok"] for img in probe["imgs"]), probe["imgs"]
    assert probe["tables"] == [2, 4, 50, 71]  # rows of priors, population, league, groups

    # the report as a person sees it: a screenshot that is not blank
    run = chromium("--window-size=1280,2000", "--hide-scrollbars", f"--screenshot={shot}",
                   rats_report.as_uri())  # fmt: skip
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    ink = (pixels.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert 0.02 < ink < 0.6, ink
    assert pixels.std() > 0.1
    # the page keeps colour where it should: the blue accent of the shrinkage lines and header
    blue = (pixels[..., 2] > pixels[..., 0] + 0.25).mean()
    assert blue > 0.002, blue
    if os.environ.get("POOLWISE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["POOLWISE_KEEP_SCREENSHOT"])


def test_report_with_many_groups_and_warnings(tmp_path):
    rng = np.random.default_rng(0)
    df = poolwise.simulate("poisson", {"mu": 2.0, "kappa": 5.0}, rng.uniform(0.5, 20, 5000), seed=0)
    fit = poolwise.fit(
        df, group="group", counts="counts", exposure="exposure", method="eb", draws=200, seed=0
    )
    path = fit.report(tmp_path / "many.html")
    text = path.read_text(encoding="utf-8")
    assert "The first 200 of 5,000 groups" in text and "The first 50 of 5,000 groups" in text
    assert text.count("<svg") == 5
    assert len(text) < 3_000_000  # dense plots are embedded as images inside the SVG
    # a boundary estimate: identical groups, no between-group spread; the warning is reported
    same = pd.DataFrame({"g": list("abcdefgh"), "k": [5] * 8, "n": [50] * 8})
    with pytest.warns(poolwise.PoolwiseWarning, match="edge of its range"):
        flat = poolwise.fit(same, group="g", successes="k", trials="n", method="eb", seed=0)
    text = flat.report(tmp_path / "flat.html").read_text(encoding="utf-8")
    assert '<ul class="warnings"><li>kappa was estimated at the edge of its range' in text
    assert "No warnings" not in text


def undated(text):
    """A report or figure without its time stamps (the SVGs' date, the footer)."""
    return re.sub(r"<dc:date>.*?</dc:date>|<footer>.*?</footer>", "", text)


def test_report_drawn_in_two_processes_is_the_same(rats, rats_report, tmp_path):
    path = rats.report(tmp_path / "two.html", title="Rat tumours", processes=2)
    assert undated(path.read_text(encoding="utf-8")) == undated(rats_report.read_text("utf-8"))


def test_report_errors(rats, tmp_path):
    with pytest.raises(ValueError, match="path: .* is a directory; give a file name"):
        rats.report(tmp_path)
    with pytest.raises(TypeError, match="path must be a file path, got int"):
        rats.report(3)
    with pytest.raises(ValueError, match="best must be 'high' or 'low', got 'top'"):
        rats.report(tmp_path / "x.html", best="top")


def test_cli_report_fit_and_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    schools = poolwise.example_path("eight_schools")
    assert main(["report", schools, "--group", "school", "--y", "y", "--se", "sigma",
                 "--seed", "1", "--draws", "400", "-o", "schools.html"]) == 0  # fmt: skip
    assert (tmp_path / "schools.html").read_text().count("<svg") == 5
    assert "report written to schools.html" in capsys.readouterr().err
    assert main(["fit", schools, "--group", "school", "--y", "y", "--se", "sigma",
                 "--draws", "400", "--json", "--report", "fit.html"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert json.loads(out.out)["n_groups"] == 8  # stdout stays machine-readable
    assert (tmp_path / "fit.html").exists()
    assert main(["example", "pumps", "--draws", "400", "--seed", "0"]) == 0
    assert "report written to pumps.html" in capsys.readouterr().err
    assert "Poisson counts over exposure" in (tmp_path / "pumps.html").read_text()
    assert main(["example", "rat_tumors", "--draws", "400", "--report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_cards_show_the_median_and_hdi_of_hyperparameters():
    """The bento students at the default priors: kappa has no mean (the grid's edge set it at
    3e12); the card shows its median and HDI."""
    from poolwise.htmlpage import format_number
    from poolwise.report import _cards

    students = pd.DataFrame(
        {"s": list("ABCDEF"), "k": [70, 28, 6, 3, 2, 0], "n": [100, 40, 10, 5, 2, 1]}
    )
    with pytest.warns(poolwise.PoolwiseWarning, match="kappa"):
        fit = poolwise.fit(students, group="s", successes="k", trials="n", seed=1)
    cards = re.sub(r"<[^>]+>", "|", _cards(fit))
    kappa = fit.population.loc["kappa"]
    assert np.isnan(kappa["mean"])
    assert f"|{format_number(kappa['median'])}|" in cards
    assert (
        f"94% HDI {format_number(kappa['hdi_low'])} – {format_number(kappa['hdi_high'])}" in cards
    )
    phi = fit.population.loc["phi"]
    assert f"|{format_number(phi['median'])}|" in cards and "e+" not in cards and "nan" not in cards
