"""The formula door of :func:`poolwise.fit`: the one-factor engines, the Laplace engine or NUTS.

The routes: :mod:`poolwise.glmm.sampling` (NUTS), :mod:`poolwise.glmm.laplace` (Laplace and
empirical Bayes), both on the model that :func:`poolwise.glmm.setup.prepare` reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .._threads import one_blas_thread
from ..data import reduce
from ..fitdata import FitData
from ..onefactor import fit_groups
from .aghq import Declined, fit_aghq, why_not
from .formula import parse_formula
from .laplace import fit_laplace, refusal
from .sampling import fit_formula
from .setup import prepare

__all__ = ["fit_formula", "fit_from_api"]

METHODS = ("auto", "exact", "eb", "laplace", "nuts")


def fit_from_api(
    formula: str,
    data: Any,
    *,
    family: str | None,
    exposure: str | None,
    pooling: str,
    method: str,
    priors: dict | None,
    draws: int,
    hdi_prob: float,
    seed: int | None,
    **nuts: Any,
) -> FitData:
    """The formula door of :func:`poolwise.fit`: one factor with an intercept only goes to the
    one-factor engines (the same numbers as ``fit(data, group=...)``), unless NUTS is asked for
    (``method="nuts"`` or any of its options in ``nuts``). The rest: ``"laplace"`` and ``"eb"``
    to the Laplace engine (a TypeError for NUTS options), ``"nuts"`` to NUTS, and ``"auto"`` to
    the Laplace engine where it takes the model (see :func:`poolwise.glmm.laplace.refusal`),
    no NUTS option is given and the engine's accuracy check does not flag
    (:func:`poolwise.glmm.laplace.laplace_check`), else to NUTS; the fit's ``method_reason``
    says which and why. The
    Laplace route's exact case, one scalar factor of a binomial or poisson model, is integrated
    by adaptive Gauss–Hermite quadrature (:mod:`poolwise.glmm.aghq`)."""
    if data is None:
        raise TypeError("fit(formula, data=...): give the data with data=")
    spec = parse_formula(formula, family, exposure)
    if method in ("exact", "eb") and spec.intercept_only_factor is not None and nuts:
        raise TypeError(
            f"fit: {', '.join(nuts)} not used by method={method!r} (they apply to NUTS); "
            "leave them out or pass method='nuts'"
        )
    one_factor = spec.intercept_only_factor is not None and not nuts
    if method in ("exact", "eb", "auto") and one_factor:
        columns = dict(spec.response)
        name = spec.family
        stats = reduce(data, spec.intercept_only_factor, name, columns)
        return fit_groups(
            stats,
            name,
            pooling=pooling,
            method=method,
            priors=priors,
            draws=draws,
            hdi_prob=hdi_prob,
            seed=seed,
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "exact":
        raise ValueError(
            f"method='exact' fits one grouping factor with an intercept only, 'y ~ 1 + (1|g)'; "
            f"{formula!r} needs method='laplace', 'eb', 'nuts' (or 'auto')"
        )
    if method in ("laplace", "eb") and nuts:
        raise TypeError(
            f"fit: {', '.join(nuts)} not used by method={method!r} (they apply to NUTS); "
            "leave them out or pass method='nuts'"
        )
    if pooling != "partial":
        raise ValueError(
            f"pooling={pooling!r}: a formula fit pools partially; for no pooling write "
            "the factor as a common term (y ~ 0 + C(g)), for complete pooling leave it out"
        )
    parametrization = nuts.pop("parametrization", "auto")
    # its products (the identifiability check's cross-product among them) are small: BLAS
    # threads only wait on shared cores, and spin on after the call (see poolwise._threads)
    with one_blas_thread():
        prep = prepare(
            formula,
            data,
            family=family,
            exposure=exposure,
            priors=priors,
            parametrization=parametrization,
            spec=spec,
        )
    reason = None
    auto = method == "auto"
    if auto:
        why = refusal(prep)
        if nuts or parametrization != "auto":
            given = ", ".join(["parametrization"] * (parametrization != "auto") + list(nuts))
            why = f"NUTS options given ({given})"
        if why is None:
            method = "laplace"
            reason = (
                "auto: Laplace approximation of the effects given the variance parameters, "
                "integrated by quadrature (the model is a latent Gaussian one with Normal or "
                "Flat priors on its common effects)"
            )
        else:
            method = "nuts"
            reason = f"auto: NUTS, as {why}"

    def sample() -> FitData:
        return fit_formula(
            formula,
            data,
            draws=draws,
            hdi_prob=hdi_prob,
            seed=seed,
            parametrization=parametrization,
            prepared=prep,
            **nuts,
        )

    if method == "nuts":
        fit = sample()
        if reason is None:
            return fit
        return replace(fit, method_reason=reason)
    # the deterministic route's products are small and batched over theta points: BLAS
    # threads only wait on shared cores (see poolwise._threads); the Laplace engine needs
    # scipy, the exact case none
    exact_case = method == "laplace" and why_not(prep.plan) is None
    with one_blas_thread(scipy=not exact_case):
        if exact_case:
            try:
                return fit_aghq(
                    prep,
                    draws=draws,
                    hdi_prob=hdi_prob,
                    seed=seed,
                    reason=reason and "auto: the exact case of the Laplace route",
                )
            except Declined as err:
                reason = f"{reason or 'laplace'} ({err})"
        fit = fit_laplace(
            prep,
            method=method,
            draws=draws,
            hdi_prob=hdi_prob,
            seed=seed,
            reason=reason,
            route=auto,
        )
    check = fit.info.get("laplace_check")
    if not auto or check is None:
        return fit
    flags = check["flags"]
    if not flags:
        shift = check.get("theta_shift_sd", {})
        return replace(
            fit,
            method_reason=f"{reason}; its accuracy check passed (Pareto k-hat "
            f"{check['khat']:.2f}, largest skewness shift "
            f"{check.get('max_shift_sd', float('nan')):.2f} sd, largest shift of the Laplace "
            f"marginal {max(map(abs, shift.values()), default=0.0):.2f} sd)",
        )
    return replace(
        sample(),
        method_reason="auto: NUTS, as the Laplace engine's accuracy check flagged: "
        + "; ".join(flags),
    )
