"""Data replicated from a fitted regression: the outcome's moments given each draw's linear
predictor (closed forms), the layout the fit reads, new rows and new levels."""

import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.glmm.cells import reduce_cells
from poolwise.glmm.formula import parse_formula

# z-scores of sums of many independent draws: a failure rate near 6e-5 per check
Z = 4.0
# the Laplace engine: draws from its mixture in a second, where NUTS would compile for each model
SHORT = {"seed": 2, "draws": 800, "method": "laplace"}


def _fit(formula, data, **options):
    with warnings.catch_warnings():  # a sd at its boundary warns
        warnings.simplefilter("ignore", poolwise.PoolwiseWarning)
        return poolwise.fit(formula, data=data, **{**SHORT, **options})


def _expit(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def binomial():
    df = pd.DataFrame(
        {
            "g": list("aabbcc"),
            "x": [0, 1] * 3,
            "opens": [30, 40, 20, 28, 35, 45],
            "sent": [100, 100, 80, 80, 120, 120],
        }
    )
    return _fit("p(opens, sent) ~ 1 + x + (1|g)", df)


@pytest.fixture(scope="module")
def normal():
    rng = np.random.default_rng(3)
    g = rng.integers(0, 4, 60)
    x = rng.integers(0, 3, 60)
    y = 1 + 0.5 * x + rng.normal(0, 0.3, 4)[g] + rng.normal(size=60)
    return _fit("y ~ 1 + I(x ** 2) + (1|g)", pd.DataFrame({"g": g, "x": x, "y": y}))


@pytest.fixture(scope="module")
def poisson():
    df = pd.DataFrame(
        {"g": list("aabbccdd"), "x": [0, 1] * 4, "c": [3, 9, 5, 12, 2, 4, 7, 15]}
    ).assign(t=[1.0, 2.0, 1.5, 2.5, 0.5, 1.0, 2.0, 3.0])
    return _fit("c ~ 1 + x + (1|g)", df, exposure="t")


def test_binomial_cells_are_replicated_at_their_trials(binomial):
    """All posterior draws once each: theta is expit of each draw's linear predictor, and the
    successes have the binomial's mean and variance given it."""
    total = binomial.draws["x"].size
    rep = binomial.simulate(draws=total, seed=4)
    assert list(rep.columns) == ["draw", "g", "x", "opens", "sent", "theta"]
    assert rep["opens"].dtype == np.int64
    theta = _expit(binomial.linear_predictor(np.arange(total)))
    np.testing.assert_allclose(rep["theta"].to_numpy(), theta.reshape(-1), rtol=1e-12)
    n = np.tile([100, 100, 80, 80, 120, 120], total)
    np.testing.assert_array_equal(rep["sent"].to_numpy(), n)
    k, p = rep["opens"].to_numpy(), rep["theta"].to_numpy()
    var = n * p * (1 - p)
    assert abs((k - n * p).sum()) / np.sqrt(var.sum()) < Z
    # E[(k - np)^2] = np(1-p); the sd of (k - np)^2 is below sqrt(3) np(1-p) + 1 per cell
    sq = (k - n * p) ** 2
    assert abs((sq - var).sum()) < Z * np.sqrt(((np.sqrt(3) * var + 1) ** 2).sum())


def test_replicates_are_seeded_and_refused_bad_draws(binomial):
    a, b = binomial.simulate(draws=3, seed=1), binomial.simulate(draws=3, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(binomial.simulate(draws=3, seed=2))
    with pytest.raises(ValueError, match="draws: the fit holds 800 posterior draws"):
        binomial.simulate(draws=801)
    with pytest.raises(TypeError, match="unseen applies to new rows"):
        binomial.simulate(unseen="draw")


def test_normal_rows_are_replicated_one_per_row_with_the_residual_sd(normal):
    total = normal.draws["sigma"].size
    rep = normal.simulate(draws=total, seed=5)
    assert list(rep.columns) == ["draw", "g", "x", "y", "theta"]
    assert len(rep) == 60 * total
    # each replicate has the rows of the data: the same cells, of the same sizes
    spec = parse_formula("y ~ 1 + I(x ** 2) + (1|g)")
    cells = reduce_cells(rep[rep["draw"] == 7], spec)
    np.testing.assert_array_equal(cells.stats()["n"], normal.observed["n"])
    # y given the draw is N(theta, sigma^2): standardized residuals have mean 0 and variance 1
    sigma = np.repeat(normal.draws["sigma"].reshape(-1), 60)
    z = ((rep["y"] - rep["theta"]) / sigma).to_numpy()
    assert abs(z.mean()) * np.sqrt(len(z)) < Z
    assert abs((z**2).mean() - 1) / np.sqrt(2 / len(z)) < Z
    # theta: the cell's linear predictor at that draw
    eta = normal.linear_predictor(np.arange(total))
    cell = np.repeat(np.arange(normal.design.n_cells), normal.observed["n"].astype(int))
    np.testing.assert_allclose(rep["theta"], eta[:, cell].reshape(-1), rtol=1e-12)


def test_poisson_cells_keep_their_exposure(poisson):
    total = poisson.draws["x"].size
    rep = poisson.simulate(draws=total, seed=6)
    assert list(rep.columns) == ["draw", "g", "x", "c", "t", "theta"]
    t = rep["t"].to_numpy()
    np.testing.assert_array_equal(t[:8], [1.0, 2.0, 1.5, 2.5, 0.5, 1.0, 2.0, 3.0])
    # theta is the rate per unit of exposure: exp of the linear predictor less the offset
    eta = poisson.linear_predictor(np.arange(total)) - np.log(t[:8])
    np.testing.assert_allclose(rep["theta"], np.exp(eta).reshape(-1), rtol=1e-12)
    mu = t * rep["theta"].to_numpy()
    c = rep["c"].to_numpy()
    assert abs((c - mu).sum()) / np.sqrt(mu.sum()) < Z
    sq = (c - mu) ** 2  # var of (c - mu)^2 for a Poisson: mu + 2 mu^2
    assert abs((sq - mu).sum()) / np.sqrt((mu + 2 * mu**2).sum()) < Z


def test_bernoulli_rows_and_poisson_rows_without_exposure():
    rng = np.random.default_rng(9)
    df = pd.DataFrame({"g": rng.integers(0, 3, 90), "x": rng.integers(0, 2, 90)})
    df["won"] = rng.random(90) < 0.4
    df["c"] = rng.poisson(2.0, 90)
    fit = _fit("won ~ 1 + x + (1|g)", df, family="bernoulli")
    rep = fit.simulate(draws=800, seed=1)
    assert len(rep) == 90 * 800 and set(rep["won"].unique()) <= {0, 1}
    p = rep["theta"].to_numpy()
    assert abs((rep["won"] - p).sum()) / np.sqrt((p * (1 - p)).sum()) < Z
    fit = _fit("c ~ 1 + x + (1|g)", df, family="poisson")
    rep = fit.simulate(draws=800, seed=1)
    assert list(rep.columns) == ["draw", "g", "x", "c", "theta"] and len(rep) == 90 * 800
    mu = rep["theta"].to_numpy()  # one row of exposure 1 each
    assert abs((rep["c"] - mu).sum()) / np.sqrt(mu.sum()) < Z


def test_new_rows_and_new_levels(binomial):
    """A new level's effect is drawn from N(0, sd) at each draw; a seen level keeps its
    effect; with unseen='population' a new level gets no deviation."""
    total = binomial.draws["x"].size
    new = pd.DataFrame({"g": ["z", "a"], "x": [1, 0], "sent": [50, 20], "opens": [0, 0]})
    rep = binomial.simulate(draws=total, seed=3, data=new, unseen="draw")
    assert list(rep.columns) == ["draw", "g", "x", "opens", "sent", "theta"]
    d = binomial.draws
    common = (d["Intercept"] + d["x"]).reshape(-1)  # x = 1
    logit = np.log(rep["theta"] / (1 - rep["theta"])).to_numpy().reshape(total, 2)
    # the seen level: its own effect at each draw
    seen = d["Intercept"].reshape(-1) + d["1|g"].reshape(total, 3)[:, 0]
    np.testing.assert_allclose(logit[:, 1], seen, rtol=1e-9, atol=1e-9)
    # the new level: (logit - common part) / sd is standard normal
    z = (logit[:, 0] - common) / d["1|g_sigma"].reshape(-1)
    assert abs(z.mean()) * np.sqrt(total) < Z
    assert abs((z**2).mean() - 1) / np.sqrt(2 / total) < Z
    k, n, p = rep["opens"].to_numpy(), rep["sent"].to_numpy(), rep["theta"].to_numpy()
    assert abs((k - n * p).sum()) / np.sqrt((n * p * (1 - p)).sum()) < Z
    pop = binomial.simulate(draws=total, seed=3, data=new, unseen="population")
    np.testing.assert_allclose(
        np.log(pop["theta"] / (1 - pop["theta"])).to_numpy()[::2], common, rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize(
    ("new", "options", "error", "match"),
    [
        ({"g": ["z"], "x": [1], "sent": [5]}, {}, ValueError, r"level\(s\) 'z' of 'g' were not"),
        ({"g": ["a"], "x": [1]}, {}, ValueError, r"no column 'sent' \(trials\) in the new data"),
        ({"g": ["a"], "sent": [5]}, {}, ValueError, r"no column 'x' in the new data"),
        ({"g": ["a"], "x": [1], "sent": [2.5]}, {}, ValueError, "must hold whole numbers >= 0"),
        ({"g": ["a"], "x": [1], "sent": [5], "theta": [0]}, {}, ValueError, "column 'theta'"),
        ({"g": ["a"], "x": [1], "sent": [5]}, {"unseen": "new"}, ValueError, "unseen must be"),
    ],
)
def test_bad_new_rows_are_refused_by_name(binomial, new, options, error, match):
    with pytest.raises(error, match=match):
        binomial.simulate(data=pd.DataFrame(new), **options)
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        binomial.simulate(data={"g": ["a"]})


def test_slopes_of_expressions_predict_and_simulate_on_new_rows():
    """(I(x ** 2)||g) (independent intercept and slope, for the Laplace engine): the slope is
    the expression's value on the new rows."""
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"g": rng.integers(0, 4, 120), "x": rng.integers(-2, 3, 120)})
    df["y"] = 1 + 0.2 * df["x"] ** 2 + rng.normal(size=120)
    fit = _fit("y ~ np.log(x + 10) + (I(x ** 2)||g)", df)
    new = pd.DataFrame({"g": [0, 3], "x": [2.0, -1.0]})
    d = fit.draws
    eta = (
        d["Intercept"].reshape(-1, 1)
        + d["np.log(x + 10)"].reshape(-1, 1) * np.log(new["x"].to_numpy() + 10)
        + d["1|g"].reshape(-1, 4)[:, [0, 3]]
        + d["I(x ** 2)|g"].reshape(-1, 4)[:, [0, 3]] * new["x"].to_numpy() ** 2
    )
    np.testing.assert_allclose(fit.predict(new)["mean"], eta.mean(axis=0), rtol=1e-12)
    rep = fit.simulate(draws=eta.shape[0], data=new)
    np.testing.assert_allclose(rep["theta"], eta.reshape(-1), rtol=1e-12)
    with pytest.raises(ValueError, match=r"predict: no column 'x' in the new data"):
        fit.predict(pd.DataFrame({"g": [0]}))


def test_a_nuts_fit_replicates_from_the_draws_of_all_its_chains():
    """Draws by chain (4 chains of 500): the same layout and moments as the Laplace engine's."""
    df = pd.DataFrame(
        {"g": list("aabbcc") * 2, "x": [0, 1] * 6, "k": [3, 6, 2, 5, 4, 7] * 2, "n": 10}
    )
    fit = poolwise.fit("p(k, n) ~ x + (1|g)", data=df, priors={"1|g_sigma": 0.5}, seed=1,
                       draws=2000, progress=False)  # fmt: skip
    assert fit.method == "nuts" and fit.draws["x"].shape == (4, 500)
    rep = fit.simulate(draws=2000, seed=2)
    theta = _expit(fit.linear_predictor(np.arange(2000)))
    np.testing.assert_allclose(rep["theta"], theta.reshape(-1), rtol=1e-12)
    k, n, p = rep["k"].to_numpy(), rep["n"].to_numpy(), rep["theta"].to_numpy()
    np.testing.assert_array_equal(n[:6], [20] * 6)  # two rows of 10 trials in each cell
    assert abs((k - n * p).sum()) / np.sqrt((n * p * (1 - p)).sum()) < Z
