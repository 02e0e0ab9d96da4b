"""The flow-control chapter (docs/flow-control.md) runs as written and prints what it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHAPTER = Path(__file__).resolve().parents[4] / "docs" / "flow-control.md"
# A program block names its file on its first line; its console block follows.
PROGRAM = re.compile(
    r"```python\n(# (?P<name>\w+\.py)\n.*?)```\s*```console\n\$ python (?P=name)\n(?P<out>.*?)```",
    re.S,
)


def _examples() -> list[tuple[str, str, str]]:
    return [(m["name"], m[1], m["out"]) for m in PROGRAM.finditer(CHAPTER.read_text())]


def test_the_chapter_has_its_examples() -> None:
    assert [name for name, _, _ in _examples()] == ["limits.py", "fair.py"]


@pytest.mark.parametrize(("name", "source", "expected"), _examples(), ids=lambda v: str(v)[:20])
def test_an_example_prints_what_the_chapter_shows(
    name: str, source: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / name).write_text(source)
    run = subprocess.run(
        [sys.executable, name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected
