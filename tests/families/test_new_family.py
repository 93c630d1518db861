"""A family defined here alone plugs into everything: geometric counts with a beta population.

Each row counts the failures before a first success at the group's rate theta_j, so a group of
n_j rows with F_j failures in all has likelihood theta^n (1 - theta)^F, and under
theta_j ~ Beta(a, b) the posterior is Beta(a + n_j, b + F_j) in closed form. Its log marginal
likelihood is the binomial one of n_j successes in n_j + F_j trials, so with the same priors the
two families' partial-pooling posteriors are the same: the binomial fit is the reference.
"""

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats as sps

import poolwise
from poolwise.check import CalibrationSpec, calibration
from poolwise.families import FAMILIES, Family, Layout, register_family
from poolwise.families.special import log_rising, log_rising_jax
from poolwise.priors import Beta, Gamma, Lomax


class Geometric(Family):
    """failures_ji ~ Geometric(theta_j) (failures before the first success), theta_j ~ Beta(a, b)."""

    name = "geometric"
    description = "geometric failures before a success, beta population"
    supports: ClassVar = {"phi": (0.0, 1.0), "kappa": (0.0, np.inf), "a": (0.0, np.inf),
                          "b": (0.0, np.inf)}  # fmt: skip
    parametrizations: ClassVar = (("phi", "kappa"), ("a", "b"))
    location = "phi"
    theta_support = (0.0, 1.0)
    size_label = "rows"
    raw_label = "rows / (rows + failures)"
    size_meaning = "rows per group (positive integers)"
    theta_kind = "beta"
    statistics = ("rows", "failures")
    simulation_priors: ClassVar = {"phi": Beta(8.0, 8.0), "kappa": Gamma(20.0, 2.0)}
    layouts = (Layout({"failures": "count"}, "sums"),)
    size_stat, data_stat, integer_sizes = "rows", "failures", True
    spread, spread_words = "kappa", "concentration (prior strength)"
    symbols = ("Each row counts the failures before a success at its group's rate θ<sub>j</sub>.",
               ("f<sub>ij</sub> ~ Geometric(θ<sub>j</sub>)", "θ<sub>j</sub> ~ Beta(a, b)"))  # fmt: skip

    def complete(self, params):
        p = dict(params)
        if "a" not in p and "kappa" in p:
            p.update(a=p["phi"] * p["kappa"], b=(1.0 - p["phi"]) * p["kappa"])
        if "a" in p:
            p.update(kappa=p["a"] + p["b"], phi=p["a"] / (p["a"] + p["b"]))
        return p

    def log_marginal(self, params, stats, pooled):
        n, f = stats["rows"], stats["failures"]
        if pooled:
            return n * np.log(params["phi"]) + f * np.log1p(-params["phi"])
        a, b = params["a"], params["b"]
        return log_rising(a, n) + log_rising(b, f) - log_rising(a + b, n + f)

    def log_marginal_sum_jax(self, params, stats):
        import jax.numpy as jnp

        n, f = stats
        a, b = params["a"], params["b"]
        return jnp.sum(log_rising_jax(a, n) + log_rising_jax(b, f) - log_rising_jax(a + b, n + f))

    def conditional_parameters(self, params, stats):
        return params["a"] + stats["rows"], params["b"] + stats["failures"]

    def conditional(self, params, stats):
        a1, b1 = self.conditional_parameters(params, stats)
        mean = a1 / (a1 + b1)
        kappa = params["a"] + params["b"]
        n = stats["rows"] + stats["failures"]
        return mean, mean * (1 - mean) / (a1 + b1 + 1), kappa / (kappa + n)

    def sample_conditional(self, params, stats, rng):
        a1, b1 = self.conditional_parameters(params, stats)
        return rng.beta(*np.broadcast_arrays(a1, b1))

    def sample_population(self, params, rng):
        return rng.beta(np.ravel(params["a"]), np.ravel(params["b"]))

    def sample_data(self, theta, size, rng, params):
        """The failures of ``size`` rows: a negative binomial count."""
        return rng.negative_binomial(np.asarray(size, dtype=np.int64), theta)

    def simulate_rows(self, theta, sizes, rng, params):
        idx = np.repeat(np.arange(len(sizes)), sizes)
        return idx, {"failures": rng.geometric(theta[idx]) - 1}

    def reduce_rows(self, group, columns):
        rows = np.bincount(group)
        return {
            "rows": rows,
            "failures": np.bincount(group, weights=columns["failures"]).astype(int),
        }

    def default_priors(self, stats):
        return {"phi": Beta(1.0, 1.0), "kappa": Lomax(0.5, 1.0)}

    def initial(self, stats):
        n, f = stats["rows"].sum(), stats["failures"].sum()
        phi = min(max((n + 0.5) / (n + f + 1.0), 1e-3), 1 - 1e-3)
        p = self.complete({"phi": np.array(phi), "kappa": np.array(10.0)})
        return {k: float(v) for k, v in p.items()}

    def unpooled(self, fixed, priors, stats):
        # every group alone under the fixed population, or under a uniform Beta(1, 1)
        given = fixed if len(fixed) == 2 else {"a": 1.0, "b": 1.0}
        return self.complete({k: np.array([[v]]) for k, v in given.items()})

    def raw(self, stats):
        return stats["rows"] / (stats["rows"] + stats["failures"])

    def size(self, stats):
        return stats["rows"].astype(float)


PRIORS = {"phi": poolwise.Beta(2, 2), "kappa": poolwise.Gamma(2, 0.1)}


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_family(Geometric)
    yield
    del FAMILIES["geometric"]


