"""``import poolwise``, and a one-factor fit of a pandas frame, leave the slow imports alone."""

import json
import subprocess
import sys

import pytest

SLOW = [
    "scipy.stats",
    "matplotlib",
    "jax",
    "numpyro",
    "duckdb",
    "arviz",
    "arviz_stats",
    "formulae",
    "rich",
    "poolwise.check",
]
REPORT = "import json, sys; print(json.dumps(sorted(m for m in {slow} if m in sys.modules)))"

FITS = {
    "normal rows": (
        "pd.DataFrame({'g': list('aabbcc'), 'y': [1.0, 2.0, 0.5, 1.5, 3.0, 2.5]})",
        "group='g', y='y'",
    ),
    "normal with se": (
        "pd.DataFrame({'g': list('abcd'), 'y': [28.0, 8.0, -3.0, 7.0], 's': [15.0, 10, 16, 11]})",
        "group='g', y='y', se='s'",
    ),
    "binomial": (
        "pd.DataFrame({'g': list('abcd'), 'k': [1, 4, 2, 7], 'n': [10, 12, 9, 14]})",
        "group='g', successes='k', trials='n'",
    ),
    "poisson": (
        "pd.DataFrame({'g': list('abcd'), 'c': [5, 1, 14, 3], 't': [94.3, 15.7, 62.9, 126.0]})",
        "group='g', counts='c', exposure='t'",
    ),
}


def loaded(code: str) -> list[str]:
    """The slow modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = code + "\n" + REPORT.format(slow=SLOW)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_import_loads_none_of_the_slow_modules():
    assert loaded("import poolwise") == []


def test_the_check_module_is_still_an_attribute():
    assert loaded("import poolwise; poolwise.check.calibration") == [
        "poolwise.check",
        "scipy.stats",
    ]


@pytest.mark.parametrize("kind", list(FITS))
def test_a_one_factor_fit_of_a_pandas_frame_loads_none_of_them(kind):
    frame, columns = FITS[kind]
    code = f"import pandas as pd, poolwise\nfit = poolwise.fit({frame}, {columns}, seed=0)\n"
    code += "assert fit.method in ('exact', 'eb'), fit.method"


@pytest.mark.parametrize("kind", ["normal rows", "normal with se"])
def test_a_normal_fit_needs_no_scipy(kind):
    # its mixtures' distribution function is poolwise's own (intervals.normal_cdf), and pandas
    # itself reduces sound raw rows (data._sound_pandas_rows)
    frame, columns = FITS[kind]
    code = f"import pandas as pd, poolwise\nfit = poolwise.fit({frame}, {columns}, seed=0)\n"
    code += "import sys; print(json.dumps([m for m in ('scipy', 'narwhals') if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == (
        [] if kind == "normal rows" else ["narwhals"]
    )


def test_a_plain_formula_fit_groups_pandas_rows_without_narwhals():
    """The seed model's regression (a plain formula of numeric columns, fitted by quadrature):
    its pandas rows are checked and grouped without narwhals."""
    code = (
        "import pandas as pd, poolwise, warnings\nwarnings.simplefilter('ignore')\n"
        "df = pd.DataFrame({'t': [0, 1] * 3, 'd': [0, 0, 1, 1, 2, 2], "
        "'n': [100, 500, 1000, 5000, 10000, 50000], 'k': [20, 150, 200, 1500, 2000, 15000]})\n"
        "fit = poolwise.fit('p(k, n) ~ 1 + t + (1|d)', df, seed=1)\n"
        "assert fit.info['engine'] == 'aghq', fit.info\n"
        "import sys; assert not any(m.startswith('narwhals') for m in sys.modules)"
    )
    assert loaded(code) == ["formulae"]  # (its parser reads the formula)
