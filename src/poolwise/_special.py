"""The functions of :mod:`scipy.special` that poolwise uses, imported at their first call.

Importing scipy.special takes about a quarter of a second, most of the time ``import poolwise``
would otherwise take on top of pandas; a fit needs it, ``import poolwise`` does not.

Example
-------
>>> from poolwise._special import gammaln
>>> float(gammaln(5.0))  # log 4!
3.1780538303479458
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any


@cache
def _scipy_special() -> ModuleType:
    import scipy.special

    return scipy.special


def _deferred(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_scipy_special(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``scipy.special.{name}``, imported at the first call."
    return call


betainc = _deferred("betainc")
betaincinv = _deferred("betaincinv")
betaln = _deferred("betaln")
expit = _deferred("expit")
expm1 = _deferred("expm1")
gammainc = _deferred("gammainc")
gammaincinv = _deferred("gammaincinv")
gammaln = _deferred("gammaln")
log1p = _deferred("log1p")
log_expit = _deferred("log_expit")
logit = _deferred("logit")
logsumexp = _deferred("logsumexp")
ndtri = _deferred("ndtri")
xlog1py = _deferred("xlog1py")
xlogy = _deferred("xlogy")
