"""Lazy ArviZ import (ArviZ is heavy and optional at import time of poolwise)."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def import_arviz() -> Any:
    """``import arviz``, also where the installed arviz-plots expects an older matplotlib.

    Example
    -------
    >>> hasattr(import_arviz(), "from_dict")
    True
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # arviz-plots reads matplotlib.style.core, which newer matplotlib no longer imports
        importlib.import_module("matplotlib.style.core")
        return importlib.import_module("arviz")
