"""Commands from other distributions: the ``qw.commands`` entry-point group."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from qw.cli import main


def _distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """An installed distribution with ``entry_points`` and a module of click commands."""
    info = tmp_path / "qw_fixture_commands-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: qw-fixture-commands\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[qw.commands]\n{entry_points}\n")
    (tmp_path / "qw_fixture_commands.py").write_text(
        "import click\n\n"
        "@click.command()\n@click.argument('who')\n"
        "def hello(who):\n    '''Say hello.'''\n    click.echo(f'hello {who}')\n\n"
        "@click.command()\ndef worker():\n    click.echo('not the real worker')\n\n"
        "not_a_command = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_installed_command_is_listed_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(tmp_path, monkeypatch, "hello = qw_fixture_commands:hello")
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"])
    assert listing.exit_code == 0
    assert "hello" in listing.output
    ran = runner.invoke(main, ["hello", "world"])
    assert (ran.exit_code, ran.output) == (0, "hello world\n")


def test_an_entry_point_cannot_replace_a_builtin_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(tmp_path, monkeypatch, "worker = qw_fixture_commands:worker")
    ran = CliRunner().invoke(main, ["worker", "--help"])
    assert ran.exit_code == 0
    assert "not the real worker" not in ran.output
    assert "SIGTERM" in ran.output


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("broken = qw_fixture_no_such_module:cmd", "failed to load"),
        ("broken = qw_fixture_commands:not_a_command", "is not a click command"),
    ],
)
def test_a_command_that_fails_to_load_names_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, message: str
) -> None:
    _distribution(tmp_path, monkeypatch, entry)
    ran = CliRunner().invoke(main, ["broken"])
    assert ran.exit_code != 0
    assert message in ran.output
    assert "qw-fixture-commands" in ran.output


def test_the_dashboard_when_not_installed_says_which_distribution_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qw.cli.extensions as extensions

    monkeypatch.setattr(extensions, "_entry_points", dict)
    ran = CliRunner().invoke(main, ["dashboard"])
    assert ran.exit_code == 2
    assert "pip install qw-dashboard" in ran.output
