"""One BLAS thread inside a fit, and the process's own setting restored after it."""

import pandas as pd
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import poolwise
from poolwise import onefactor
from poolwise._threads import one_blas_thread


def _blas_threads() -> list[int]:
    """numpy's BLAS threads (the library its matrix products use)."""
    return [
        lib["num_threads"]
        for lib in threadpool_info()
        if lib["user_api"] == "blas" and "numpy" in lib["filepath"]
    ]


@pytest.fixture
def two_blas_threads():
    with threadpool_limits(limits=2, user_api="blas"):
        yield _blas_threads()


def test_a_fit_runs_on_one_blas_thread_and_restores_the_setting(monkeypatch, two_blas_threads):
    assert two_blas_threads and all(n == 2 for n in two_blas_threads)
    seen = []
    summarize = onefactor.summarize

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        return summarize(*args, **kwargs)

    monkeypatch.setattr(onefactor, "summarize", spy)
    df = pd.DataFrame({"g": [1, 2, 3], "k": [1, 4, 2], "n": [5, 6, 7]})
    poolwise.fit(df, group="g", successes="k", trials="n", priors={"a": 2, "b": 3})
    assert seen == [[1] * len(two_blas_threads)]
    assert _blas_threads() == two_blas_threads


def test_the_block_restores_the_setting_after_an_error(two_blas_threads):
    with pytest.raises(RuntimeError), one_blas_thread():
        assert all(n == 1 for n in _blas_threads())
        raise RuntimeError("inside")
    assert _blas_threads() == two_blas_threads


def test_a_formula_fit_checks_and_integrates_on_one_blas_thread(monkeypatch, two_blas_threads):
    from poolwise.glmm import aghq, setup

    seen = {}

    def spy(module, name):
        real = getattr(module, name)

        def inner(*args, **kwargs):
            seen[name] = _blas_threads()
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, inner)

    spy(setup, "identifiability")  # the cross-product's eigenvalues, in prepare()
    spy(aghq, "_posterior")
    df = pd.DataFrame(
        {"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7], "n": [10] * 6}
    )
    poolwise.fit("p(k, n) ~ 1 + x + (1|g)", df, seed=1)
    assert seen == {name: [1] * len(two_blas_threads) for name in ("identifiability", "_posterior")}
    assert _blas_threads() == two_blas_threads


def test_scipy_s_blas_is_limited_where_the_laplace_engine_first_loads_it():
    """scipy's own BLAS library runs on one thread in the Laplace engine's block as well (a fresh
    process, where scipy is not loaded before the fit)."""
    import json
    import subprocess
    import sys

    code = """
import json, sys, warnings
import pandas as pd
from threadpoolctl import threadpool_info
import poolwise
from poolwise.glmm import fit as door
assert "scipy" not in sys.modules
real, seen = door.fit_laplace, []
def spy(*args, **kwargs):
    seen.extend(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
    return real(*args, **kwargs)
door.fit_laplace = spy
warnings.simplefilter("ignore")
df = pd.DataFrame({"g": list("aabbcc"), "x": [0, 1] * 3, "k": [3, 6, 2, 5, 4, 7], "n": [10] * 6})
poolwise.fit("p(k, n) ~ 1 + x + (1|g)", df, method="eb", seed=1)
print(json.dumps(seen))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert len(seen) >= 2 and set(seen) == {1}  # numpy's and scipy's
