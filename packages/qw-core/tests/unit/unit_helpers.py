"""Helpers several unit test modules share: the CLI in-process or installed, and refusals."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import qw
from qw.cli import main
from qw.errors import InvalidInput
from qw_testkit.base import snapshot

__all__ = ["assert_refused", "qw_script", "run"]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """``qw ARGS...`` in this process."""
    return CliRunner().invoke(main, list(args), env=env)


def qw_script() -> str:
    """The ``qw`` console script installed beside this interpreter."""
    beside = Path(sys.executable).with_name("qw")
    found = str(beside) if beside.exists() else shutil.which("qw")
    assert found, "qw-core is not installed: no qw console script"
    return found


def assert_refused(
    client: qw.Client, call: Callable[[], object], error: type[Exception] = InvalidInput
) -> None:
    """``call`` raises ``error`` and every observable part of the store is as it was."""
    before = snapshot(client)
    with pytest.raises(error):
        call()
    assert snapshot(client) == before
