"""Models assembled from :mod:`rhn.nn` layers."""

from rhn.models.language_model import LanguageModel, LanguageModelConfig

__all__ = ["LanguageModel", "LanguageModelConfig"]
