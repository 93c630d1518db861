"""Inference engines: they see a log density over unconstrained arrays, never dataframes."""
