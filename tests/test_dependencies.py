"""Every import of the library and of the tests is declared by a dependency of the project."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_is_declared():
    # deptry fails on an import no dependency declares (DEP001) and on one that only arrives with
    # another package (DEP003): both would break a fresh install
    run = subprocess.run(
        [sys.executable, "-m", "deptry", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
