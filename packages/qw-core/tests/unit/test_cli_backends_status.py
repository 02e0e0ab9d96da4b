"""The ``qw`` command line: backends, status, shared options and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click
import pytest
from unit_helpers import qw_script, run

import qw
from qw.cli import main
from qw.cli._common import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_LEASE_LOST,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    exit_code_for,
    redact_url,
    render_table,
)
from qw.model import WorkerInfo

# -- exit codes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (qw.InvalidInput("x"), EXIT_USAGE),
        (qw.InvalidName("x"), EXIT_USAGE),
        (qw.InvalidPayload("x"), EXIT_USAGE),
        (qw.DuplicateJob("x"), EXIT_USAGE),
        (qw.ConfigurationError("x"), EXIT_USAGE),
        (qw.BackendNotFound("x"), EXIT_BACKEND),
        (qw.BackendUnavailable("x"), EXIT_BACKEND),
        (qw.BackendConflict("x"), EXIT_BACKEND),
        (qw.SchemaError("x"), EXIT_BACKEND),
        (qw.JobNotFound("j"), EXIT_NOT_FOUND),
        (qw.LeaseLost("j"), EXIT_LEASE_LOST),
        (qw.QwError("x"), EXIT_FAILED),
    ],
)
def test_every_error_class_has_a_documented_exit_code(error: qw.QwError, code: int) -> None:
    assert exit_code_for(error) == code


def test_a_qw_error_in_any_command_is_one_line_and_its_code() -> None:
    @main.command("raise-for-test", hidden=True)
    def _raise() -> None:
        raise qw.JobNotFound("0190-abc")

    try:
        result = run("raise-for-test")
    finally:
        main.commands.pop("raise-for-test")
    assert result.exit_code == EXIT_NOT_FOUND
    assert result.stdout == ""
    assert result.stderr == "qw: error: JobNotFound: no job '0190-abc' in this namespace\n"


def test_help_lists_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "backends" in result.output
    assert "status" in result.output
    assert "Exit codes" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert qw.__version__ in result.output


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("postgresql://u:s3cret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("sqlite:///tmp/a.db") == "sqlite:///tmp/a.db"
    assert redact_url("memory") == "memory://"


def test_render_table_aligns_columns() -> None:
    text = render_table(("NAME", "N"), [("a", 1), ("longer", 100)])
    assert text.splitlines() == ["NAME      N", "a         1", "longer  100"]


# -- qw backends -------------------------------------------------------------


def test_backends_lists_memory_with_its_capabilities() -> None:
    result = run("backends", "--json")
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["backends"]}
    memory = rows["memory"]
    assert memory["distribution"] == "qw-core"
    assert memory["version"] == qw.__version__
    assert memory["loads"] is True
    assert memory["error"] is None
    assert memory["class"] == "qw.backends.memory.MemoryBackend"
    assert memory["capabilities"]["native_wakeup"] is True
    assert memory["capabilities"]["multi_process"] is False
    assert memory["capabilities"]["stand_in"] is None
    assert data["ok"] is all(row["loads"] for row in data["backends"])
    assert result.exit_code == (0 if data["ok"] else EXIT_BACKEND)


def test_backends_shows_a_duplicate_name_as_an_error_naming_both(fixture_dists: Path) -> None:
    result = run("backends")
    assert result.exit_code == EXIT_BACKEND
    table = result.stdout
    dup_rows = [line for line in table.splitlines() if line.startswith("dupname")]
    assert len(dup_rows) == 2
    assert all(" NO" in line for line in dup_rows)
    conflict = [line for line in result.stderr.splitlines() if "dupname" in line]
    assert len(conflict) == 1
    assert "qw-fixture-dup-a 1.0.0" in conflict[0]
    assert "qw-fixture-dup-b 2.0.0" in conflict[0]


def test_backends_json_reports_load_failures_and_stand_ins(fixture_dists: Path) -> None:
    result = run("backends", "--json")
    assert result.exit_code == EXIT_BACKEND
    data = json.loads(result.stdout)
    assert data["ok"] is False
    rows = {(r["name"], r["distribution"]): r for r in data["backends"]}
    broken = rows[("broken", "qw-fixture-lazy")]
    assert broken["loads"] is False
    assert "qw-fixture-lazy 0.3.0" in broken["error"]
    lazyone = rows[("lazyone", "qw-fixture-lazy")]
    assert lazyone["loads"] is True
    assert lazyone["capabilities"]["stand_in"] == "fixture-one"
    assert lazyone["capabilities"]["thread_safe"] is False
    for dist in ("qw-fixture-dup-a", "qw-fixture-dup-b"):
        row = rows[("dupname", dist)]
        assert row["loads"] is False
        assert "qw-fixture-dup-a" in row["error"]
        assert "qw-fixture-dup-b" in row["error"]


def test_backends_table_shows_stand_in(fixture_dists: Path) -> None:
    result = run("backends")
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("lazyone")]
    assert "stand_in=fixture-one" in line
    assert "thread_safe" not in line


# -- qw status ---------------------------------------------------------------


def _fill(url: str, namespace: str) -> None:
    with qw.open(url, namespace=namespace) as client:
        client.enqueue([qw.NewJob("emails", {"n": i}) for i in range(3)])
        client.enqueue_one("sms", "hi")
        (claim,) = client.claim(["emails"], worker="w1")
        client.complete(claim.lease, "sent")
        client.claim(["emails"], worker="w1")
        client.set_enabled(False, queue="sms")
        client.set_enabled(False, queue="idle")
        client.heartbeat(WorkerInfo("w1", queues=("emails", "sms"), host="box", pid=42))


def test_status_json_counts_switches_and_workers(memory_url: str) -> None:
    _fill(memory_url, "shop")
    result = run("status", "--url", memory_url, "--namespace", "shop", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["namespace"] == "shop"
    assert data["backend"] == "memory"
    assert data["enabled"] is True
    assert data["queues"]["emails"] == {
        "enabled": True,
        "counts": {
            "waiting": 0,
            "queued": 1,
            "running": 1,
            "succeeded": 1,
            "failed": 0,
            "cancelled": 0,
        },
    }
    assert data["queues"]["sms"]["enabled"] is False
    assert data["queues"]["sms"]["counts"]["queued"] == 1
    # A switched-off queue with no jobs still shows: the switch matters.
    assert data["queues"]["idle"]["enabled"] is False
    assert sum(data["queues"]["idle"]["counts"].values()) == 0
    (worker,) = data["workers"]
    assert worker["id"] == "w1"
    assert worker["queues"] == ["emails", "sms"]
    assert worker["state"] == "live"
    assert 0 <= worker["age_s"] < 60


def test_status_table(memory_url: str) -> None:
    _fill(memory_url, "shop")
    result = run("status", "--url", memory_url, "--namespace", "shop")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"namespace shop on {memory_url} (memory): ON"
    header = next(line for line in lines if line.startswith("QUEUE"))
    assert header.split() == [
        "QUEUE",
        "WAITING",
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "SWITCH",
    ]
    rows = {
        line.split()[0]: line.split()[1:] for line in lines if line.startswith(("emails", "sms"))
    }
    assert rows["emails"] == ["0", "1", "1", "1", "0", "0", "ON"]
    assert rows["sms"] == ["0", "1", "0", "0", "0", "0", "OFF"]
    worker = next(line for line in lines if line.startswith("w1"))
    assert worker.split()[:4] == ["w1", "live", "box", "42"]


def test_status_shows_the_namespace_switch_and_stale_workers(memory_url: str) -> None:
    with qw.open(memory_url, namespace="ops") as client:
        client.set_enabled(False)
        client.heartbeat(WorkerInfo("w9"))
    result = run("status", "--url", memory_url, "--namespace", "ops", "--stale-after", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(": OFF")
    assert "no jobs" in result.stdout
    worker = next(line for line in result.stdout.splitlines() if line.startswith("w9"))
    assert worker.split()[1] in ("stale", "live")  # age 0.0 <= 0 may still count as live


def test_status_reads_url_and_namespace_from_the_environment(memory_url: str) -> None:
    _fill(memory_url, "envns")
    result = run("status", "--json", env={"QW_URL": memory_url, "QW_NAMESPACE": "envns"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["namespace"] == "envns"
    assert data["url"] == memory_url
    assert data["queues"]["emails"]["counts"]["succeeded"] == 1


def test_status_namespaces_are_isolated(memory_url: str) -> None:
    _fill(memory_url, "one")
    result = run("status", "--url", memory_url, "--namespace", "two", "--json")
    data = json.loads(result.stdout)
    assert data["queues"] == {}
    assert data["workers"] == []


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--url", "memory://", "--namespace", "x'; DROP TABLE jobs;--"], 2, "InvalidName"),
        (["--url", "memory://x/not-a-path"], 2, "ConfigurationError"),
        (["--url", "nosuchbackend://h"], 3, "BackendNotFound"),
        (["--url", "memory://", "--stale-after", "-1"], 2, "Invalid value"),
    ],
)
def test_status_errors_are_one_line_with_their_exit_code(
    args: list[str], code: int, error: str
) -> None:
    result = run("status", *args)
    assert result.exit_code == code
    assert result.stdout == ""
    assert error in result.stderr
    if error != "Invalid value":  # click's own usage message is several lines
        assert result.stderr.count("\n") == 1


def test_status_output_never_shows_a_password() -> None:
    result = run("status", "--url", "nosuchbackend://u:hunter2@h/x", "--json")
    assert result.exit_code == EXIT_BACKEND
    assert "hunter2" not in result.output


# -- the installed script, in a real process ----------------------------------


def test_installed_qw_script_runs(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    script = qw_script()
    out = subprocess.run(
        [script, "backends", "--json"],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == EXIT_BACKEND, out.stderr
    data = json.loads(out.stdout)
    dup = [row for row in data["backends"] if row["name"] == "dupname"]
    assert sorted(row["distribution"] for row in dup) == ["qw-fixture-dup-a", "qw-fixture-dup-b"]
    assert "qw-fixture-dup-a" in out.stderr
    assert "qw-fixture-dup-b" in out.stderr

    status = subprocess.run(
        [script, "status", "--url", "memory://", "--json"],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["namespace"] == "default"

    bad = subprocess.run(
        [script, "status", "--url", "nosuchbackend://h"],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == EXIT_BACKEND
    assert bad.stderr.startswith("qw: error: BackendNotFound:")
    assert bad.stderr.count("\n") == 1


def test_cli_commands_are_click_commands() -> None:
    # Other modules register commands the same way; keep the group's shape.
    assert isinstance(main, click.Group)
    assert {"backends", "status"} <= set(main.commands)
