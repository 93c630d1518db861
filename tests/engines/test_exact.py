"""The exact engine against independent numerical integration of the same posteriors."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import poolwise
from poolwise.engines import exact
from poolwise.engines.base import Density

SCHOOLS = pd.read_csv(poolwise.example_path("eight_schools"))
RATS = pd.read_csv(poolwise.example_path("rat_tumors"))
PUMPS = pd.read_csv(poolwise.example_path("pumps"))
SCHOOL_PRIORS = {"mu": poolwise.Normal(0, 5), "tau": poolwise.HalfCauchy(5)}


def eight_schools_by_quadrature():
    """E[mu], E[tau], E[theta_A] with mu integrated in closed form and tau by adaptive quadrature."""
    y, s = SCHOOLS["y"].to_numpy(float), SCHOOLS["sigma"].to_numpy(float)

    def parts(tau):
        v = tau**2 + s**2
        precision = (1 / v).sum() + 1 / 25
        m = (y / v).sum() / precision
        log_density = (
            -0.5 * np.log(v).sum()
            - 0.5 * (y**2 / v).sum()
            + 0.5 * precision * m * m
            - 0.5 * np.log(precision)
            + stats.halfcauchy.logpdf(tau, scale=5)
        )
        # E[theta_A | tau, y] = E over mu | tau of the conditional mean
        b = s[0] ** 2 / (s[0] ** 2 + tau**2)
        theta_a = b * m + (1 - b) * y[0]
        return np.exp(log_density + 20), m, theta_a

    def expect(f):
        return integrate.quad(
            lambda t: f(t) * parts(t)[0], 0, np.inf, limit=400, epsabs=0, epsrel=1e-11
        )[0]

    z = expect(lambda t: 1.0)
    return (
        expect(lambda t: parts(t)[1]) / z,
        expect(lambda t: t) / z,
        expect(lambda t: parts(t)[2]) / z,
    )


def test_eight_schools_matches_quadrature():
    fit = poolwise.fit(SCHOOLS, group="school", y="y", se="sigma", priors=SCHOOL_PRIORS, seed=1)
    mu, tau, theta_a = eight_schools_by_quadrature()
    # quadrature error of the grid: seen 6e-5 on mu, 2e-5 on tau
    assert fit.population.loc["mu", "mean"] == pytest.approx(mu, abs=5e-4)
    assert fit.population.loc["tau", "mean"] == pytest.approx(tau, abs=5e-4)
    assert fit.groups.loc["A", "mean"] == pytest.approx(theta_a, abs=5e-4)
    assert fit.method == "exact"
    # the design note's sanity figure, from a plain grid: E[mu] = 4.397
    assert fit.population.loc["mu", "mean"] == pytest.approx(4.397, abs=1e-3)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x, axis=None)
    cum = np.cumsum(w.ravel()[order])
    return float(x.ravel()[order][np.searchsorted(cum, 0.5)])


def rats_by_brute_force():
    """Posterior medians of (a, b) under p(a, b) ∝ (a+b)^(-5/2) on a fine grid in
    (log(a/b), log(a+b)) (their means do not exist: a + b has a (a+b)^(-3/2) tail)."""
    y, n = RATS["y"].to_numpy(), RATS["n"].to_numpy()
    u = np.linspace(-2.6, -1.0, 801)[:, None]  # log(a/b)
    v = np.linspace(0.5, 6.5, 1201)[None, :]  # log(a+b)
    a = np.exp(u + v) / (1 + np.exp(u))
    b = np.exp(v) / (1 + np.exp(u))
    log_post = np.log(a) + np.log(b) - 2.5 * np.log(a + b)  # Jacobian a b of the (u, v) map
    for yi, ni in zip(y, n, strict=True):
        log_post = log_post + special.betaln(a + yi, b + ni - yi) - special.betaln(a, b)
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    return _weighted_median(np.broadcast_to(a, w.shape), w), _weighted_median(b + 0 * u, w)


def test_rat_tumours_bda3_prior_matches_brute_force_grid():
    priors = {"phi": poolwise.Uniform(0, 1), "kappa": poolwise.Power(-1.5)}
    fit = poolwise.fit(RATS, group="experiment", successes="y", trials="n", priors=priors, seed=0)
    a, b = rats_by_brute_force()
    # the grid's medians: its cells' width in a is ~2e-3 relative
    assert fit.population.loc["a", "median"] == pytest.approx(a, rel=3e-3)
    assert fit.population.loc["b", "median"] == pytest.approx(b, rel=3e-3)
    # BDA3 section 5.3 averages its bounded grid (alpha near 2.4, beta near 14.3): over the whole
    # range those means do not exist, and the table shows them as missing
    assert fit.population.loc[["a", "b"], ["mean", "sd"]].isna().all().all()


def test_pumps_match_the_bugs_results():
    priors = {"alpha": poolwise.Exponential(1), "beta": poolwise.Gamma(0.1, 1.0)}
    fit = poolwise.fit(
        PUMPS, group="pump", counts="x_failures", exposure="t_thousand_hours", priors=priors, seed=0
    )
    # brute force on a grid of (log alpha, log beta)
    c, e = PUMPS["x_failures"].to_numpy(), PUMPS["t_thousand_hours"].to_numpy()
    la = np.linspace(-4, 1.5, 1101)[:, None]
    lb = np.linspace(-5, 2.5, 1501)[None, :]
    al, be = np.exp(la), np.exp(lb)
    lp = stats.expon.logpdf(al) + stats.gamma.logpdf(be, 0.1) + la + lb
    theta1 = 0.0
    for ci, ei in zip(c, e, strict=True):
        lp = (
            lp
            + special.gammaln(ci + al)
            - special.gammaln(al)
            + al * np.log(be)
            - (ci + al) * np.log(be + ei)
        )
    w = np.exp(lp - lp.max())
    w /= w.sum()
    theta1 = (w * (al + c[0]) / (be + e[0])).sum()
    assert fit.population.loc["alpha", "mean"] == pytest.approx((w * al).sum(), rel=2e-3)
    assert fit.population.loc["beta", "mean"] == pytest.approx((w * be).sum(), rel=2e-3)
    assert fit.groups.loc[1, "mean"] == pytest.approx(theta1, rel=1e-4)
    # BUGS manual: alpha 0.70, beta 0.93, theta[1] 0.060, theta[10] 1.99
    assert fit.population.loc["alpha", "mean"] == pytest.approx(0.70, abs=0.01)
    assert fit.groups.loc[10, "mean"] == pytest.approx(1.99, abs=0.01)


def test_an_improper_posterior_is_refused():
    # p(tau) ∝ 1/tau is not integrable at 0, and the likelihood stays positive there
    with pytest.raises(ValueError, match="posterior of tau is improper.*lower end"):
        poolwise.fit(
            SCHOOLS, group="school", y="y", se="sigma", priors={"tau": poolwise.Power(-1.0)}
        )


def test_grid_edge_check_widens_and_warns_when_mass_stays_at_the_edge(monkeypatch):

    # a heavy tail (density ∝ 1/(1+z²)) keeps mass at every edge the grid can reach
    monkeypatch.setattr(exact, "MAX_WIDEN", 2)
    monkeypatch.setattr(exact, "FAR_DROP", 1.0)
    post = exact.fit(Density(lambda z: -np.log1p(z[:, 0] ** 2), np.zeros(1), ("x",)))
    assert any("edge of the quadrature grid in x (low), x (high)" in w for w in post.warnings)
    assert post.info["range_sd"]["x"][1] > 6.0


def test_grid_edge_carries_negligible_mass_for_a_proper_posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = poolwise.fit(SCHOOLS, group="school", y="y", se="sigma", priors=SCHOOL_PRIORS, seed=1)
    assert fit.info["edge_mass"] < 1e-6


def test_quadrature_of_a_skewed_density_is_exact():
    # log-gamma density in z = log x: E[x] = shape / rate exactly
    shape, rate = 2.5, 4.0
    post = exact.fit(Density(lambda z: shape * z[:, 0] - rate * np.exp(z[:, 0]), np.zeros(1)))
    assert post.weights @ np.exp(post.points[:, 0]) == pytest.approx(shape / rate, rel=1e-8)


@pytest.mark.parametrize("by_rows", [False, True])
def test_refined_grid_reuses_the_coarse_points_exactly(by_rows):
    # a correlated, skewed 2-d density that needs widening and refinement; the weights must be
    # those of evaluating the density afresh at every returned point (sinh map's Jacobian too),
    # also where the widening adds rows and keeps the points before it
    def log_density(z):
        x, y = z[:, 0], z[:, 1] - 0.8 * z[:, 0]
        return 3.0 * x - 2.0 * np.exp(x) - 0.5 * (y / 0.3) ** 2

    evaluated = []

    def counted(z):
        evaluated.append(z.copy())
        return log_density(z)

    post = exact.fit(Density(counted, np.zeros(2)), widen_by_rows=by_rows)
    assert post.info["points_per_dim"] > 25  # refined at least once
    lp = log_density(post.points) + np.log(np.cosh(post.grid)).sum(axis=1)
    fresh = np.exp(lp - lp.max())
    np.testing.assert_allclose(post.weights, fresh / fresh.sum(), rtol=1e-12, atol=0)
    # each returned point was evaluated once (the mode, also a point of the search, may be twice)
    rows, counts = np.unique(np.concatenate(evaluated).round(10), axis=0, return_counts=True)
    where = {tuple(r): c for r, c in zip(rows, counts, strict=True)}
    times = np.array([where[tuple(p)] for p in post.points.round(10)])
    assert times.min() == 1 and np.sum(times > 1) <= 1
    # and is returned exactly as evaluated (to the last bit: a caller holding what it computed
    # at each point finds it again by its value)
    exact_rows = {row.tobytes() for row in np.concatenate(evaluated)}
    assert all(p.tobytes() in exact_rows for p in post.points)


def test_the_finer_grid_holds_the_density_between_the_points():
    """The finer grid's log densities are local cubics through the evaluated points' (in u,
    less the standard normal's): on a skewed, correlated density from a 15^2 grid they are
    those of evaluating it afresh at every finer point to a total variation of 1e-3, on a grid
    four times finer."""

    def log_density(z):
        x, y = z[:, 0], z[:, 1] - 0.8 * z[:, 0]
        return 3.0 * x - 2.0 * np.exp(x) - 0.5 * (y / 0.3) ** 2

    post = exact.fit(
        Density(log_density, np.zeros(2)),
        moment_tol=0.03,
        widen_by_rows=True,
        start_points=13,
        fine_points=20_000,
    )
    fine = post.fine
    np.testing.assert_allclose(fine.spacing, post.spacing / 4)
    lp = log_density(fine.points) + np.log(np.cosh(fine.grid)).sum(axis=1)
    fresh = np.exp(lp - lp.max())
    assert 0.5 * np.abs(fresh / fresh.sum() - fine.weights).sum() < 1e-3
    assert exact.fit(Density(log_density, np.zeros(2))).fine is None  # none unless asked


def test_the_finer_grid_leaves_the_known_part_out_of_its_interpolation():
    """A half-normal prior on a scale falls off a cliff on its log: a density's known part
    (``Density.known``) is left out of the finer grid's interpolation and added back exactly.
    Here the rest is Gaussian, which the cubics hold: the finer grid is the density itself (it
    was 1.6e-3 off in total variation, the scale's sd 0.007 sd, with the prior interpolated)."""

    def prior(z):  # HalfNormal(0.3) on exp(z0), with the log scale's Jacobian
        return -np.exp(2 * z[:, 0]) / (2 * 0.3**2) + z[:, 0]

    def log_density(z):
        return prior(z) - 0.5 * (z[:, 0] + 1.0) ** 2 / 0.8 - 2 * (z[:, 1] - 0.3 * z[:, 0]) ** 2

    post = exact.fit(
        Density(log_density, np.zeros(2), known=prior),
        moment_tol=0.03,
        widen_by_rows=True,
        start_points=13,
        fine_points=20_000,
    )
    fine = post.fine
    lp = log_density(fine.points) + np.log(np.cosh(fine.grid)).sum(axis=1)
    fresh = np.exp(lp - lp.max())
    assert 0.5 * np.abs(fresh / fresh.sum() - fine.weights).sum() < 1e-9
