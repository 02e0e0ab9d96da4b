"""Operator probes: empty settings, absurd seconds, hostile JSON, help text.

Each probe must end in a typed error: one ``qw: error: ...`` line (or click's
usage error) and exit 2, never a traceback and never a default applied.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import Result
from unit_helpers import qw_script, run

import qw
from qw.cli import main


def assert_one_line_error(result: Result, kind: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"qw: error: {kind}: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert isinstance(result.exception, SystemExit), result.exception


# -- 1. empty values are errors, not defaults ------------------------------


@pytest.mark.parametrize(
    ("args", "env", "kind"),
    [
        (["--url", ""], {}, "ConfigurationError"),
        (["--url", "  "], {}, "ConfigurationError"),
        ([], {"QW_URL": ""}, "ConfigurationError"),
        (["--url", "memory://", "--namespace", ""], {}, "InvalidName"),
        (["--url", "memory://"], {"QW_NAMESPACE": ""}, "InvalidName"),
    ],
)
def test_an_empty_url_or_namespace_is_refused_by_the_cli(
    args: list[str],
    env: dict[str, str],
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QW_URL", raising=False)
    monkeypatch.delenv("QW_NAMESPACE", raising=False)
    for command in (["status"], ["jobs", "list"], ["pause"]):
        assert_one_line_error(run(*command, *args, env=env), kind)
    assert list(tmp_path.iterdir()) == []  # no qw.db in the working directory


@pytest.mark.parametrize(
    ("name", "error"), [("QW_URL", qw.ConfigurationError), ("QW_NAMESPACE", qw.InvalidName)]
)
def test_qw_open_refuses_an_empty_environment_variable(
    name: str, error: type[Exception], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QW_URL", raising=False)
    monkeypatch.setenv(name, "")
    with pytest.raises(error, match=f"\\${name} is empty"):
        qw.open()
    with pytest.raises(qw.ConfigurationError, match="empty"):
        qw.open("", namespace="ns")
    assert list(tmp_path.iterdir()) == []


APP_MODULE = """
import qw
app = qw.App("memory://", namespace="fromapp")

@app.task(queue="q")
def noop() -> None:
    pass
"""


@pytest.mark.parametrize(
    ("name", "kind"), [("QW_URL", "ConfigurationError"), ("QW_NAMESPACE", "InvalidName")]
)
def test_qw_worker_refuses_an_empty_environment_variable_even_when_the_app_has_its_own(
    name: str, kind: str, tmp_path: Path
) -> None:
    (tmp_path / "hardening_app.py").write_text(APP_MODULE)
    env = {k: v for k, v in os.environ.items() if k not in ("QW_URL", "QW_NAMESPACE")}
    env |= {name: "", "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(
            [qw_script(), "worker", "hardening_app:app", "--grace", "0"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"qw worker started with an empty ${name} instead of refusing it")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"qw: error: {kind}: "), done.stderr
    assert "Traceback" not in done.stderr


# -- 5. seconds options: finite and bounded ---------------------------------

SECONDS_OPTIONS = [
    (["events", "tail", "--follow", "--url", "memory://"], "--interval"),
    (["status", "--url", "memory://"], "--stale-after"),
    (["enqueue", "--url", "memory://", "-q", "q", "--payload", "1"], "--delay"),
    (["worker", "no_such_module:app", "--url", "memory://"], "--lease"),
    (["worker", "no_such_module:app", "--url", "memory://"], "--grace"),
    (["worker", "no_such_module:app", "--url", "memory://"], "--poll-interval"),
    (["worker", "no_such_module:app", "--url", "memory://"], "--reclaim-interval"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e12", "-1", "soon"])
@pytest.mark.parametrize(("command", "option"), SECONDS_OPTIONS)
def test_seconds_options_refuse_non_finite_and_absurd_values(
    command: list[str], option: str, value: str
) -> None:
    result = run(*command, option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("value", ["99999999w", "1e400", "nan", "-1d"])
def test_purge_refuses_absurd_durations(value: str) -> None:
    result = run("purge", "--older-than", value, "--url", "memory://")
    assert result.exit_code == 2, result.output
    assert "'--older-than'" in result.stderr


def test_purge_still_takes_units() -> None:
    result = run("purge", "--older-than", "7d", "--url", "memory://", "--json")
    assert result.exit_code == 0, result.output
    assert '"older_than_s": 604800.0' in result.stdout


# -- 5. hostile JSON ----------------------------------------------------------


@pytest.mark.parametrize("option", ["--args", "--kwargs"])
def test_deeply_nested_json_arguments_are_invalid_payloads(option: str) -> None:
    deep = "[" * 60_000 + "]" * 60_000
    result = run("enqueue", "--url", "memory://", "-q", "q", "some.task", option, deep)
    assert_one_line_error(result, "InvalidPayload")


def test_a_deeply_nested_raw_payload_is_an_invalid_payload() -> None:
    deep = '{"a":' * 60_000 + "1" + "}" * 60_000
    result = run("enqueue", "--url", "memory://", "-q", "q", "--payload", deep)
    assert_one_line_error(result, "InvalidPayload")


def test_a_payload_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # A shell argument with invalid UTF-8 reaches Python as a lone surrogate.
    url = f"sqlite:///{tmp_path / 'q.db'}"
    argv = [qw_script(), "enqueue", "--url", url, "-q", "q", "--payload", b'{"a":"\xff"}']
    done = subprocess.run(argv, capture_output=True, timeout=60)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert stderr.startswith("qw: error: "), stderr
    assert "Traceback" not in stderr


# -- 6. help text --------------------------------------------------------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("command", _commands(main), ids=lambda c: " ".join(c) or "qw")
def test_help_shows_no_restructuredtext_markup(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:"):
        assert markup not in result.stdout, (command, markup)


def test_lease_is_refused_above_a_day_before_the_app_is_even_loaded() -> None:
    result = run("worker", "no_such_module:app", "--url", "memory://", "--lease", "86401")
    assert result.exit_code == 2, result.output
    assert "[0.1, 86400]" in result.stderr, result.stderr
