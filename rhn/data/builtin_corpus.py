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


def split_corpus(text: str, valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Train / valid / test as the first, next and last parts of ``text`` (no shuffling)."""
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise ValueError(
            f"valid and test fractions must be in (0, 1) with a sum below 1, got "
            f"{valid_fraction} and {test_fraction}"
        )
    n = len(text)
    valid_start = int(n * (1 - valid_fraction - test_fraction))
    test_start = int(n * (1 - test_fraction))
    return {
        "train": text[:valid_start],
        "valid": text[valid_start:test_start],
        "test": text[test_start:],
    }
