"""docs/metrics.md's program runs as written and prints what the page shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
PROGRAM = re.compile(
    r"```python\n(# (?P<name>\w+\.py)\n.*?)```\s*```console\n\$ python (?P=name)\n(?P<out>.*?)```",
    re.S,
)


def test_the_page_program_prints_what_it_shows(tmp_path: Path) -> None:
    (match,) = PROGRAM.finditer(DOC.read_text())
    path = tmp_path / match["name"]
    path.write_text(match[1])
    done = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == match["out"]
