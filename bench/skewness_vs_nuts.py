"""The Laplace engine (one-factor models included, by ``fit_laplace`` directly) against every
stored long NUTS reference of a binomial or poisson formula model, and the accuracy check.

    PYTHONPATH=src python bench/skewness_vs_nuts.py [name ...]

For each reference: the largest |Laplace mean - NUTS mean| in NUTS posterior sds and the largest
|sd ratio - 1| over the common effects, over the group sds, and over the levels' effects, and
the check of LAPLACE.md section 7 (largest simplified-Laplace shift in sds, Pareto k-hat,
separated levels). Run with main's sources for the engine without the skewness correction.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from poolwise import HalfNormal as H
from poolwise import Normal as N
from poolwise.glmm.laplace import fit_laplace
from poolwise.glmm.setup import prepare

REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "reference"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REFERENCES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


glmm, lap = _load("run_glmm_references"), _load("run_laplace_references")
FEW = {"Intercept": N(0, 2), "x": N(0, 1), "1|g_sigma": H(1)}
CROSSED = {"Intercept": N(0, 2), "x": N(0, 1), "1|a_sigma": H(1), "1|b_sigma": H(1)}
SEEDS = ["Intercept", "x1_seed_type", "x2_root_extract", "x1_seed_type:x2_root_extract"]
MODELS = {  # reference: (formula, data, options, priors)
    "aghq_surgical": (
        "p(r_deaths, n_operations) ~ 1 + (1|hospital)",
        glmm.surgical_data,
        {},
        {"Intercept": N(-2.5, 2), "1|hospital_sigma": H(1)},
    ),
    "aghq_seeds": (
        "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
        glmm.seeds_data,
        {},
        {**dict.fromkeys(SEEDS, N(0, 2)), "1|plate_sigma": H(1)},
    ),
    "aghq_bernoulli_small": (
        "y ~ 1 + x + (1|g)",
        glmm.bernoulli_small_data,
        {"family": "bernoulli"},
        FEW,
    ),
    "aghq_poisson_one": (
        "c ~ 1 + x + (1|g)",
        glmm.poisson_one_data,
        {"family": "poisson", "exposure": "t"},
        FEW,
    ),
    "binomial_crossed": (
        "p(k, n) ~ 1 + x + (1|a) + (1|b)",
        glmm.binomial_crossed_data,
        {},
        CROSSED,
    ),
    "poisson_crossed": (
        "c ~ 1 + x + (1|a) + (1|b) + offset(log(t))",
        glmm.poisson_crossed_data,
        {},
        CROSSED,
    ),
    "seed_model": (
        "p(opens, sent) ~ 1 + trial_control + (1|distribution)",
        lap.seed_model_data,
        {},
        None,
    ),
    "seeds": (
        "p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate)",
        lap.seeds_data,
        {},
        {**dict.fromkeys(SEEDS, N(0, 10)), "1|plate_sigma": H(1)},
    ),
    "binomial_few": ("p(k, n) ~ 1 + x + (1|g)", lap.binomial_few_data, {}, FEW),
    "bernoulli_small": (
        "y ~ 1 + x + (1|g)",
        lap.bernoulli_small_data,
        {"family": "bernoulli"},
        FEW,
    ),
}


def compare(name: str) -> dict:
    formula, data, options, priors = MODELS[name]
    ref = json.loads((REFERENCES / f"glmm_{name}.json").read_text())["parameters"]
    fit = fit_laplace(prepare(formula, data(), priors=priors, **options), seed=1)
    out = {}
    for kind in ("common", "sds", "levels"):
        dm, ds = [], []
        for parameter, value in ref.items():
            is_level = isinstance(value, list)
            is_sd = parameter.endswith("_sigma")
            if (kind, is_level, is_sd) not in (
                ("common", False, False),
                ("sds", False, True),
                ("levels", True, False),
            ):
                continue
            if is_level:
                rows = fit.groups.loc[parameter]
                mean, sd = rows["mean"].to_numpy(), rows["sd"].to_numpy()
                rm = np.array([v["mean"] for v in value])
                rs = np.array([v["sd"] for v in value])
            else:
                row = fit.population.loc[parameter]
                mean, sd = np.array([row["mean"]]), np.array([row["sd"]])
                rm, rs = np.array([value["mean"]]), np.array([value["sd"]])
            dm += list(np.abs(mean - rm) / rs)
            ds += list(np.abs(sd / rs - 1))
        out[kind] = (max(dm), max(ds)) if dm else None
    out["check"] = fit.info.get("laplace_check")
    return out


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for name in sys.argv[1:] or list(MODELS):
        r = compare(name)
        cells = [
            f"{k} {r[k][0]:.3f} sd / {r[k][1]:.3f}" if r[k] else f"{k} -"
            for k in ("common", "sds", "levels")
        ]
        print(f"{name}: " + "; ".join(cells), flush=True)
        if r["check"]:
            print(f"  check: {r['check']}", flush=True)
