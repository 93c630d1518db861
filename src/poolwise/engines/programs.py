"""Compiled programs kept on disk between processes, so that a new process neither traces nor
compiles a model it has run before.

jax's persistent compilation cache skips compiling, but a new process still traces the Python
program (numpyro's NUTS kernel: seconds) to find it there. Here each program is also exported
(``jax.export``: the lowered module and its pytrees) to ``<cache>/programs/``, under a name that
hashes what makes it: the caller's key for the model, the arrays' shapes and types, the
settings, the versions of jax, jaxlib and numpyro, and poolwise's own source. A later process
loads the module instead of tracing; it runs the same computation and gives the same results.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any


def cache_folder() -> str | None:
    """poolwise's cache folder (``$POOLWISE_CACHE_DIR``, default ``~/.cache/poolwise``), or None
    when ``POOLWISE_COMPILATION_CACHE=0`` turns caching off.

    Example
    -------
    >>> os.environ["POOLWISE_CACHE_DIR"] = "/tmp/pw"; cache_folder()
    '/tmp/pw'
    >>> del os.environ["POOLWISE_CACHE_DIR"]
    """
    if os.environ.get("POOLWISE_COMPILATION_CACHE", "1") == "0":
        return None
    return os.environ.get("POOLWISE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "poolwise"
    )


@cache
def _fingerprint() -> str:
    """The versions the programs depend on, and a hash of poolwise's source."""
    digest = hashlib.sha256()
    for name in ("jax", "jaxlib", "numpyro"):
        digest.update(f"{name}={metadata.version(name)};".encode())
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_path(key: str, part: str) -> str | None:
    """Where the exported program ``part`` of the run identified by ``key`` is kept (None when
    caching is off)."""
    folder = cache_folder()
    if folder is None:
        return None
    name = hashlib.sha256(f"{_fingerprint()}|{part}|{key}".encode()).hexdigest()
    return os.path.join(folder, "programs", f"{name}.jaxexport")


@cache
def _register_pytrees() -> None:
    """Name numpyro's sampler states for serialization (once per process)."""
    from jax import export
    from numpyro.infer.hmc import HMCState
    from numpyro.infer.hmc_util import HMCAdaptState

    for kind in (HMCState, HMCAdaptState):
        export.register_namedtuple_serialization(kind, serialized_name=f"numpyro.{kind.__name__}")


def _compile(exported: Any) -> Callable:
    """An exported program compiled for the shapes it was exported with, the same way whether
    it was just exported or loaded (so both find one entry in jax's persistent cache)."""
    import jax

    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.in_avals]
    args, kwargs = jax.tree_util.tree_unflatten(exported.in_tree, shapes)
    return jax.jit(exported.call).lower(*args, **kwargs).compile()


def _load(path: str) -> Callable | None:
    """The stored program at ``path``, compiled (from jax's persistent compilation cache when it
    is there), or None."""
    from jax import export

    try:
        with open(path, "rb") as f:
            return _compile(export.deserialize(bytearray(f.read())))
    except Exception:  # unreadable, damaged or foreign: export it again
        return None


def _export(fn: Callable, path: str, args: tuple) -> Callable:
    from jax import export

    try:
        exported = export.export(fn)(*args)
        blob = exported.serialize()
    except (ValueError, TypeError, NotImplementedError, ImportError):
        return fn  # a program jax cannot export (or no flatbuffers): run it as it is
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        part = f"{path}.{os.getpid()}.tmp"
        with open(part, "wb") as f:
            f.write(blob)
        os.replace(part, path)
    except OSError:
        pass  # a folder we cannot write: the program still runs
    return _compile(exported)


class StoredProgram:
    """A jitted function whose first call loads its exported program from ``path`` (or exports
    it there); with no ``path`` it is the function itself. The first call, which compiles, is
    made by one thread while any others wait for it; :meth:`prefetch` loads ahead of it."""

    def __init__(self, fn: Callable, path: str | None) -> None:
        self.fn, self.path = fn, path
        self.call: Callable | None = None
        self.lock = threading.Lock()

    @property
    def pending(self) -> bool:
        """Whether a stored program is yet to be loaded (or exported)."""
        return self.call is None and self.path is not None

    def prefetch(self) -> None:
        """Load the stored program now, if there is one (64-bit types on: it runs on a worker
        thread while the caller starts on another part)."""
        import jax

        with self.lock, jax.enable_x64(True):
            if self.pending:
                _register_pytrees()
                self.call = _load(self.path)

    def __call__(self, *args: Any) -> Any:
        if self.call is not None:
            return self.call(*args)
        with self.lock:
            if self.call is not None:
                return self.call(*args)
            call = self.fn
            if self.path is not None:
                _register_pytrees()
                call = _load(self.path) or _export(self.fn, self.path, args)
            out = call(*args)
            self.call = call
            return out
