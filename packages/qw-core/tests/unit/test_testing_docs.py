"""docs/testing.md's complete example runs under pytest and passes as the chapter shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[4] / "docs" / "testing.md"
FILE_BLOCK = re.compile(r"```python\n# (?P<name>\w+\.py)\n(?P<body>.*?)```", re.S)
RUN_BLOCK = re.compile(
    r"```console\n\$ python -m pytest -q (?P<args>[^\n]*)\n(?P<out>.*?)```", re.S
)


def _files() -> dict[str, str]:
    text = DOC.read_text()
    return {m["name"]: f"# {m['name']}\n{m['body']}" for m in FILE_BLOCK.finditer(text)}


def test_the_chapter_holds_a_complete_example() -> None:
    assert sorted(_files()) == ["conftest.py", "shop.py", "test_shop.py"]
    assert len(RUN_BLOCK.findall(DOC.read_text())) == 1


def test_the_example_passes_as_shown(tmp_path: Path) -> None:
    for name, body in _files().items():
        (tmp_path / name).write_text(body)
    match = RUN_BLOCK.search(DOC.read_text())
    assert match is not None
    shown = match["out"].strip().splitlines()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *match["args"].split()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    # The progress line as shown; the summary without its timing.
    assert lines[0].split()[0] == shown[0]
    assert lines[-1].startswith(shown[-1] + " in "), lines[-1]
    # The app's real store was never opened by the tests.
    assert not list(tmp_path.glob("*.db"))
