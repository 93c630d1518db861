"""Long-run NUTS reference posteriors of regressions, written with numpyro (never poolwise).

The suite compares poolwise's formula fits with these stored summaries instead of sampling an
independent reference on every run. Each model is fitted to its data set (built here, with fixed
seeds, by the functions the tests import) with 4 chains in float64 and written to
``glmm_<model>.json``: for each compared quantity its posterior mean, sd, Monte Carlo standard
error of the mean, bulk ESS, the ESS of its squared deviations (which sets the Monte Carlo error
of an sd) and its kurtosis.

    python tests/reference/run_glmm_references.py                 # all of them
    python tests/reference/run_glmm_references.py radon --samples 2000 --dry

Models (zero-sum group effects built as c - mean(c), c iid N(0, sd): the marginal of c - mean(c)
is poolwise's zero-sum normal, and mean(c) is not in the likelihood):

- ``radon``: log_radon ~ 1 + floor + (1|county), Minnesota radon (919 homes, 85 counties);
  Intercept ~ N(1.5, 2), floor ~ N(0, 2), county sd ~ HalfNormal(1), sigma ~ HalfNormal(2).
- ``radon_slopes``: log_radon ~ 1 + floor + (1 + floor|county), a correlated county intercept
  and floor slope (Gelman and Hill's M3): Intercept ~ N(1.5, 2), floor ~ N(0, 2), both sds ~
  HalfNormal(1), their correlation ~ LKJ(1), sigma ~ HalfNormal(2); each county's (intercept,
  slope) = diag(sd) L z with z standard normal, then centred over the counties.
- ``binomial_slopes``: p(k, n) ~ 1 + x + (1 + x|g), 25 levels of 6 rows (1-12 trials each), a
  correlated intercept and slope; Intercept ~ N(0, 2), x ~ N(0, 1), both sds ~ HalfNormal(1),
  their correlation ~ LKJ(1); each level's (intercept, slope) built as radon_slopes' are.
- ``binomial_crossed``: p(k, n) ~ 1 + x + (1|a) + (1|b), 2,000 rows, 8 x 6 crossed levels;
  Intercept ~ N(0, 2), x ~ N(0, 1), both sds ~ HalfNormal(1).
- ``poisson_crossed``: c ~ 1 + x + (1|a) + (1|b) + offset(log(t)), the same design with exposure.

One scalar factor of a binomial or poisson model (the models of adaptive Gauss–Hermite
quadrature, :mod:`poolwise.glmm.aghq`), each group sd ~ HalfNormal(1):

- ``aghq_surgical``: BUGS surgical, p(r_deaths, n_operations) ~ 1 + (1|hospital); Intercept ~ N(-2.5, 2).
- ``aghq_seeds``: BUGS seeds, p(r_germinated, n_seeds) ~ x1_seed_type * x2_root_extract + (1|plate);
  every common effect ~ N(0, 2).
- ``aghq_bernoulli_small``: y ~ 1 + x + (1|g), 0/1 rows, 40 levels of 2-5 rows; Intercept ~ N(0, 2),
  x ~ N(0, 1).
- ``aghq_poisson_one``: c ~ 1 + x + (1|g) + offset(log(t)), 15 levels of small counts; Intercept ~
  N(0, 2), x ~ N(0, 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "src" / "poolwise" / "examples"
RADON = EXAMPLES / "radon_mn.csv"
NUM_CHAINS = 4
NUM_WARMUP = 1_000
NUM_SAMPLES = 10_000


# ---------------------------------------------------------------------------------------- data
def radon_data() -> pd.DataFrame:
    """The Minnesota radon homes (the bundled example)."""
    return pd.read_csv(RADON)


def crossed_design(rng: np.random.Generator, n_rows: int):
    """Two crossed factors (8 and 6 levels), a covariate and the factors' true effects."""
    a = rng.integers(0, 8, n_rows)
    b = rng.integers(0, 6, n_rows)
    x = rng.normal(size=n_rows).round(1)
    ea, eb = rng.normal(0, 0.5, 8), rng.normal(0, 0.3, 6)
    return a, b, x, ea, eb


def binomial_crossed_data() -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    a, b, x, ea, eb = crossed_design(rng, 2000)
    trials = rng.integers(1, 20, len(a))
    p = 1 / (1 + np.exp(-(-0.5 + 0.4 * x + ea[a] + eb[b])))
    return pd.DataFrame({"a": a, "b": b, "x": x, "k": rng.binomial(trials, p), "n": trials})


