"""Experiments (installed as ``rhn.tasks``): one module per family, each registering its tasks
with :mod:`rhn.train.task`. The registry imports them on first use through the ``rhn.tasks``
entry points of ``pyproject.toml``, so nothing needs importing for its side effect."""
