"""The guide's chapters run as written and print what they show.

A program block names its file on its first line (``# onboarding.py``); the
console block after it shows ``$ python onboarding.py`` and the exact output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[4] / "docs"
PROGRAM = re.compile(
    r"```python\n(# (?P<name>\w+\.py)\n.*?)```\s*```console\n\$ python (?P=name)\n(?P<out>.*?)```",
    re.S,
)
#: Each chapter and the programs it must hold, in order.
CHAPTERS = {
    "workflows.md": ["onboarding.py", "cleanup.py"],
    "flow-control.md": ["limits.py", "fair.py"],
    "periodic.md": ["nightly.py"],
    "asyncio.md": ["shop.py"],
    "results.md": ["results.py"],
}


def _examples(chapter: str) -> list[tuple[str, str, str]]:
    text = (DOCS / chapter).read_text()
    return [(m["name"], m[1], m["out"]) for m in PROGRAM.finditer(text)]


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_the_chapter_has_its_examples(chapter: str) -> None:
    assert [name for name, _, _ in _examples(chapter)] == CHAPTERS[chapter]


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [example for chapter in sorted(CHAPTERS) for example in _examples(chapter)],
    ids=lambda v: str(v)[:20],
)
def test_an_example_prints_what_the_chapter_shows(
    name: str, source: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / name).write_text(source)
    run = subprocess.run(
        [sys.executable, name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected
