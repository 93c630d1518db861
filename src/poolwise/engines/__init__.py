"""Inference engines: they see a model's log densities over unconstrained arrays, never dataframes.

Every engine is ``fit(model, **options) -> Posterior`` (see :mod:`poolwise.engines.base`), and
:data:`ENGINES` finds it by name: ``exact`` quadrature, ``ccd`` (a central composite design,
for more hyperparameters than quadrature takes), ``eb`` (empirical Bayes: the mode of the
marginal likelihood) and ``nuts`` (numpyro on the collapsed one-factor model).
"""

from . import ccd, collapsed_nuts, eb, exact
from .base import Density, Posterior, Target

ENGINES = {"exact": exact.fit, "ccd": ccd.fit, "eb": eb.fit, "nuts": collapsed_nuts.fit}

__all__ = ["ENGINES", "Density", "Posterior", "Target"]
