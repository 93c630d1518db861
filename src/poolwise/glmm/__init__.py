"""Regressions with group-specific effects from a formula, fitted by the Laplace engine or NUTS.

formula (formulae) → cells of identical design rows (one engine-side group-by) → design with
integer group codes → latent Gaussian model (Laplace, empirical Bayes) or numpyro model (NUTS)
→ :class:`GlmmFit`. Importing this package does not import
jax; sampling does.
"""

from .fit import fit_formula
from .formula import FormulaSpec, parse_formula
from .results import GlmmFit

__all__ = ["FormulaSpec", "GlmmFit", "fit_formula", "parse_formula"]
