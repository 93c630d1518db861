"""Simulation-based calibration (Talts et al. 2018): do the posteriors mean what they say?

Draw hyperparameters from the priors, simulate data with :func:`poolwise.simulate`, fit, and record
the rank of each true value among ``L`` posterior draws. When the fit is the exact posterior of the
model the data came from, every rank is uniform on 0..L; a U shape says the posterior is too narrow
(over-confident), a hump that it is too wide, a slope that it is biased.

:func:`calibration` runs this for one :class:`CalibrationSpec`: a one-factor family with the exact,
empirical-Bayes (``eb``) or NUTS-on-the-collapsed-model (``nuts``) engine, or a formula regression
``1 + x + (1|group)`` (binomial, Bernoulli, Poisson or normal, :mod:`poolwise.simulate_formula`)
fitted by NUTS, the Laplace engine or its empirical Bayes. Empirical Bayes is checked with what it
reports: group draws given the estimated hyperparameters, and its asymptotic normal approximation
for the hyperparameters themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .families import FAMILIES, family_of
from .priors import Prior
from .simulate_formula import FORMULAS, OPTIONS, PRIORS, simulate_regression

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS = ("exact", "eb", "nuts")
# the regressions ``1 + x + (1|group)`` by outcome family (poolwise.simulate_formula), and the
# engines that fit them
REGRESSIONS = {
    "regression": "binomial",
    "regression_bernoulli": "bernoulli",
    "regression_poisson": "poisson",
    "regression_normal": "normal",
}
REGRESSION_METHODS = ("nuts", "laplace", "eb")
REGRESSION_PRIORS: dict[str, Prior] = PRIORS["binomial"]
# Monte Carlo replicates of uniform ranks behind the ECDF test's p-value and the plot's band
ECDF_REPLICATES = 2000


@dataclass(frozen=True)
class CalibrationSpec:
    """What to calibrate: a model, its priors, the group sizes and the engine.

    ``family`` is a registered one-factor family (``"normal"``, ``"normal_se"``, ``"binomial"``,
    ``"poisson"``, ...) with ``method`` ``"exact"``, ``"eb"`` or ``"nuts"``, or one of
    :data:`REGRESSIONS` for a regression ``1 + x + (1|group)`` (``"regression"``: binomial
    ``p(successes, trials)``; ``"regression_bernoulli"``, ``"regression_poisson"`` with an exposure,
    ``"regression_normal"``) with ``method`` ``"nuts"``, ``"laplace"`` or ``"eb"``.
    ``group_sizes`` are as in :func:`poolwise.simulate` (rows, standard errors, trials or
    exposures; for a regression, as in :func:`simulate_regression`). ``priors``
    (proper) are used both to draw the truth and to fit; ``None`` takes
    the family's ``simulation_priors`` (or the regression's in
    :data:`poolwise.simulate_formula.PRIORS`). ``draws`` is L,
    the posterior draws each truth is ranked among (ranks run 0..L). NUTS runs ``chains`` chains
    of ``tune`` warm-up and ``thin * draws / chains`` kept steps, thinned to L draws.

    Example
    -------
    >>> spec = CalibrationSpec("binomial", (20,) * 8, method="exact")
    >>> spec.parameters()
    ['phi', 'kappa', 'theta[0]', 'theta[7]']
    """

    family: str
    group_sizes: tuple[float, ...] = (10,) * 8
    method: str = "exact"
    priors: Mapping[str, Prior] | None = None
    draws: int = 99
    chains: int = 2
    tune: int = 500
    thin: int = 5

    def __post_init__(self) -> None:
        if self.family not in REGRESSIONS and self.family not in FAMILIES:
            raise ValueError(
                f"family must be one of {', '.join(map(repr, [*FAMILIES, *REGRESSIONS]))}, "
                f"got {self.family!r}"
            )
        if self.family in REGRESSIONS:
            if self.method not in REGRESSION_METHODS:
                raise ValueError(
                    "a regression is fitted by method "
                    f"{', '.join(map(repr, REGRESSION_METHODS))}, got {self.method!r}"
                )
        elif self.method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(map(repr, METHODS))}, got {self.method!r}"
            )
        for name in ("draws", "chains", "tune", "thin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(self.group_sizes) < 2:
            raise ValueError("group_sizes: calibration needs at least two groups")
        for name, prior in self.used_priors().items():
            if not isinstance(prior, Prior) or not prior.proper:
                raise ValueError(
                    f"priors[{name!r}]: calibration draws the truth from the priors, so they must "
                    f"be proper poolwise priors; got {prior!r}"
                )

    def used_priors(self) -> dict[str, Prior]:
        """The priors that draw the truth and that the fit uses."""
        if self.priors is not None:
            return dict(self.priors)
        if self.family in REGRESSIONS:
            return dict(PRIORS[REGRESSIONS[self.family]])
        return dict(family_of(self.family).simulation_priors)

    def parameters(self) -> list[str]:
        """Names of the ranked parameters: hyperparameters, then theta of the first and last group."""
        j = len(self.group_sizes)
        if self.family in REGRESSIONS:
            hyper = ["Intercept", "x", "1|group_sigma"]
            hyper += ["sigma"] * (REGRESSIONS[self.family] == "normal")
            return [*hyper, "1|group[0]", f"1|group[{j - 1}]"]
        family = family_of(self.family)
        names = family.free_names("partial", set(self.used_priors()))
        return [*names, "theta[0]", f"theta[{j - 1}]"]


@dataclass(frozen=True)
class Calibration:
    """Ranks of the truth among L posterior draws, one row per simulation, and their tests.

    ``tests`` has, per parameter, the chi-square statistic on ``bins`` equal bins of the ranks
    and its p-value, and the p-value of the ECDF test (the smallest pointwise binomial tail
    probability of the rank ECDF, calibrated by simulating uniform ranks, as in Säilynoja,
    Bürkner and Vehtari 2022). ``warnings`` counts the fits that warned; ``divergences`` the
    divergent NUTS transitions over all fits; ``engines`` the engine that made each simulation's
    fit (for a regression, the fit's ``info["engine"]``: ``method="laplace"`` gives ``"aghq"``
    where adaptive Gauss–Hermite quadrature took the model, ``"laplace"`` where it did not).
    """

    spec: CalibrationSpec
    ranks: pd.DataFrame
    tests: pd.DataFrame
    bins: int
    warnings: int = 0
    divergences: int = 0
    seconds: float = 0.0
    engines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def min_p(self) -> float:
        """The smallest p-value over parameters and both tests."""
        return float(self.tests[["chi2_p", "ecdf_p"]].to_numpy().min())

    def plot(self, title: str | None = None) -> Figure:
        """Rank histograms (top) and ECDF differences with a 95% simultaneous band (bottom)."""
        import matplotlib.pyplot as plt

        names = list(self.ranks.columns)
        L = self.spec.draws
        n = len(self.ranks)
        fig, axes = plt.subplots(
            2, len(names), figsize=(2.2 * len(names), 3.6), squeeze=False, dpi=72
        )
        expected = n / self.bins
        lo, hi = sps.binom.ppf([0.005, 0.995], n, 1 / self.bins)
        z = np.arange(L + 1) / (L + 1)
        band = _ecdf_band(n, L, 0.95)
        for i, name in enumerate(names):
            r = self.ranks[name].to_numpy()
            ax = axes[0, i]
            counts = np.bincount(r * self.bins // (L + 1), minlength=self.bins)
            ax.axhspan(lo, hi, color="0.88")
            ax.axhline(expected, color="0.5", lw=0.8)
            ax.bar(np.arange(self.bins), counts, width=1.0, color="#4878a8", edgecolor="white")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.tick_params(labelsize=6)
            ax = axes[1, i]
            ecdf = np.searchsorted(np.sort(r), np.arange(L + 1), side="right") / n
            ax.fill_between(z, -band, band, color="0.88", step="post")
            ax.step(z, ecdf - (np.arange(L + 1) + 1) / (L + 1), where="post", color="#a84848")
            ax.axhline(0, color="0.5", lw=0.8)
            ax.tick_params(labelsize=6)
        spec = self.spec
        fig.suptitle(
            title
            or f"{spec.family} / {spec.method}: {n} simulations, {len(spec.group_sizes)} groups",
            fontsize=9,
        )
        fig.tight_layout()
        return fig


def _ranks(truth: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """Rank of ``truth`` among ``draws`` (0..L); ties broken uniformly at random."""
    below = int(np.sum(draws < truth))
    ties = int(np.sum(draws == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def _uniform_ranks_min_p(n: int, L: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """The ECDF test statistic for ``reps`` samples of ``n`` uniform ranks on 0..L."""
    sims = rng.integers(0, L + 1, size=(reps, n))
    return np.array([_ecdf_stat(s, L) for s in sims])


def _ecdf_stat(ranks: np.ndarray, L: int) -> float:
    """Smallest two-sided binomial tail probability of the rank ECDF over the L cut points."""
    n = ranks.size
    cuts = np.arange(L)  # P(rank <= k) = (k + 1) / (L + 1)
    counts = np.searchsorted(np.sort(ranks), cuts, side="right")
    p = (cuts + 1) / (L + 1)
    lower = sps.binom.cdf(counts, n, p)
    upper = sps.binom.sf(counts - 1, n, p)
    return float(np.min(2 * np.minimum(lower, upper)))


_BANDS: dict[tuple[int, int], tuple[np.ndarray, float]] = {}


def _null_stats(n: int, L: int) -> np.ndarray:
    key = (n, L)
    if key not in _BANDS:
        rng = np.random.default_rng([n, L, 2018])
        _BANDS[key] = (np.sort(_uniform_ranks_min_p(n, L, ECDF_REPLICATES, rng)), 0.0)
    return _BANDS[key][0]


def _ecdf_band(n: int, L: int, level: float) -> np.ndarray:
    """Half-width of the simultaneous band of the ECDF difference at ``level``."""
    null = _null_stats(n, L)
    gamma = float(np.quantile(null, 1 - level))
    p = (np.arange(L + 1) + 1) / (L + 1)
    upper = sps.binom.ppf(1 - gamma / 2, n, p) / n - p
    lower = p - sps.binom.ppf(gamma / 2, n, p) / n
    return np.maximum(upper, lower)


def uniformity(ranks: np.ndarray, L: int, bins: int) -> tuple[float, float, float]:
    """Chi-square statistic, its p-value, and the ECDF test's p-value for ranks on 0..L.

    Example
    -------
    >>> r = np.random.default_rng(0).integers(0, 100, 500)
    >>> chi2, p, p_ecdf = uniformity(r, 99, 20)
    >>> p > 0.01 and p_ecdf > 0.01
    True
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if (L + 1) % bins:
        raise ValueError(f"bins must divide L + 1 = {L + 1}, got {bins}")
    counts = np.bincount(ranks * bins // (L + 1), minlength=bins)
    chi2, p = sps.chisquare(counts)
    null = _null_stats(ranks.size, L)
    stat = _ecdf_stat(ranks, L)
    p_ecdf = (np.searchsorted(null, stat, side="right") + 1) / (null.size + 1)
    return float(chi2), float(p), float(min(p_ecdf, 1.0))


def _choose_bins(n: int, L: int) -> int:
    """The most bins dividing L + 1 that keep at least 10 expected ranks per bin (at most 20)."""
    options = [b for b in range(2, 21) if (L + 1) % b == 0 and n / b >= 10]
    return max(options) if options else 2


# ------------------------------------------------------------------------ one-factor engines
def _simulate_stats(spec: CalibrationSpec, seed: int):
    from .simulate import simulate

    df = simulate(spec.family, None, list(spec.group_sizes), priors=spec.used_priors(), seed=seed)
    # the statistics reduce() would give, straight from numpy (groups 0..J-1, no bad rows)
    family = family_of(spec.family)
    columns = {role: df[role].to_numpy() for role in family.layouts[0].roles if role in df}
    stats = family.reduce_rows(df["group"].to_numpy(), columns)
    theta = df.groupby("group", sort=True)["theta"].first().to_numpy()
    return stats, df.attrs["hyperparameters"], theta


def _draws_one_factor(
    spec: CalibrationSpec, model: Any, z: np.ndarray, rng
) -> dict[str, np.ndarray]:
    params = model.params(z)
    j = model.n_groups
    theta = model.sample_theta(z, rng, slice(0, j))
    out = {name: params[name][:, 0] for name in model.names}
    out["theta[0]"] = theta[:, 0]
    out[f"theta[{j - 1}]"] = theta[:, j - 1]
    return out


def _run_one_factor(spec: CalibrationSpec, n_sims: int, seed: int, progress):
    from .engines.collapsed_nuts import fit_many
    from .onefactor import run_engine

    names = spec.parameters()
    L = spec.draws
    rows: list[list[int]] = []
    warned = 0
    divergences = 0
    batch = 50 if spec.method == "nuts" else 1
    for start in range(0, n_sims, batch):
        sims = range(start, min(start + batch, n_sims))
        built = []
        for s in sims:
            stats, truth, theta = _simulate_stats(spec, seed=_sim_seed(seed, s))
            truth = {**truth, "theta[0]": theta[0], f"theta[{len(theta) - 1}]": theta[-1]}
            built.append((stats, truth))
        if spec.method == "nuts":
            from .model import build_model

            models = [
                build_model(family_of(spec.family), st, "partial", spec.used_priors())
                for st, _ in built
            ]
            per_chain = -(-spec.thin * L // spec.chains)
            results = fit_many(
                models, draws=per_chain, tune=spec.tune, chains=spec.chains, seed=seed + start
            )
            for s, model, res, (_, truth) in zip(sims, models, results, built, strict=True):
                divergences += res.divergences
                keep = np.linspace(0, len(res.points) - 1, L).round().astype(int)
                z = res.points[keep]
                rng = np.random.default_rng([seed, s, 1])
                draws = _draws_one_factor(spec, model, z, rng)
                rows.append([_ranks(truth[n], draws[n], rng) for n in names])
        else:
            for s, (stats, truth) in zip(sims, built, strict=True):
                run = run_engine(
                    family_of(spec.family), stats, "partial", spec.method, spec.used_priors()
                )
                warned += bool(run.warnings)
                rng = np.random.default_rng([seed, s, 1])
                post = run.posterior
                if spec.method == "exact":
                    z = post.sample(rng, L)
                    draws = _draws_one_factor(spec, run.model, z, rng)
                else:
                    # groups: given the estimate; hyperparameters: the asymptotic normal
                    draws = _draws_one_factor(spec, run.model, post.sample(rng, L), rng)
                    with np.errstate(all="ignore"):  # the normal approximation may overflow
                        approx = run.model.params(post.sample_normal(rng, L))
                    draws.update({n: approx[n][:, 0] for n in run.model.names})
                rows.append([_ranks(truth[n], draws[n], rng) for n in names])
        if progress is not None:
            progress(len(rows), n_sims)
    return rows, warned, divergences, [spec.method] * n_sims


def _sim_seed(seed: int, s: int) -> int:
    return int(np.random.SeedSequence([seed, s]).generate_state(1)[0])


# ------------------------------------------------------------------------ regression
def _fit_regression(spec: CalibrationSpec, df: pd.DataFrame, seed: int):
    """Fit one simulated regression by the spec's engine, ``spec.draws`` draws or more."""
    family = REGRESSIONS[spec.family]
    formula, options = FORMULAS[family], OPTIONS[family]
    if spec.method == "nuts":
        from .glmm.fit import fit_formula

        return fit_formula(
            formula,
            df,
            **options,
            priors=spec.used_priors(),
            draws=spec.thin * spec.draws,
            tune=spec.tune,
            chains=spec.chains,
            seed=seed,
            progress=False,
        )
    from .glmm.fit import fit_from_api

    return fit_from_api(
        formula,
        df,
        family=options.get("family"),
        exposure=options.get("exposure"),
        pooling="partial",
        method=spec.method,
        priors=spec.used_priors(),
        draws=spec.draws,
        hdi_prob=0.94,
        seed=seed,
    )


def _regression_draws(spec: CalibrationSpec, fit: Any, rng) -> dict[str, np.ndarray]:
    """L draws of each ranked parameter. Empirical Bayes: the effects given the estimate, the
    variance parameters from the asymptotic normal of their logs (the estimate where it sits at
    the boundary, with no standard error)."""
    j = len(spec.group_sizes)
    effects = fit.draws["1|group"].reshape(-1, j)
    flat = {name: fit.draws[name].reshape(-1) for name in spec.parameters()[:-2]}
    flat |= {"1|group[0]": effects[:, 0], f"1|group[{j - 1}]": effects[:, -1]}
    keep = np.linspace(0, effects.shape[0] - 1, spec.draws).round().astype(int)
    flat = {name: d[keep] for name, d in flat.items()}
    if spec.method == "eb":
        for name in ("1|group_sigma", "sigma"):
            if name in flat:
                mean, sd = fit.population.loc[name, ["mean", "sd"]]
                log_sd = 0.0 if np.isnan(sd) else sd / mean
                flat[name] = mean * np.exp(log_sd * rng.standard_normal(spec.draws))
    return flat


def _run_regression(spec: CalibrationSpec, n_sims: int, seed: int, progress):
    import warnings

    from .errors import PoolwiseWarning

    names = spec.parameters()
    priors = spec.used_priors()
    family = REGRESSIONS[spec.family]
    rows, warned, divergences = [], 0, 0
    engines: list[str] = []
    j = len(spec.group_sizes)
    for s in range(n_sims):
        df, truth, b = simulate_regression(spec.group_sizes, priors, _sim_seed(seed, s), family)
        truth = {**truth, "1|group[0]": b[0], f"1|group[{j - 1}]": b[-1]}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PoolwiseWarning)
            fit = _fit_regression(spec, df, _sim_seed(seed, s) % (2**31))
        warned += any(issubclass(w.category, PoolwiseWarning) for w in caught)
        divergences += int(fit.divergences)
        engines.append(fit.info.get("engine", fit.method))  # NUTS fits record no engine
        rng = np.random.default_rng([seed, s, 1])
        flat = _regression_draws(spec, fit, rng)
        rows.append([_ranks(truth[n], flat[n], rng) for n in names])
        if progress is not None:
            progress(len(rows), n_sims)
    return rows, warned, divergences, engines


# ------------------------------------------------------------------------ entry point
def calibration(
    spec: CalibrationSpec,
    n_sims: int = 200,
    seed: int = 0,
    *,
    bins: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Simulation-based calibration of ``spec``: ``n_sims`` data sets, the ranks and their tests.

    Every simulation draws the hyperparameters from the spec's priors, the groups' parameters
    from the population and the data from the groups, fits with the spec's engine and priors,
    and ranks each true value among ``spec.draws`` posterior draws. ``bins`` (dividing L + 1)
    defaults to the most bins with at least 10 expected ranks each. Deterministic for a seed.

    Example
    -------
    >>> import poolwise.check as pc
    >>> cal = pc.calibration(pc.CalibrationSpec("normal_se", (1.0,) * 6, draws=19), n_sims=40)
    >>> list(cal.tests.columns), cal.ranks.shape
    (['chi2', 'chi2_p', 'ecdf_p'], (40, 4))
    """
    import time

    if not isinstance(spec, CalibrationSpec):
        raise TypeError(f"spec must be a CalibrationSpec, got {type(spec).__name__}")
    if isinstance(n_sims, bool) or not isinstance(n_sims, int | np.integer) or n_sims < 2:
        raise ValueError(f"n_sims must be an integer of at least 2, got {n_sims!r}")
    L = spec.draws
    bins = _choose_bins(n_sims, L) if bins is None else bins
    if (L + 1) % bins:
        raise ValueError(f"bins must divide draws + 1 = {L + 1}, got {bins}")
    start = time.perf_counter()
    run = _run_regression if spec.family in REGRESSIONS else _run_one_factor
    rows, warned, divergences, engines = run(spec, n_sims, seed, progress)
    ranks = pd.DataFrame(rows, columns=spec.parameters())
    ranks.index.name = "simulation"
    tests = pd.DataFrame(
        [uniformity(ranks[c].to_numpy(), L, bins) for c in ranks.columns],
        index=pd.Index(ranks.columns, name="parameter"),
        columns=["chi2", "chi2_p", "ecdf_p"],
    )
    return Calibration(
        spec=spec,
        ranks=ranks,
        tests=tests,
        bins=bins,
        warnings=warned,
        divergences=divergences,
        seconds=time.perf_counter() - start,
        engines=engines,
    )
