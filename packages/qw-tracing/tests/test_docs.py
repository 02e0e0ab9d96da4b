"""docs/tracing.md's example runs as written and prints the trace tree it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "tracing.md"
PROGRAM = re.compile(
    r"```python\n(# (?P<name>\w+\.py)\n.*?)```\s*```console\n\$ python (?P=name)\n(?P<out>.*?)```",
    re.S,
)


def test_the_example_prints_the_tree_the_page_shows(tmp_path: Path) -> None:
    if not DOC.exists():
        pytest.skip(f"SKIPPED LOUDLY: {DOC} is not here (an installed copy of the tests)")
    examples = list(PROGRAM.finditer(DOC.read_text()))
    assert [m["name"] for m in examples] == ["traced.py"]
    (example,) = examples
    (tmp_path / "traced.py").write_text(example[1])
    run = subprocess.run(
        [sys.executable, "traced.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == example["out"]
