"""Cross-check the NUTS reference JSONs against grid quadrature of the hyperparameters.

In every model the group effects theta_j integrate out in closed form, so the marginal posterior
of the (two or three) hyperparameters is computed on a dense grid and its means, sds and 3% / 97%
quantiles are printed next to the NUTS values stored in ``<model>.json``. The unpooled
fifty-schools model (no hyperparameters other than sigma) is not covered.

Run with ``python tests/reference/check_quadrature.py`` (a few seconds, no sampling).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import betaln, gammaln

HERE = Path(__file__).resolve().parent
SHARED_DATA = Path("/work/shared/data")


def grid_summary(logp: np.ndarray, quantities: dict[str, np.ndarray]) -> dict[str, dict]:
    w = np.exp(logp - logp.max())
    w /= w.sum()
    out = {}
    for name, value in quantities.items():
        v = np.broadcast_to(value, w.shape).ravel()
        order = np.argsort(v)
        cdf = np.cumsum(w.ravel()[order])
        mean = float(np.sum(w.ravel() * v))
        out[name] = {
            "mean": mean,
            "sd": float(np.sqrt(np.sum(w.ravel() * (v - mean) ** 2))),
            "q03": float(v[order][np.searchsorted(cdf, 0.03)]),
            "q97": float(v[order][np.searchsorted(cdf, 0.97)]),
        }
    return out


def fifty_schools_partial() -> dict[str, dict]:
    df = pd.read_csv(HERE / "fifty_schools.csv")
    g = df.groupby("school")["score"]
    n = g.size().to_numpy(float)
    ybar = g.mean().to_numpy()
    m2 = g.apply(lambda s: float(np.sum((s - s.mean()) ** 2))).to_numpy()
    mu = np.linspace(60.5, 65.0, 181)[:, None, None, None]
    tau = np.linspace(1e-4, 4.0, 241)[None, :, None, None]
    sigma = np.linspace(9.3, 10.9, 97)[None, None, :, None]
    loglik = (
        -(n - 1) / 2 * np.log(2 * np.pi * sigma**2)
        - 0.5 * np.log(n)
        - m2 / (2 * sigma**2)
        + stats.norm.logpdf(ybar, mu, np.sqrt(tau**2 + sigma**2 / n))
    ).sum(-1)
    mu, tau, sigma = mu[..., 0], tau[..., 0], sigma[..., 0]
    logp = stats.norm.logpdf(mu, 50, 10) - tau - sigma + loglik
    return grid_summary(logp, {"mu": mu, "tau": tau, "sigma": sigma})


def eight_schools() -> dict[str, dict]:
    df = pd.read_csv(SHARED_DATA / "eight_schools.csv")
    y, s = df["y"].to_numpy(float), df["sigma"].to_numpy(float)
    mu = np.linspace(-25, 35, 601)[:, None, None]
    tau = np.linspace(0, 200, 20_001)[None, :, None]
    loglik = stats.norm.logpdf(y, mu, np.sqrt(tau**2 + s**2)).sum(-1)
    mu, tau = mu[..., 0], tau[..., 0]
    logp = stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5) + loglik
    return grid_summary(logp, {"mu": mu, "tau": tau})


def pumps() -> dict[str, dict]:
    df = pd.read_csv(SHARED_DATA / "pumps.csv")
    x, t = df["x_failures"].to_numpy(float), df["t_thousand_hours"].to_numpy(float)
    log_a = np.linspace(-4, 2, 1201)[:, None, None]
    # beta is truncated at e^-9: mu = alpha / beta has a heavy tail (see the notes in pumps.json)
    log_b = np.linspace(-9, 3, 1441)[None, :, None]
    a, b = np.exp(log_a), np.exp(log_b)
    # negative-binomial marginal of x_j after integrating theta_j ~ Gamma(a, b)
    loglik = (gammaln(x + a) - gammaln(a) + a * np.log(b / (b + t)) + x * np.log(t / (b + t))).sum(
        -1
    )
    log_a, log_b, a, b = log_a[..., 0], log_b[..., 0], a[..., 0], b[..., 0]
    # Exponential(1) on a, Gamma(0.1, 1) on b, times the Jacobians a, b of the log grid
    logp = (-a + log_a) + (0.1 * log_b - b) + loglik
    return grid_summary(logp, {"alpha": a, "beta": b, "mu": a / b})


def rats() -> dict[str, dict]:
    df = pd.read_csv(SHARED_DATA / "rat_tumors.csv")
    y, n = df["y"].to_numpy(float), df["n"].to_numpy(float)
    # (a, b) on a log grid; kappa = a + b is truncated at e^9 (see the notes in rats.json)
    log_a = np.linspace(-2, 7, 901)[:, None]
    log_b = np.linspace(0, 9, 901)[None, :]
    a, b = np.exp(log_a), np.exp(log_b)
    loglik = sum(betaln(a + yi, b + ni - yi) - betaln(a, b) for yi, ni in zip(y, n, strict=True))
    logp = -2.5 * np.log(a + b) + log_a + log_b + loglik
    return grid_summary(logp, {"a": a, "b": b, "phi": a / (a + b), "kappa": a + b})


CHECKS = {
    "fifty_schools_partial": fifty_schools_partial,
    "eight_schools": eight_schools,
    "pumps": pumps,
    "rats": rats,
}


def main() -> None:
    print(f"{'model':22} {'param':6} {'stat':5} {'quadrature':>12} {'nuts':>12} {'diff/mcse':>10}")
    for model, check in CHECKS.items():
        ref = json.loads((HERE / f"{model}.json").read_text())
        stored = {**ref["parameters"], **ref.get("derived", {})}
        for param, quad in check().items():
            nuts = stored[param]
            for stat in ("mean", "sd", "q03", "q97"):
                z = (nuts[stat] - quad[stat]) / nuts["mcse_mean"] if stat == "mean" else np.nan
                print(
                    f"{model:22} {param:6} {stat:5} {quad[stat]:12.5g} {nuts[stat]:12.5g} {z:10.2f}"
                )


if __name__ == "__main__":
    main()
