"""Slow-to-import modules that poolwise needs only once it works, imported at their first use.

``import poolwise`` costs little more than ``import pandas``: scipy.special (about a quarter of a
second) and narwhals are imported when a fit first needs them, not when poolwise is imported.

Example
-------
>>> from poolwise._lazy import gammaln, special
>>> float(gammaln(5.0)) == float(special.gammaln(5.0))  # log 4!, either way
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class LazyModule:
    """Stands for the module ``name``, which is imported at the first attribute looked up.

    >>> LazyModule("math").pi
    3.141592653589793
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(importlib.import_module(self._name), attribute)
        setattr(self, attribute, value)  # found directly from now on
        return value

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"


narwhals = LazyModule("narwhals")
special = LazyModule("scipy.special")


def _deferred(name: str) -> Callable[..., Any]:
    """``scipy.special.<name>`` for ``from ._lazy import <name>``, imported at the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(special, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``scipy.special.{name}``, imported at the first call."
    return call


expit = _deferred("expit")
gammaln = _deferred("gammaln")
log_expit = _deferred("log_expit")
logit = _deferred("logit")
logsumexp = _deferred("logsumexp")
xlog1py = _deferred("xlog1py")
xlogy = _deferred("xlogy")
