"""The operators' commands, run through click on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import running

import qw
from qw.cli import main
from qw.cli.purge import parse_duration
from qw.demo import total_jobs
from qw.model import JobStatus

S = JobStatus


@pytest.fixture
def env(tmp_path: Path, namespace: str) -> dict[str, str]:
    return {"QW_URL": f"sqlite:///{tmp_path / 'cli.db'}", "QW_NAMESPACE": namespace}


@pytest.fixture
def client(env: dict[str, str]) -> qw.Client:
    return qw.open(env["QW_URL"], namespace=env["QW_NAMESPACE"])


def qw_cli(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_enqueue_by_app_by_queue_and_raw(env: dict[str, str], client: qw.Client) -> None:
    by_app = qw_cli(env, "enqueue", "--app", "runtime_app:app", "rt.add", "--args", "[1, 2]")
    job = client.get(by_app.output.strip())
    assert (job.queue, job.payload) == ("rt", {"task": "rt.add", "args": [1, 2], "kwargs": {}})

    by_queue = qw_cli(env, "enqueue", "rt.add", "-q", "other", "--kwargs", '{"a": 1}', "--json")
    answer = json.loads(by_queue.output)
    assert answer["created"] is True
    assert client.get(answer["id"]).queue == "other"

    raw = qw_cli(env, "enqueue", "-q", "raw", "--payload", '{"x": [1]}', "--priority", "3")
    job = client.get(raw.output.strip())
    assert (job.payload, job.priority) == ({"x": [1]}, 3)


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "--app", "runtime_app:app", "rt.nope"],
        ["enqueue", "rt.add", "--args", "[1"],
        ["enqueue", "rt.add"],
        ["enqueue", "rt.add", "-q", "rt", "--args", '{"not": "a list"}'],
        ["enqueue", "--app", "no_such_module:app", "rt.add"],
        ["enqueue", "-q", "bad queue!", "--payload", "1"],
        ["purge", "--older-than", "soon"],
    ],
)
def test_bad_input_exits_2_with_one_line(env: dict[str, str], args: list[str]) -> None:
    result = qw_cli(env, *args, code=2)
    assert result.output.count("\n") == 1 or "Usage" in result.output


def test_jobs_list_show_cancel_retry(env: dict[str, str], client: qw.Client) -> None:
    app = qw.App(env["QW_URL"], env["QW_NAMESPACE"])
    from runtime_app import register

    register(app)
    failing = app.tasks["rt.fatal"].enqueue().id
    with running(app):
        import time

        deadline = time.monotonic() + 15
        while client.get(failing).status is not S.FAILED and time.monotonic() < deadline:
            time.sleep(0.05)
    waiting = app.tasks["rt.add"].options(delay=3600).enqueue(1, 1).id

    listed = json.loads(qw_cli(env, "jobs", "list", "--json").output)
    assert [j["id"] for j in listed] == [failing, waiting]
    failed_only = json.loads(qw_cli(env, "jobs", "list", "-s", "failed", "--json").output)
    assert [j["id"] for j in failed_only] == [failing]
    assert "rt.fatal" in qw_cli(env, "jobs", "list").output

    shown = json.loads(qw_cli(env, "jobs", "show", failing, "--json").output)
    assert shown["status"] == "failed"
    assert shown["error"]["type"] == "builtins.KeyError"
    qw_cli(env, "jobs", "show", "no-such-job", code=4)

    left = qw_cli(env, "jobs", "retry", waiting).output  # queued: nothing to retry
    assert left == f"{waiting} queued (not failed or cancelled: left as it is)\n"
    qw_cli(env, "jobs", "retry", waiting, "--as-new", code=2)
    copied = json.loads(qw_cli(env, "jobs", "retry", failing, "--as-new", "--json").output)
    new_id = copied[0]["retry"]
    new = client.get(new_id)
    assert (new.status, new.payload) == (S.QUEUED, client.get(failing).payload)
    again = json.loads(qw_cli(env, "jobs", "retry", "--all-failed", "--as-new", "--json").output)
    assert again == [{"job": failing, "retry": new_id}], "a live copy is not made twice"
    client.cancel(new_id)
    # In place: the same job, queued again, its attempt counted.
    before = client.get(failing)
    retried = json.loads(qw_cli(env, "jobs", "retry", failing, "--json").output)
    assert retried == [{"job": failing, "status": "queued"}]
    after = client.get(failing)
    assert (after.status, after.attempts) == (S.QUEUED, before.attempts)
    assert after.max_attempts == max(before.max_attempts, before.attempts + 1)
    assert qw_cli(env, "jobs", "retry", "--all-failed").stderr == "no failed jobs\n"
    new_id = failing

    cancelled = json.loads(qw_cli(env, "jobs", "cancel", waiting, new_id, "--json").output)
    assert [c["status"] for c in cancelled] == ["cancelled", "cancelled"]
    app.close()


def test_pause_resume_events_purge_migrate(env: dict[str, str], client: qw.Client) -> None:
    qw_cli(env, "pause", "rt")
    assert client.is_enabled("rt") is False
    qw_cli(env, "pause")
    assert client.is_enabled() is False
    qw_cli(env, "resume")
    qw_cli(env, "resume", "rt")
    assert client.is_enabled("rt") is True

    job_id = client.enqueue_one("rt", {"task": "x"}).id
    client.cancel(job_id)
    pending = qw_cli(env, "events", "tail", "--json").output.splitlines()
    assert [json.loads(line)["type"] for line in pending] == ["job.cancelled"]
    acked = qw_cli(env, "events", "tail", "--ack").output
    assert "job.cancelled" in acked
    assert job_id in acked
    assert qw_cli(env, "events", "tail").output == ""

    purged = json.loads(qw_cli(env, "purge", "--older-than", "0s", "--json").output)
    assert (purged["jobs"], purged["events"]) == (1, 1)
    assert "nothing to do" in qw_cli(env, "migrate").output


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "30s", "15m", "12h", "7d", "2w")] == [
        90, 30, 900, 43200, 604800, 1209600,
    ]  # fmt: skip


def test_demo_runs_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(main, ["demo", "--jobs", "400", "--db", str(db)], env={})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "5 cancelled" in out
    assert "failed" in out
    assert "succeeded" in out
    assert "throughput" in out
    with qw.open(f"sqlite:///{db}", namespace="demo") as client:
        counts = {s: sum(c[s] for c in client.counts().values()) for s in S}
    assert counts[S.QUEUED] == counts[S.RUNNING] == 0
    assert counts[S.CANCELLED] == 5
    assert counts[S.FAILED] > 0
    # 400 jobs, 5 cancelled ones, and the steps of the demo's workflow.
    assert sum(counts.values()) == total_jobs(400) == 410
    assert qw_cli({}, "demo", "--db", str(db), code=2)