def rows():
    """Six groups of geometric rows, and the same data as binomial totals."""
    rng = np.random.default_rng(4)
    sizes, rates = [3, 5, 8, 12, 20, 40], [0.2, 0.35, 0.3, 0.5, 0.25, 0.4]
    df = pd.DataFrame(
        {
            "g": np.repeat(list("abcdef"), sizes),
            "f": np.concatenate(
                [rng.geometric(p, n) - 1 for p, n in zip(rates, sizes, strict=True)]
            ),
        }
    )
    totals = df.groupby("g")["f"].agg(["size", "sum"])
    binomial = pd.DataFrame(
        {"g": totals.index, "k": totals["size"], "n": totals["size"] + totals["sum"]}
    )
    return df, totals, binomial


@pytest.mark.parametrize("method", ["exact", "eb"])
def test_fixed_population_gives_the_closed_form_beta_posterior(method):
    df, totals, _ = rows()
    fit = poolwise.fit(df, group="g", failures="f", priors={"a": 2.0, "b": 3.0}, method=method)
    post = sps.beta(2.0 + totals["size"].to_numpy(), 3.0 + totals["sum"].to_numpy())
    np.testing.assert_allclose(fit.groups["mean"], post.mean(), rtol=1e-12)
    np.testing.assert_allclose(fit.groups["sd"], post.std(), rtol=1e-10)
    assert fit.groups["n"].tolist() == totals["size"].tolist()
    lo, hi = fit.groups["hdi_low"].to_numpy(), fit.groups["hdi_high"].to_numpy()
    np.testing.assert_allclose(post.cdf(hi) - post.cdf(lo), 0.94, atol=1e-8)


@pytest.mark.parametrize("method", ["exact", "eb"])
def test_partial_pooling_matches_the_binomial_family_on_the_same_likelihood(method):
    df, _, binomial = rows()
    priors = PRIORS
    fit = poolwise.fit(df, group="g", failures="f", priors=priors, method=method, seed=1)
    ref = poolwise.fit(binomial, group="g", successes="k", trials="n", priors=priors,
                       method=method, seed=1)  # fmt: skip
    for column in ("mean", "sd", "hdi_low", "hdi_high", "shrinkage"):
        np.testing.assert_allclose(fit.groups[column], ref.groups[column], rtol=1e-8)
    # eb's hyperparameter sds come from a finite-difference Hessian, whose rounding differs
    # with the order of the sums (the binomial family compacts equal counts first)
    np.testing.assert_allclose(
        fit.population, ref.population, rtol=1e-8 if method == "exact" else 1e-6
    )


def test_the_jax_log_marginal_that_nuts_samples_is_the_numpy_one():
    # (a NUTS run compiles for a minute: the engine itself is checked in tests/engines)
    import jax

    _, totals, _ = rows()
    stats = {"rows": totals["size"].to_numpy(), "failures": totals["sum"].to_numpy()}
    params = {"a": np.array([[2.5]]), "b": np.array([[4.0]])}
    fam = Geometric()
    with jax.enable_x64(True):
        value = fam.log_marginal_sum_jax(
            {k: float(v[0, 0]) for k, v in params.items()},
            tuple(stats[s].astype(float) for s in fam.statistics),
        )
    assert float(value) == pytest.approx(fam.log_marginal(params, stats, False).sum(), rel=1e-12)


def test_tables_plots_checks_and_report(tmp_path):
    df, _, _ = rows()
    fit = poolwise.fit(df, group="g", failures="f", priors=PRIORS, seed=2)
    assert fit.family.name == "geometric" and fit.n_rows == len(df)
    assert list(fit.population.index) == ["phi", "kappa", "a", "b"]
    assert fit.ranks()["p_best"].sum() == pytest.approx(1.0)
    for plot in (fit.plot_shrinkage, fit.plot_forest, fit.plot_estimates, fit.plot_population):
        assert isinstance(plot(), Figure)
    assert "rows" in fit.plot_shrinkage().axes[0].get_title()
    rep = fit.simulate(draws=3, seed=1)
    assert list(rep.columns) == ["draw", "g", "failures", "theta"] and len(rep) == 3 * len(df)
    ppc = fit.check(seed=0)
    observed = fit.groups["raw"].std(ddof=1)
    assert ppc.observed == pytest.approx(observed) and 0.01 < ppc.p_value < 0.99
    fit.report(tmp_path / "geometric.html")
    text = (tmp_path / "geometric.html").read_text()
    assert "Geometric(θ<sub>j</sub>)" in text and "geometric failures" in text


def test_simulate_and_calibration():
    df = poolwise.simulate("geometric", {"phi": 0.3, "kappa": 8}, [4, 6, 400], seed=5)
    assert list(df.columns) == ["group", "failures", "theta"] and len(df) == 410
    big = df[df["group"] == 2]
    # 400 geometric rows: their mean is (1 - theta) / theta within 4 standard errors
    theta = big["theta"].iloc[0]
    se = np.sqrt((1 - theta) / theta**2 / 400)
    assert abs(big["failures"].mean() - (1 - theta) / theta) < 4 * se
    cal = calibration(CalibrationSpec("geometric", (10,) * 6, draws=19), n_sims=60, seed=1)
    assert cal.ranks.shape == (60, 4) and cal.ranks.to_numpy().max() <= 19
    # the exact posterior of the model that made the data: ranks uniform
    assert cal.tests["ecdf_p"].min() > 0.001


def test_unknown_role_is_a_type_error_naming_it():
    df, _, _ = rows()
    with pytest.raises(TypeError, match="unknown keyword 'failure'"):
        poolwise.fit(df, group="g", failure="f")
    with pytest.raises(TypeError, match="unknown keyword 'succeses'"):
        poolwise.compare(df, group="g", succeses="f", trials="f")
