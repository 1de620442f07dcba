"""Synthetic MIMIC-IV / MIMIC-III style source data with gold note annotations.

>>> from pipeline.synth import generate, GenerateSummary  # doctest: +SKIP
"""

from pipeline.synth.generate import GenerateSummary, generate

__all__ = ["GenerateSummary", "generate"]
