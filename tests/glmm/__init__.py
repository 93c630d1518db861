"""Tests of the formula fits; :func:`reference_script` loads the scripts that made the stored
long NUTS runs (their data and models), once per test session."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

REFERENCES = Path(__file__).resolve().parents[1] / "reference"


@functools.cache
def reference_script(name: str) -> ModuleType:
    """``tests/reference/<name>.py`` as a module (loaded by path: the folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, REFERENCES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
