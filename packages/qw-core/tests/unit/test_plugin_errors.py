"""A ``qw.plugins`` entry point that fails to load is a PluginError, not a backend error."""

from __future__ import annotations

from pathlib import Path

import pytest

import qw
from qw.cli._common import EXIT_USAGE, exit_code_for
from qw.errors import BackendError, PluginError
from qw.plugin.manager import QwPluginManager


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution whose ``qw.plugins`` entry point names a missing module."""
    info = tmp_path / "qw_fixture_broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qw-fixture-broken-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[qw.plugins]\nbroken = qw_fixture_no_such_module_here\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "broken"


def test_a_plugin_that_fails_to_load_raises_plugin_error(broken_plugin: str) -> None:
    with pytest.raises(PluginError, match=r"plugin 'broken' from qw-fixture-broken-plugin"):
        QwPluginManager().load_entry_points()


def test_a_worker_with_a_broken_plugin_is_refused_at_once(broken_plugin: str) -> None:
    app = qw.App("memory://broken-plugin", namespace="unit")
    with pytest.raises(PluginError) as caught:
        app.worker(["default"])
    assert not isinstance(caught.value, BackendError)
    assert exit_code_for(caught.value) == EXIT_USAGE
    # Without loading entry points, the same worker is fine.
    assert app.worker(["default"], load_plugins=False).plugins is not None
