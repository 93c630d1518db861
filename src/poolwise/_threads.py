"""One BLAS thread while poolwise computes: its matrix products are small and many.

A one-factor fit's products are weights times (points x groups) blocks sized to fit a cache;
BLAS threads cannot speed them up, and while another process holds the CPUs a threaded product
waits for its descheduled thread (milliseconds, where the product takes microseconds; on two
shared cores a 50-group fit took three times as long). threadpoolctl limits the BLAS libraries
loaded at the first fit (numpy's among them) for the duration of a ``with`` block and restores
their settings after.

Example
-------
>>> import numpy as np
>>> with one_blas_thread():
...     float(np.ones(3) @ np.ones(3))
3.0
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any


@cache
def _controller(scipy: bool) -> Any:
    """threadpoolctl's view of the BLAS libraries loaded: another one once scipy (which brings
    a BLAS library of its own) is."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread(scipy: bool = False) -> Iterator[None]:
    """Run the block with the process's BLAS libraries limited to one thread each; ``scipy``:
    import scipy.linalg first, for a block that needs scipy (its BLAS library, loaded inside
    the block, would escape the limit)."""
    if scipy:
        import scipy.linalg  # noqa: F401

    with _controller("scipy.linalg" in sys.modules).limit(limits=1, user_api="blas"):
        yield
