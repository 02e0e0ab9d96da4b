"""Shared fixtures: the test distributions of ``tests/fixtures``, really installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import qw

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_DISTS = ("dup_a", "dup_b", "lazy")


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the fixture distributions pip-installed into it (not on sys.path)."""
    target = tmp_path_factory.mktemp("fixture-site")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--target",
        str(target),
    ]
    if importlib.util.find_spec("hatchling") is not None:
        # Build with the hatchling at hand rather than fetching one per project.
        command += ["--no-build-isolation", "--no-index"]
    command += [str(FIXTURES / name) for name in FIXTURE_DISTS]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert sorted(p.name for p in target.glob("*.dist-info")) == [
        "qw_fixture_dup_a-1.0.0.dist-info",
        "qw_fixture_dup_b-2.0.0.dist-info",
        "qw_fixture_lazy-0.3.0.dist-info",
    ]
    return target


@pytest.fixture
def fixture_dists(fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture distributions, visible to ``importlib.metadata`` for this test."""
    monkeypatch.syspath_prepend(str(fixture_site))
    return fixture_site


@pytest.fixture
def subprocess_env(fixture_site: Path) -> dict[str, str]:
    """An environment whose Python also sees the fixture distributions."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fixture_site), env.get("PYTHONPATH")]))
    for name in ("QW_URL", "QW_NAMESPACE"):
        env.pop(name, None)
    return env


@pytest.fixture
def memory_url() -> str:
    """A memory store of this test's own (``memory://NAME`` is shared per process)."""
    return f"memory://t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(memory_url: str) -> Iterator[qw.Client]:
    with qw.open(memory_url, namespace="unit") as c:
        yield c