def binomial_slopes_data() -> pd.DataFrame:
    rng = np.random.default_rng(31)
    g = np.repeat(np.arange(25), 6)
    x = rng.normal(size=g.size).round(1)
    sd, rho = np.array([0.6, 0.4]), 0.5
    L = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    u = rng.normal(size=(25, 2)) @ (sd[:, None] * L).T
    trials = rng.integers(1, 13, g.size)
    p = 1 / (1 + np.exp(-(-0.3 + 0.5 * x + u[g, 0] + u[g, 1] * x)))
    return pd.DataFrame({"g": g, "x": x, "k": rng.binomial(trials, p), "n": trials})


def poisson_crossed_data() -> pd.DataFrame:
    rng = np.random.default_rng(77)
    a, b, x, ea, eb = crossed_design(rng, 2000)
    exposure = rng.uniform(0.5, 3.0, len(a)).round(2)
    mu = exposure * np.exp(0.3 - 0.2 * x + ea[a] + eb[b])
    return pd.DataFrame({"a": a, "b": b, "x": x, "c": rng.poisson(mu), "t": exposure})


def surgical_data() -> pd.DataFrame:
    """BUGS surgical: deaths in operations at 12 hospitals (the bundled example)."""
    return pd.read_csv(EXAMPLES / "surgical.csv")


def seeds_data() -> pd.DataFrame:
    """BUGS seeds: germinated seeds on 21 plates, 2 x 2 design (the bundled example)."""
    return pd.read_csv(EXAMPLES / "seeds.csv")


def bernoulli_small_data() -> pd.DataFrame:
    """0/1 rows, 40 levels of 2 to 5 rows each, a covariate, level sd 1."""
    rng = np.random.default_rng(31)
    sizes = rng.integers(2, 6, 40)
    g = np.repeat(np.arange(40), sizes)
    x = rng.normal(size=g.size).round(1)
    p = 1 / (1 + np.exp(-(-0.3 + 0.8 * x + rng.normal(0, 1.0, 40)[g])))
    return pd.DataFrame({"g": g, "x": x, "y": rng.binomial(1, p)})


def poisson_one_data() -> pd.DataFrame:
    """Counts with exposure, 15 levels of 3 to 6 rows with small counts, level sd 0.5."""
    rng = np.random.default_rng(53)
    sizes = rng.integers(3, 7, 15)
    g = np.repeat(np.arange(15), sizes)
    x = rng.normal(size=g.size).round(1)
    t = rng.uniform(0.5, 2.0, g.size).round(2)
    mu = t * np.exp(-0.7 + 0.3 * x + rng.normal(0, 0.5, 15)[g])
    return pd.DataFrame({"g": g, "x": x, "t": t, "c": rng.poisson(mu)})


# -------------------------------------------------------------------------------------- models
def _deviations(name: str, n: int, sd):
    import numpyro
    import numpyro.distributions as dist

    z = numpyro.sample(f"{name}_z", dist.Normal(0, 1).expand([n]).to_event(1))
    c = sd * z
    return numpyro.deterministic(name, c - c.mean())


def radon_model(y, floor, county, n):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(1.5, 2))
    b = numpyro.sample("b", dist.Normal(0, 2))
    tau = numpyro.sample("tau", dist.HalfNormal(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    u = _deviations("u", n, tau)
    numpyro.sample("y", dist.Normal(a + b * floor + u[county], sigma), obs=y)


def _block_deviations(n: int):
    """A correlated intercept and slope per level, (n, 2), centred over the levels: both sds
    ~ HalfNormal(1), their correlation ~ LKJ(1); records sd0, sd1, rho, u0 and u1
    (radon_slopes_model writes the same out, its sites in the order of its stored run)."""
    import numpyro
    import numpyro.distributions as dist

    sd = numpyro.sample("sd", dist.HalfNormal(1).expand([2]).to_event(1))
    L = numpyro.sample("L", dist.LKJCholesky(2, 1.0))
    z = numpyro.sample("z", dist.Normal(0, 1).expand([n, 2]).to_event(2))
    c = z @ (sd[:, None] * L).T
    u = c - c.mean(axis=0)
    numpyro.deterministic("u0", u[:, 0])
    numpyro.deterministic("u1", u[:, 1])
    numpyro.deterministic("sd0", sd[0])
    numpyro.deterministic("sd1", sd[1])
    numpyro.deterministic("rho", L[1, 0])
    return u


def binomial_slopes_model(k, n, x, g, levels):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0, 2))
    b = numpyro.sample("b", dist.Normal(0, 1))
    u = _block_deviations(levels)
    logits = a + b * x + u[g, 0] + u[g, 1] * x
    numpyro.sample("k", dist.Binomial(n, logits=logits), obs=k)


