"""Models assembled from :mod:`rhn.nn` layers, each built by :func:`build_model` from its
config and its metadata (:mod:`rhn.models.registry`)."""

from rhn.models.char_aware import CharAwareConfig, CharAwareLM
from rhn.models.image_classifier import ImageClassifierConfig, build_image_classifier
from rhn.models.language_model import LanguageModel, LanguageModelConfig
from rhn.models.recurrent_lm import RecurrentConfig, RecurrentLM
from rhn.models.registry import ModelMeta, build_model, register_model

__all__ = [
    "CharAwareConfig",
    "CharAwareLM",
    "ImageClassifierConfig",
    "LanguageModel",
    "LanguageModelConfig",
    "ModelMeta",
    "RecurrentConfig",
    "RecurrentLM",
    "build_image_classifier",
    "build_model",
    "register_model",
]
