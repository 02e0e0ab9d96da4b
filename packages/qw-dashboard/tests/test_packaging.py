"""The wheel carries the templates and static files: nothing is fetched or built at run time."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
SOURCE = PACKAGE / "src" / "qw_dashboard"


def test_the_wheel_ships_every_template_and_static_file(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed: the wheel cannot be built without downloads")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(PACKAGE),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("qw_dashboard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        f"qw_dashboard/{path.relative_to(SOURCE).as_posix()}"
        for sub in ("templates", "static")
        for path in (SOURCE / sub).iterdir()
    }
    assert {"qw_dashboard/static/qw.css", "qw_dashboard/static/qw.js"} <= wanted
    assert wanted <= names
    assert "qw_dashboard/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[qw.commands]" in text
    assert "dashboard = qw_dashboard.cli:dashboard" in text


def test_the_pages_load_nothing_from_another_site() -> None:
    for path in [*(SOURCE / "templates").iterdir(), *(SOURCE / "static").iterdir()]:
        text = path.read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), path
        assert "https://" not in text, path
        assert "<script>" not in text, path  # no inline script: the CSP forbids it anyway
        assert "|safe" not in text.replace(" ", ""), path
