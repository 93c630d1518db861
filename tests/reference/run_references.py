"""Long-run NUTS reference posteriors, written with numpyro directly (never with poolwise).

Each model is fitted with 4 chains in float64 and summarised into ``<model>.json`` next to
this file: for every scalar parameter and every group effect ``theta[<label>]`` the posterior
mean, sd, Monte Carlo standard error of the mean, bulk ESS, rank-normalised split R-hat and
the 3% / 97% quantiles, plus the run settings (draws, seed, divergences, wall time).

Run all models:        python tests/reference/run_references.py
Run selected models:   python tests/reference/run_references.py eight_schools pumps
Quick smoke test:      python tests/reference/run_references.py --samples 1000 --warmup 500 --dry

The fifty-schools data are made by ``make_fifty_schools.py`` (run it first if the CSV is absent).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS

numpyro.enable_x64()

HERE = Path(__file__).resolve().parent
SHARED_DATA = Path("/work/shared/data")

NUM_CHAINS = 4
NUM_WARMUP = 2_000
NUM_SAMPLES = 100_000
CHAIN_METHOD = "vectorized"


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def normal_suffstat_loglik(theta, sigma, n, ybar, m2):
    """Exact sum over i of log N(y_i | theta_j, sigma), from per-group n, mean and M2."""
    var = sigma**2
    sse = m2 + n * (ybar - theta) ** 2
    return jnp.sum(-0.5 * n * jnp.log(2.0 * jnp.pi * var) - sse / (2.0 * var))


def fifty_schools_partial(n, ybar, m2):
    """mu ~ N(50, 10), tau ~ Exp(1), sigma ~ Exp(1), theta_j ~ N(mu, tau) (non-centred)."""
    mu = numpyro.sample("mu", dist.Normal(50.0, 10.0))
    tau = numpyro.sample("tau", dist.Exponential(1.0))
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    with numpyro.plate("school", n.shape[0]):
        z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
    theta = numpyro.deterministic("theta", mu + tau * z)
    numpyro.factor("loglik", normal_suffstat_loglik(theta, sigma, n, ybar, m2))


def fifty_schools_none(n, ybar, m2):
    """No pooling: theta_j ~ N(50, 10) independently, sigma ~ Exp(1)."""
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    with numpyro.plate("school", n.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(50.0, 10.0))
    numpyro.factor("loglik", normal_suffstat_loglik(theta, sigma, n, ybar, m2))


def eight_schools(y, sigma):
    """mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau) non-centred, y_j ~ N(theta_j, s_j)"""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * z)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def pumps(x, t):
    """BUGS pumps: alpha ~ Exp(1), beta ~ Gamma(0.1, 1), theta_j ~ Gamma(alpha, beta), Poisson."""
    alpha = numpyro.sample("alpha", dist.Exponential(1.0))
    beta = numpyro.sample("beta", dist.Gamma(0.1, 1.0))
    with numpyro.plate("pump", x.shape[0]):
        theta = numpyro.sample("theta", dist.Gamma(alpha, beta))
        numpyro.sample("x", dist.Poisson(theta * t), obs=x)
    numpyro.deterministic("mu", alpha / beta)
    numpyro.deterministic("kappa", alpha)


def log_beta(x, y):
    """log B(x, y) by gammaln (float64; faster under autodiff than jax's betaln)."""
    return gammaln(x) + gammaln(y) - gammaln(x + y)


def rats(y, n):
    """BDA3 rat tumours: p(a, b) ~ (a + b)^(-5/2), theta_j ~ Beta(a, b), y_j ~ Bin(n_j, theta_j).

    NUTS runs on the marginal posterior p(a, b | y), with theta integrated out (beta-binomial
    likelihood, binomial coefficients dropped); every draw of (a, b) is then completed by an
    exact draw theta_j ~ Beta(a + y_j, b + n_j - y_j) in ``rats_theta``. This is the same joint
    posterior as the centred model, without its funnel at large a + b. (log a, log b) get a flat
    improper base measure; the factor adds the prior density and the Jacobian a * b.
    """
    flat = dist.ImproperUniform(constraints.real, (), ())
    log_a = numpyro.sample("log_a", flat)
    log_b = numpyro.sample("log_b", flat)
    a = numpyro.deterministic("a", jnp.exp(log_a))
    b = numpyro.deterministic("b", jnp.exp(log_b))
    numpyro.factor("prior_ab", -2.5 * jnp.log(a + b) + log_a + log_b)
    numpyro.factor("loglik", jnp.sum(log_beta(a + y, b + n - y) - log_beta(a, b)))
    numpyro.deterministic("phi", a / (a + b))
    numpyro.deterministic("kappa", a + b)


def rats_theta(key, samples, y, n):
    """Exact conditional draws theta_j | a, b, y ~ Beta(a + y_j, b + n_j - y_j), one per draw.

    Drawn one chain at a time to keep the memory of jax's beta sampler small.
    """
    keys = jax.random.split(key, samples["a"].shape[0])
    draws = []
    for chain, chain_key in enumerate(keys):
        a = jnp.asarray(samples["a"][chain])[:, None]
        b = jnp.asarray(samples["b"][chain])[:, None]
        draws.append(np.asarray(jax.random.beta(chain_key, a + y, b + n - y)))
    return np.stack(draws)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def fifty_schools_data(path: Path) -> tuple[dict, list[str]]:
    df = pd.read_csv(path)
    groups = df.groupby("school", sort=False)["score"]
    n = groups.size().to_numpy(dtype=np.float64)
    ybar = groups.mean().to_numpy(dtype=np.float64)
    m2 = groups.apply(lambda s: float(np.sum((s.to_numpy() - s.mean()) ** 2))).to_numpy()
    labels = [str(s) for s in groups.size().index]
    return {"n": n, "ybar": ybar, "m2": m2}, labels


def eight_schools_data(path: Path) -> tuple[dict, list[str]]:
    df = pd.read_csv(path)
    data = {"y": df["y"].to_numpy(np.float64), "sigma": df["sigma"].to_numpy(np.float64)}
    return data, [str(s) for s in df["school"]]


def pumps_data(path: Path) -> tuple[dict, list[str]]:
    df = pd.read_csv(path)
    data = {
        "x": df["x_failures"].to_numpy(np.float64),
        "t": df["t_thousand_hours"].to_numpy(np.float64),
    }
    return data, [str(s) for s in df["pump"]]


def rats_data(path: Path) -> tuple[dict, list[str]]:
    df = pd.read_csv(path)
    data = {"y": df["y"].to_numpy(np.float64), "n": df["n"].to_numpy(np.float64)}
    return data, [str(s) for s in df["experiment"]]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    model: Callable
    load: Callable[[Path], tuple[dict, list[str]]]
    data_path: Path
    scalars: tuple[str, ...]
    seed: int
    parametrisation: str
    derived: tuple[str, ...] = ()
    target_accept: float = 0.9
    dense_mass: bool = False
    notes: str = ""
    # draws theta from its exact conditional, for models sampled with theta integrated out
    conditional_theta: Callable | None = None


SPECS: dict[str, Spec] = {
    "fifty_schools_partial": Spec(
        fifty_schools_partial,
        fifty_schools_data,
        HERE / "fifty_schools.csv",
        ("mu", "tau", "sigma"),
        seed=11,
        parametrisation="non-centred theta = mu + tau * z; likelihood via per-school (n, mean, M2)",
    ),
    "fifty_schools_none": Spec(
        fifty_schools_none,
        fifty_schools_data,
        HERE / "fifty_schools.csv",
        ("sigma",),
        seed=12,
        parametrisation="independent theta_j; likelihood via per-school (n, mean, M2)",
    ),
    "eight_schools": Spec(
        eight_schools,
        eight_schools_data,
        SHARED_DATA / "eight_schools.csv",
        ("mu", "tau"),
        seed=13,
        parametrisation="non-centred theta = mu + tau * z",
        target_accept=0.99,
    ),
    "pumps": Spec(
        pumps,
        pumps_data,
        SHARED_DATA / "pumps.csv",
        ("alpha", "beta"),
        seed=14,
        parametrisation="centred theta_j ~ Gamma(alpha, beta) (sampled on log scale)",
        derived=("mu", "kappa"),
        notes=(
            "mu = alpha / beta has, in theory, infinite posterior mean and variance: near "
            "beta = 0 the Gamma(0.1, 1) prior times the likelihood behaves like "
            "beta^(10 alpha - 0.9), and alpha has posterior mass (tiny) below 0.09. The sample "
            "mean of mu is stable in practice, but its sd is dominated by rare draws: compare mu "
            "by quantiles. alpha, beta and theta are unaffected."
        ),
    ),
    "rats": Spec(
        rats,
        rats_data,
        SHARED_DATA / "rat_tumors.csv",
        ("a", "b"),
        seed=15,
        parametrisation=(
            "NUTS on (log a, log b) with theta integrated out (beta-binomial); theta_j drawn "
            "exactly from Beta(a + y_j, b + n_j - y_j) for every draw"
        ),
        derived=("phi", "kappa"),
        dense_mass=True,
        conditional_theta=rats_theta,
        notes=(
            "Under p(a, b) ~ (a + b)^(-5/2) the posterior of kappa = a + b has a kappa^(-3/2) "
            "tail (the likelihood tends to a positive constant as kappa -> inf), so a, b and "
            "kappa have infinite posterior mean and variance in theory; the tail mass beyond "
            "kappa = 400 is only ~2e-7, so the finite-sample mean is stable in practice but the sd "
            "of a, b, kappa is not a well-defined target: compare those by quantiles. phi and "
            "theta are unaffected."
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def summarise(draws: np.ndarray) -> dict[str, float]:
    """Summary of one scalar quantity given draws of shape (chain, draw)."""
    flat = draws.reshape(-1)
    q03, q50, q97 = np.quantile(flat, [0.03, 0.5, 0.97])
    return {
        "mean": float(flat.mean()),
        "sd": float(flat.std(ddof=1)),
        "mcse_mean": float(arviz_stats.mcse(draws, method="mean")),
        "ess_bulk": float(arviz_stats.ess(draws, method="bulk")),
        "r_hat": float(arviz_stats.rhat(draws, method="rank")),
        "q03": float(q03),
        "q50": float(q50),
        "q97": float(q97),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(name: str, num_samples: int, num_warmup: int, write: bool) -> dict:
    spec = SPECS[name]
    data, labels = spec.load(spec.data_path)
    data = {k: jnp.asarray(v) for k, v in data.items()}

    kernel = NUTS(spec.model, target_accept_prob=spec.target_accept, dense_mass=spec.dense_mass)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=NUM_CHAINS,
        chain_method=CHAIN_METHOD,
        progress_bar=False,
    )
    start = time.perf_counter()
    key_mcmc, key_theta = jax.random.split(jax.random.PRNGKey(spec.seed))
    mcmc.run(key_mcmc, extra_fields=("diverging",), **data)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    if spec.conditional_theta is not None:
        samples["theta"] = np.asarray(spec.conditional_theta(key_theta, samples, **data))
    wall = time.perf_counter() - start
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())

    parameters = {p: summarise(samples[p]) for p in spec.scalars}
    theta = samples["theta"]
    parameters["theta"] = {lab: summarise(theta[..., j]) for j, lab in enumerate(labels)}
    derived = {p: summarise(samples[p]) for p in spec.derived}

    every = [*(parameters[p] for p in spec.scalars), *parameters["theta"].values()]
    settings = {
        "sampler": "numpyro NUTS",
        "numpyro_version": numpyro.__version__,
        "jax_version": jax.__version__,
        "float64": True,
        "num_chains": NUM_CHAINS,
        "num_warmup": num_warmup,
        "num_samples_per_chain": num_samples,
        "num_draws": NUM_CHAINS * num_samples,
        "thinning": 1,
        "chain_method": CHAIN_METHOD,
        "target_accept_prob": spec.target_accept,
        "max_tree_depth": 10,
        "dense_mass": spec.dense_mass,
        "seed": spec.seed,
        "parametrisation": spec.parametrisation,
        "num_divergences": divergences,
        "max_r_hat": max(s["r_hat"] for s in every),
        "min_ess_bulk": min(s["ess_bulk"] for s in every),
        "wall_time_s": round(wall, 1),
        "data_file": spec.data_path.name,
        "data_sha256": sha256(spec.data_path),
        "summary_notes": (
            "sd uses ddof=1; q03/q50/q97 are np.quantile (linear) of the pooled draws; mcse_mean, "
            "ess_bulk and r_hat (rank-normalised split R-hat) from arviz_stats"
        ),
    }
    if spec.notes:
        settings["notes"] = spec.notes
    result = {"model": name, "settings": settings, "parameters": parameters}
    if derived:
        result["derived"] = derived

    scal = ", ".join(
        f"{p}={parameters[p]['mean']:.4g} (sd {parameters[p]['sd']:.3g})" for p in spec.scalars
    )
    print(
        f"{name}: {wall:.1f}s, {divergences} divergences, max r_hat {settings['max_r_hat']:.4f}, "
        f"min ess_bulk {settings['min_ess_bulk']:.0f}; {scal}",
        flush=True,
    )
    if write:
        out = HERE / f"{name}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(SPECS)} (default: all)")
    parser.add_argument("--samples", type=int, default=NUM_SAMPLES, help="draws per chain")
    parser.add_argument("--warmup", type=int, default=NUM_WARMUP)
    parser.add_argument("--dry", action="store_true", help="print summaries, write no JSON")
    args = parser.parse_args()
    unknown = set(args.models) - set(SPECS)
    if unknown:
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    for name in args.models or list(SPECS):
        run(name, args.samples, args.warmup, write=not args.dry)


if __name__ == "__main__":
    main()
