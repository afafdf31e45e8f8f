"""Experiments: one module per family, each registering its task with ``rhn.train``."""

from tasks import char_lm

__all__ = ["char_lm"]