def radon_slopes_model(y, floor, county, n):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(1.5, 2))
    b = numpyro.sample("b", dist.Normal(0, 2))
    sd = numpyro.sample("sd", dist.HalfNormal(1).expand([2]).to_event(1))
    L = numpyro.sample("L", dist.LKJCholesky(2, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    z = numpyro.sample("z", dist.Normal(0, 1).expand([n, 2]).to_event(2))
    c = z @ (sd[:, None] * L).T
    u = c - c.mean(axis=0)
    numpyro.deterministic("u0", u[:, 0])
    numpyro.deterministic("u1", u[:, 1])
    numpyro.deterministic("sd0", sd[0])
    numpyro.deterministic("sd1", sd[1])
    numpyro.deterministic("rho", L[1, 0])
    numpyro.sample(
        "y", dist.Normal(a + b * floor + u[county, 0] + u[county, 1] * floor, sigma), obs=y
    )


def _crossed_effects():
    import numpyro
    import numpyro.distributions as dist

    alpha = numpyro.sample("alpha", dist.Normal(0, 2))
    beta = numpyro.sample("beta", dist.Normal(0, 1))
    sa = numpyro.sample("sa", dist.HalfNormal(1))
    sb = numpyro.sample("sb", dist.HalfNormal(1))
    return alpha, beta, _deviations("ua", 8, sa), _deviations("ub", 6, sb)


def binomial_crossed_model(k, n, x, a, b):
    import numpyro
    import numpyro.distributions as dist

    alpha, beta, ua, ub = _crossed_effects()
    numpyro.sample("k", dist.Binomial(n, logits=alpha + beta * x + ua[a] + ub[b]), obs=k)


def poisson_crossed_model(c, t, x, a, b):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    alpha, beta, ua, ub = _crossed_effects()
    numpyro.sample("c", dist.Poisson(t * jnp.exp(alpha + beta * x + ua[a] + ub[b])), obs=c)


def one_factor_model(X, level, n_levels, priors, y, n=None, log_t=None):
    """logit or log link: eta = X beta + u[level] (+ log t), u zero-sum, beta_i ~ N(priors[i]);
    binomial when ``n`` is given, else poisson with offset ``log_t``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    beta = [numpyro.sample(f"b{i}", dist.Normal(m, s)) for i, (m, s) in enumerate(priors)]
    sd = numpyro.sample("sd", dist.HalfNormal(1))
    eta = sum(X[:, i] * b for i, b in enumerate(beta)) + _deviations("u", n_levels, sd)[level]
    if n is not None:
        numpyro.sample("y", dist.Binomial(n, logits=eta), obs=y)
    else:
        numpyro.sample("y", dist.Poisson(jnp.exp(eta + log_t)), obs=y)


def _one_factor_args(frame, level, columns, priors, y, n=None, t=None):
    codes, levels = pd.factorize(frame[level], sort=True)
    X = np.column_stack([np.ones(len(frame))] + [c(frame) for c in columns])
    out = dict(X=X, level=codes, n_levels=len(levels), priors=priors, y=frame[y].to_numpy())
    if n is not None:
        out["n"] = frame[n].to_numpy()
    if t is not None:
        out["log_t"] = np.log(frame[t].to_numpy())
    return out


def _one_factor_sites(names, term):
    sites = {name: f"b{i}" for i, name in enumerate(names)}
    return {**sites, f"{term}_sigma": "sd", term: "u"}


def _radon_args():
    df = radon_data()
    codes, levels = pd.factorize(df["county"], sort=True)
    floor = df["floor"].to_numpy(float)
    return dict(y=df["log_radon"].to_numpy(), floor=floor, county=codes, n=len(levels))


def _crossed_args(frame: pd.DataFrame, outcome: dict[str, str]):
    args = {key: frame[column].to_numpy() for key, column in outcome.items()}
    return {
        **args,
        "x": frame["x"].to_numpy(),
        "a": frame["a"].to_numpy(),
        "b": frame["b"].to_numpy(),
    }


# what each reference stores: poolwise's summary row -> the numpyro site (``site#index``)
MODELS = {
    "radon": (
        radon_model,
        _radon_args,
        7,
        {
            "Intercept": "a",
            "floor": "b",
            "1|county_sigma": "tau",
            "sigma": "sigma",
            "1|county": "u",
        },
    ),
    "radon_slopes": (
        radon_slopes_model,
        _radon_args,
        10,
        {
            "Intercept": "a",
            "floor": "b",
            "1|county_sigma": "sd0",
            "floor|county_sigma": "sd1",
            "1 + floor|county_corr": "rho",
            "sigma": "sigma",
            "1|county": "u0",
            "floor|county": "u1",
        },
    ),
    "binomial_slopes": (
        binomial_slopes_model,
        lambda: {
            **{c: binomial_slopes_data()[c].to_numpy() for c in ("k", "n", "x", "g")},
            "levels": 25,
        },
        14,
        {
            "Intercept": "a",
            "x": "b",
            "1|g_sigma": "sd0",
            "x|g_sigma": "sd1",
            "1 + x|g_corr": "rho",
            "1|g": "u0",
            "x|g": "u1",
        },
    ),
    "binomial_crossed": (
        binomial_crossed_model,
        lambda: _crossed_args(binomial_crossed_data(), {"k": "k", "n": "n"}),
        8,
        {
            "Intercept": "alpha",
            "x": "beta",
            "1|a_sigma": "sa",
            "1|b_sigma": "sb",
            "1|a": "ua",
            "1|b": "ub",
        },
    ),
    "poisson_crossed": (
        poisson_crossed_model,
        lambda: _crossed_args(poisson_crossed_data(), {"c": "c", "t": "t"}),
        9,
        {"Intercept": "alpha", "x": "beta", "1|a_sigma": "sa", "1|b_sigma": "sb", "1|a": "ua"},
    ),
    "aghq_surgical": (
        one_factor_model,
        lambda: _one_factor_args(
            surgical_data(), "hospital", [], [(-2.5, 2)], "r_deaths", n="n_operations"
        ),
        10,
        _one_factor_sites(["Intercept"], "1|hospital"),
    ),
    "aghq_seeds": (
        one_factor_model,
        lambda: _one_factor_args(
            seeds_data(),
            "plate",
            [
                lambda f: f["x1_seed_type"].to_numpy(float),
                lambda f: f["x2_root_extract"].to_numpy(float),
                lambda f: (f["x1_seed_type"] * f["x2_root_extract"]).to_numpy(float),
            ],
            [(0, 2)] * 4,
            "r_germinated",
            n="n_seeds",
        ),
        11,
        _one_factor_sites(
            ["Intercept", "x1_seed_type", "x2_root_extract", "x1_seed_type:x2_root_extract"],
            "1|plate",
        ),
    ),
    "aghq_bernoulli_small": (
        one_factor_model,
        lambda: _one_factor_args(
            bernoulli_small_data().assign(n=1),
            "g",
            [lambda f: f["x"].to_numpy(float)],
            [(0, 2), (0, 1)],
            "y",
            n="n",
        ),
        12,
        _one_factor_sites(["Intercept", "x"], "1|g"),
    ),
    "aghq_poisson_one": (
        one_factor_model,
        lambda: _one_factor_args(
            poisson_one_data(),
            "g",
            [lambda f: f["x"].to_numpy(float)],
            [(0, 2), (0, 1)],
            "c",
            t="t",
        ),
        13,
        _one_factor_sites(["Intercept", "x"], "1|g"),
    ),
}


# ------------------------------------------------------------------------------------ summaries
def summarise(draws: np.ndarray) -> dict[str, float]:
    """Mean, sd, MC error of the mean, bulk ESS, ESS of the squared deviations and kurtosis of
    one scalar's draws (chain, draw)."""
    from arviz_stats.base import array_stats

    ess = float(array_stats.ess(draws, method="bulk"))
    square = (draws - draws.mean()) ** 2
    return {
        "mean": float(draws.mean()),
        "sd": float(draws.std()),
        "mcse_mean": float(draws.std() / np.sqrt(ess)),
        "ess_bulk": ess,
        "ess_square": float(array_stats.ess(square, method="mean")),
        "kurtosis": float(((draws - draws.mean()) ** 4).mean() / draws.var() ** 2),
    }


def run(name: str, samples: int, warmup: int, target_accept: float, write: bool) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    model, args, seed, sites = MODELS[name]
    start = time.perf_counter()
    with jax.enable_x64(True):
        mcmc = MCMC(
            NUTS(model, target_accept_prob=target_accept),
            num_warmup=warmup,
            num_samples=samples,
            num_chains=NUM_CHAINS,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",), **args())
        draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    parameters = {}
    for row, site in sites.items():
        x = draws[site]
        if x.ndim == 2:
            parameters[row] = summarise(x)
        else:
            parameters[row] = [summarise(x[..., j]) for j in range(x.shape[-1])]
    result = {
        "model": name,
        "settings": {
            "num_chains": NUM_CHAINS,
            "num_warmup": warmup,
            "num_samples_per_chain": samples,
            "seed": seed,
            "target_accept_prob": target_accept,
            "num_divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
            "wall_time_s": round(time.perf_counter() - start, 1),
        },
        "parameters": parameters,
    }
    print(f"{name}: {result['settings']}", flush=True)
    if write:
        (HERE / f"glmm_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--samples", type=int, default=NUM_SAMPLES, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=NUM_WARMUP)
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument("--dry", action="store_true", help="print summaries, write no JSON")
    args = parser.parse_args()
    for name in args.models or list(MODELS):
        run(name, args.samples, args.warmup, args.target_accept, write=not args.dry)


if __name__ == "__main__":
    main()
