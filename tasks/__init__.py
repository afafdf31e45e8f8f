"""Experiments: one module per family, each registering its tasks with ``rhn.train``."""

from tasks import image_classification, language_model

__all__ = ["image_classification", "language_model"]
