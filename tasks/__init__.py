"""Experiments: one module per family, each registering its tasks with ``rhn.train``."""

from tasks import language_model

__all__ = ["language_model"]
