"""Long NUTS reference posteriors of five more regressions, for the Laplace engine's tests,
written with numpyro (never poolwise) by the machinery of ``run_glmm_references.py``.

    python tests/reference/run_laplace_references.py            # all five, 4 x 2,000 draws
    python tests/reference/run_laplace_references.py seeds --dry

Models (zero-sum group effects as in ``run_glmm_references.py``: c - mean(c), c iid N(0, sd)):

- ``seed_model``: the thread's p(opens, sent) ~ 1 + trial_control + (1|distribution), 6 cells,
  with poolwise's default priors written out: Intercept ~ N(logit of the pooled rate, 2.5),
  trial_control ~ N(0, 2.5 / sd(trial_control)) = N(0, 5), sd ~ HalfNormal(1); its effects
  sampled centered (thousands of trials a level: the non-centered funnel diverges).
- ``seeds``: BUGS seeds, p(r, n) ~ x1 * x2 + (1|plate), common effects ~ N(0, 10),
  plate sd ~ HalfNormal(1).
- ``binomial_few``: 30 levels of 3 rows with 1-3 trials each, p(k, n) ~ 1 + x + (1|g);
  Intercept ~ N(0, 2), x ~ N(0, 1), sd ~ HalfNormal(1).
- ``bernoulli_small``: 50 levels of 2-5 Bernoulli rows, y ~ 1 + x + (1|g), same priors.
- ``poisson_three``: c ~ 1 + x + (1|a) + (1|b) + (1|a:c), 6 x 5 crossed levels and 3 levels of c
  nested in each a, 600 rows; Intercept ~ N(0, 2), x ~ N(0, 1), sds ~ HalfNormal(1).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("glmm_refs", HERE / "run_glmm_references.py")
glmm_refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(glmm_refs)
SEEDS = HERE.parents[1] / "src" / "poolwise" / "examples" / "seeds.csv"
SAMPLES, WARMUP = 2000, 1000


# ---------------------------------------------------------------------------------------- data
def seed_model_data() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_control": [0, 1, 0, 1, 0, 1],
            "distribution": [0, 0, 1, 1, 2, 2],
            "sent": [100, 500, 1000, 5000, 10000, 50000],
            "opens": [20, 150, 200, 1500, 2000, 15000],
        }
    )


def seed_model_intercept_loc() -> float:
    d = seed_model_data()
    p = (d["opens"].sum() + 0.5) / (d["sent"].sum() + 1.0)
    return round(math.log(p / (1 - p)), 6)


def seeds_data() -> pd.DataFrame:
    return pd.read_csv(SEEDS)


def binomial_few_data() -> pd.DataFrame:
    rng = np.random.default_rng(141)
    g = np.repeat(np.arange(30), 3)
    x = rng.normal(size=g.size).round(2)
    n = rng.integers(1, 4, g.size)
    p = 1 / (1 + np.exp(-(-0.3 + 0.6 * x + rng.normal(0, 0.8, 30)[g])))
    return pd.DataFrame({"g": g, "x": x, "k": rng.binomial(n, p), "n": n})


def bernoulli_small_data() -> pd.DataFrame:
    rng = np.random.default_rng(142)
    g = np.repeat(np.arange(50), rng.integers(2, 6, 50))
    x = rng.normal(size=g.size).round(2)
    p = 1 / (1 + np.exp(-(0.2 + 0.8 * x + rng.normal(0, 1.0, 50)[g])))
    return pd.DataFrame({"g": g, "x": x, "y": rng.binomial(1, p)})


def poisson_three_data() -> pd.DataFrame:
    rng = np.random.default_rng(143)
    n = 600
    a, b, c = rng.integers(0, 6, n), rng.integers(0, 5, n), rng.integers(0, 3, n)
    x = rng.normal(size=n).round(2)
    eta = 0.5 + 0.3 * x + rng.normal(0, 0.5, 6)[a] + rng.normal(0, 0.3, 5)[b]
    eta += rng.normal(0, 0.4, 18)[a * 3 + c]
    return pd.DataFrame({"a": a, "b": b, "c": c, "x": x, "y": rng.poisson(np.exp(eta))})


# -------------------------------------------------------------------------------------- models
def _logit_model(k, n, X, groups, priors, sd_scale, centered=False):
    """Binomial (or Bernoulli with n = 1) with common effects X and zero-sum group terms."""
    import numpyro
    import numpyro.distributions as dist

    eta = _linear(X, groups, priors, sd_scale, centered)
    numpyro.sample("k", dist.Binomial(n, logits=eta), obs=k)


def _linear(X, groups, priors, sd_scale, centered=False):
    """The linear predictor; ``centered`` samples the effects c ~ N(0, sd) themselves (levels
    with thousands of trials, where sd * z makes a funnel that NUTS diverges in)."""
    import numpyro
    import numpyro.distributions as dist

    eta = 0.0
    for j, (loc, scale) in enumerate(priors):
        eta = eta + numpyro.sample(f"beta{j}", dist.Normal(loc, scale)) * X[:, j]
    for i, (codes, size) in enumerate(groups):
        sd = numpyro.sample(f"sd{i}", dist.HalfNormal(sd_scale))
        if centered:
            c = numpyro.sample(f"c{i}", dist.Normal(0, sd).expand([size]).to_event(1))
            u = numpyro.deterministic(f"u{i}", c - c.mean())
        else:
            u = glmm_refs._deviations(f"u{i}", size, sd)
        eta = eta + u[codes]
    return eta


def _poisson_model(y, X, groups, priors, sd_scale):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    eta = _linear(X, groups, priors, sd_scale)
    numpyro.sample("y", dist.Poisson(jnp.exp(eta)), obs=y)


def _design(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return np.column_stack([np.ones(len(frame))] + [frame[c].to_numpy(float) for c in columns])


def _args():
    seed = seed_model_data()
    seeds = seeds_data()
    seeds["x12"] = seeds["x1_seed_type"] * seeds["x2_root_extract"]
    few, bern, three = binomial_few_data(), bernoulli_small_data(), poisson_three_data()
    return {
        "seed_model": lambda: dict(
            k=seed["opens"].to_numpy(),
            n=seed["sent"].to_numpy(),
            X=_design(seed, ["trial_control"]),
            groups=[(seed["distribution"].to_numpy(), 3)],
            priors=[(seed_model_intercept_loc(), 2.5), (0.0, 5.0)],
            sd_scale=1.0,
            centered=True,
        ),
        "seeds": lambda: dict(
            k=seeds["r_germinated"].to_numpy(),
            n=seeds["n_seeds"].to_numpy(),
            X=_design(seeds, ["x1_seed_type", "x2_root_extract", "x12"]),
            groups=[(pd.factorize(seeds["plate"], sort=True)[0], seeds["plate"].nunique())],
            priors=[(0.0, 10.0)] * 4,
            sd_scale=1.0,
        ),
        "binomial_few": lambda: dict(
            k=few["k"].to_numpy(),
            n=few["n"].to_numpy(),
            X=_design(few, ["x"]),
            groups=[(few["g"].to_numpy(), 30)],
            priors=[(0.0, 2.0), (0.0, 1.0)],
            sd_scale=1.0,
        ),
        "bernoulli_small": lambda: dict(
            k=bern["y"].to_numpy(),
            n=np.ones(len(bern), dtype=int),
            X=_design(bern, ["x"]),
            groups=[(bern["g"].to_numpy(), 50)],
            priors=[(0.0, 2.0), (0.0, 1.0)],
            sd_scale=1.0,
        ),
        "poisson_three": lambda: dict(
            y=three["y"].to_numpy(),
            X=_design(three, ["x"]),
            groups=[
                (three["a"].to_numpy(), 6),
                (three["b"].to_numpy(), 5),
                (three["a"].to_numpy() * 3 + three["c"].to_numpy(), 18),
            ],
            priors=[(0.0, 2.0), (0.0, 1.0)],
            sd_scale=1.0,
        ),
    }


ARGS = _args()
# poolwise's summary row -> numpyro site
SITES = {
    "seed_model": {
        "Intercept": "beta0",
        "trial_control": "beta1",
        "1|distribution_sigma": "sd0",
        "1|distribution": "u0",
    },
    "seeds": {
        "Intercept": "beta0",
        "x1_seed_type": "beta1",
        "x2_root_extract": "beta2",
        "x1_seed_type:x2_root_extract": "beta3",
        "1|plate_sigma": "sd0",
        "1|plate": "u0",
    },
    "binomial_few": {"Intercept": "beta0", "x": "beta1", "1|g_sigma": "sd0", "1|g": "u0"},
    "bernoulli_small": {"Intercept": "beta0", "x": "beta1", "1|g_sigma": "sd0", "1|g": "u0"},
    "poisson_three": {
        "Intercept": "beta0",
        "x": "beta1",
        "1|a_sigma": "sd0",
        "1|b_sigma": "sd1",
        "1|a:c_sigma": "sd2",
    },
}
for _seed, _name in enumerate(SITES, start=20):
    _model = _poisson_model if _name == "poisson_three" else _logit_model
    glmm_refs.MODELS[_name] = (_model, ARGS[_name], _seed, SITES[_name])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(SITES)} (default: all)")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--dry", action="store_true", help="print summaries, write no JSON")
    args = parser.parse_args()
    for name in args.models or list(SITES):
        glmm_refs.run(name, args.samples, args.warmup, 0.95, write=not args.dry)


if __name__ == "__main__":
    main()
