"""The package keeps its layers: every import points down (the contract in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    return subprocess.run([command], cwd=cwd, capture_output=True, text=True)


def test_imports_point_down():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    # the same contract over a copy of the package in which a verb imports a result class
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "src" / "poolwise", tmp_path / "poolwise")
    ranks = tmp_path / "poolwise" / "ranks.py"
    ranks.write_text(ranks.read_text() + "\n\ndef _up():\n    from .results import PoolFit\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert "poolwise.ranks -> poolwise.results" in run.stdout
