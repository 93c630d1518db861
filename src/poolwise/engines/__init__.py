"""Inference engines: they see a model's log densities over unconstrained arrays, never dataframes.

Every engine is ``fit(model, **options) -> Posterior`` (see :mod:`poolwise.engines.base`), and
:data:`ENGINES` finds it by name: ``exact`` quadrature, ``ccd`` (a central composite design,
for more hyperparameters than quadrature takes), ``pruned`` (a grid explored outward from the
mode, for more hyperparameters whose posterior is far from normal), ``eb`` (empirical Bayes: the mode of the
marginal likelihood) and ``nuts`` (numpyro on the collapsed one-factor model).
"""

from . import ccd, collapsed_nuts, eb, exact, pruned
from .base import Density, Posterior, Target

ENGINES = {
    "exact": exact.fit,
    "ccd": ccd.fit,
    "pruned": pruned.fit,
    "eb": eb.fit,
    "nuts": collapsed_nuts.fit,
}

__all__ = ["ENGINES", "Density", "Posterior", "Target"]
