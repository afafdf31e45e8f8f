"""Models assembled from :mod:`rhn.nn` layers."""

from rhn.models.char_aware import CharAwareConfig, CharAwareLM
from rhn.models.language_model import LanguageModel, LanguageModelConfig
from rhn.models.recurrent_lm import RecurrentConfig, RecurrentLM

__all__ = [
    "CharAwareConfig",
    "CharAwareLM",
    "LanguageModel",
    "LanguageModelConfig",
    "RecurrentConfig",
    "RecurrentLM",
]
