"""A real English corpus that ships with every Python: the pydoc reference topics.

``pydoc_data.topics`` holds the text of the Python language reference used by
``help()`` — about half a million characters of English prose and code, with line breaks.
It lets the character-level demo and tests train on real text with no download.
"""

from __future__ import annotations


def builtin_text() -> str:
    """The pydoc topics joined in a fixed (sorted) order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))
