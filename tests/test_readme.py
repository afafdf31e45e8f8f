"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


# What an example says it prints: "# prints: TEXT" (up to an " — " that explains it).
PRINTS = re.compile(r"# prints: (.*?)(?: — .*)?$", flags=re.MULTILINE)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2
    assert sum(bool(PRINTS.search(code)) for code in BLOCKS) >= 4  # the printed lines checked


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    assert printed, "each example prints its result"
    for expected in PRINTS.findall(code):
        assert expected in printed, f"the README says it prints {expected!r}; it printed {printed}"
