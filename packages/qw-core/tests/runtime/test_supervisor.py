"""``qw worker --processes N``: a supervisor of real worker processes on real stores.

Each test starts the supervisor as a subprocess (the ``workers`` fixture's
command line) and looks at its children through the store's registry, whose
ids name the supervisor (:func:`qw.worker.supervisor.parse_child_id`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import HERE, Workers, events_by_job, read_lines, wait_until

import qw
from qw.cli import main
from qw.model import JobStatus, WorkerInfo
from qw.worker.supervisor import MAX_STARTUP_FAILURES, WORKER_INDEX_ENV, ChildSpec, parse_child_id

S = JobStatus


@pytest.fixture
def app(process_app: qw.App) -> qw.App:
    return process_app


@pytest.fixture
def pool(workers: Workers, app: qw.App) -> Iterator[Workers]:
    """The ``workers`` fixture, which also kills children a failed test left behind."""
    yield workers
    for child in app.client.workers():
        if is_alive(child.pid):
            os.kill(child.pid, signal.SIGKILL)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def exit_code(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"supervisor {proc.pid} did not exit within {timeout} s")


def children(app: qw.App, supervisor: subprocess.Popen[bytes]) -> list[WorkerInfo]:
    """The registry's workers that are children of ``supervisor``, live or not."""
    mine = []
    for w in app.client.workers():
        sup = parse_child_id(w.id)
        if sup is not None and sup.supervisor_pid == supervisor.pid:
            mine.append(w)
    return mine


def live_children(app: qw.App, supervisor: subprocess.Popen[bytes]) -> list[WorkerInfo]:
    return [w for w in children(app, supervisor) if is_alive(w.pid)]


def status(app: qw.App, url: str, *options: str) -> str:
    args = ["status", "--url", url, "--namespace", app.namespace, *options]
    result = CliRunner().invoke(main, args, env={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_child_ids_name_their_supervisor() -> None:
    spec = ChildSpec(2, "4242.a1b2c3", 7, 8)
    assert ChildSpec.parse(spec.encode()) == spec
    sup = parse_child_id(spec.worker_id("box:4300:ffee00"))
    assert sup is not None
    assert (sup.supervisor, sup.supervisor_pid, sup.index) == ("4242.a1b2c3", 4242, 2)
    assert parse_child_id("box:4300:ffee00") is None


def test_status_groups_children_by_supervisor_and_host() -> None:
    url = f"memory://sup{os.getpid()}x{time.monotonic_ns()}"
    with qw.open(url, namespace="grp") as client:
        client.heartbeat(WorkerInfo("box:10:aa", ("rt",), host="box", pid=10))
        for index, pid in ((1, 21), (0, 20)):
            spec = ChildSpec(index, "19.abcdef", 0, 0)
            client.heartbeat(WorkerInfo(spec.worker_id(f"box:{pid}:bb"), ("rt",), "box", pid))
        # The same supervisor pid on another host is another supervisor.
        other = ChildSpec(0, "19.abcdef", 0, 0).worker_id("cat:30:cc")
        client.heartbeat(WorkerInfo(other, ("rt",), host="cat", pid=30))
        args = ["status", "--url", url, "--namespace", "grp"]
        text = CliRunner().invoke(main, args, env={}).output
        data = json.loads(CliRunner().invoke(main, [*args, "--json"], env={}).output)
    lines = text.splitlines()
    box = lines.index("supervisor pid 19 on box: 2 worker processes, 2 live")
    assert [line.split()[:5] for line in lines[box + 2 : box + 4]] == [
        ["w0", "box:20:bb/w0@19.abcdef", "live", "box", "20"],
        ["w1", "box:21:bb/w1@19.abcdef", "live", "box", "21"],
    ]
    assert "supervisor pid 19 on cat: 1 worker process, 1 live" in lines
    assert any(line.startswith("box:10:aa ") for line in lines)
    groups = {(g["host"], g["pid"]): (g["children"], g["live"]) for g in data["supervisors"]}
    assert groups == {("box", 19): (2, 2), ("cat", 19): (1, 1)}
    by_id = {w["id"]: (w["supervisor"], w["index"]) for w in data["workers"]}
    assert by_id["box:10:aa"] == (None, None)
    assert by_id[other] == ("19.abcdef", 0)


def test_three_processes_drain_every_job_once_and_status_groups_them(
    app: qw.App, pool: Workers, notes: Path, process_url: str
) -> None:
    count = app.tasks["rt.count"]
    ids = [h.id for h in app.enqueue_many([count.job(str(notes), i) for i in range(90)])]
    sup = pool.spawn("--processes", "3", "--concurrency", "2")
    wait_until(lambda: len(live_children(app, sup)) == 3, 30, "three children to register")
    wait_until(lambda: len(read_lines(notes, "runs")) >= len(ids), 60, "every job to run")
    wait_until(lambda: all(app.client.get(i).status is S.SUCCEEDED for i in ids), 30, "the results")
    runs = Counter(line.split()[0] for line in read_lines(notes, "runs"))
    assert runs == Counter(ids), "every job ran exactly once"

    kids = children(app, sup)
    pids = {w.pid for w in kids}
    assert len(pids) == 3
    assert sup.pid not in pids
    data = json.loads(status(app, process_url, "--json"))
    (group,) = data["supervisors"]
    assert (group["pid"], group["children"], group["live"]) == (sup.pid, 3, 3)
    assert sorted(w["index"] for w in data["workers"]) == [0, 1, 2]
    assert {w["pid"] for w in data["workers"]} == pids
    text = status(app, process_url)
    assert f"supervisor pid {sup.pid} on {kids[0].host}: 3 worker processes, 3 live" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("w")]
    assert sorted((r[0], r[2], int(r[4])) for r in rows) == sorted(
        (f"w{parse_child_id(w.id).index}", "live", w.pid)  # type: ignore[union-attr]
        for w in kids
    )
    # Each child knows its index (qw-metrics serves child i on its port + i), and
    # gets the store URL in its environment, never on its command line (ps shows it).
    for w in kids:
        environ = Path(f"/proc/{w.pid}/environ").read_bytes().split(b"\0")
        index = parse_child_id(w.id).index  # type: ignore[union-attr]
        assert f"{WORKER_INDEX_ENV}={index}".encode() in environ
        assert f"QW_URL={process_url}".encode() in environ
        cmdline = Path(f"/proc/{w.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--url" not in cmdline
        assert process_url.encode() not in cmdline

    sup.send_signal(signal.SIGTERM)
    assert exit_code(sup) == 0, pool.log_of(sup)
    assert app.client.workers() == []
    assert not any(is_alive(p) for p in pids)


def test_a_killed_child_is_restarted_and_its_jobs_run_elsewhere(
    app: qw.App, pool: Workers, notes: Path
) -> None:
    record = app.tasks["rt.record"]
    ids = [h.id for h in app.enqueue_many([record.job(str(notes), 0.4) for _ in range(24)])]
    sup = pool.spawn("--processes", "3", "--concurrency", "2")

    def busy_child() -> int | None:
        # A child with a job started and not finished: killing it loses that job's run.
        started = {tuple(line.split()) for line in read_lines(notes, "started")}
        finished = {tuple(line.split()) for line in read_lines(notes, "finished")}
        running = [int(pid) for _, _, pid in started - finished]
        return running[0] if running else None

    victim = wait_until(busy_child, 30, "a child to be running a job")
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (
            len(live_children(app, sup)) == 3
            and victim not in {w.pid for w in live_children(app, sup)}
        ),
        30,
        "the killed child to be replaced",
    )
    wait_until(lambda: all(app.client.get(i).status is S.SUCCEEDED for i in ids), 60, "every job")
    sup.send_signal(signal.SIGTERM)
    assert exit_code(sup) == 0, pool.log_of(sup)

    log = pool.log_of(sup)
    assert f"(pid {victim}) exited after" in log, log
    assert "killed by SIGKILL" in log
    assert "restarting w" in log
    # At least once: the killed child's jobs ran again, each finished exactly once.
    finished = Counter(line.split()[0] for line in read_lines(notes, "finished"))
    assert finished == Counter(ids)
    again = [i for i in ids if app.client.get(i).attempts == 2]
    assert again, "the killed child's job was run a second time"
    assert all(app.client.get(i).attempts in (1, 2) for i in ids)
    events = events_by_job(app)
    assert all([e.type for e in events[i]] == ["job.succeeded"] for i in ids)


def test_sigterm_drains_every_child_and_exits_zero(app: qw.App, pool: Workers, notes: Path) -> None:
    record = app.tasks["rt.record"]
    ids = [h.id for h in app.enqueue_many([record.job(str(notes), 1.0) for _ in range(4)])]
    sup = pool.spawn("--processes", "2", "--concurrency", "2", "--grace", "20", "--prefetch", "0")
    wait_until(lambda: len(read_lines(notes, "started")) >= 3, 30, "jobs to start")
    pids = {w.pid for w in children(app, sup)}
    sup.send_signal(signal.SIGTERM)
    assert exit_code(sup) == 0, pool.log_of(sup)

    started = sorted(line.split()[0] for line in read_lines(notes, "started"))
    finished = sorted(line.split()[0] for line in read_lines(notes, "finished"))
    assert started == finished
    assert len(started) >= 3
    for job_id in ids:
        job = app.client.get(job_id)
        if job_id in finished:
            assert (job.status, job.result) == (S.SUCCEEDED, job_id)
        else:
            assert (job.status, job.attempts) == (S.QUEUED, 0)
    assert app.client.workers() == []
    assert not any(is_alive(p) for p in pids)


def test_a_second_sigterm_stops_every_child_at_once(
    app: qw.App, pool: Workers, notes: Path
) -> None:
    waits = [app.tasks["rt.async_wait"].enqueue().id for _ in range(2)]
    sync = app.tasks["rt.record"].enqueue(str(notes), 60.0).id
    sup = pool.spawn("--processes", "2", "--concurrency", "2", "--grace", "60", "--prefetch", "0")
    ids = [*waits, sync]
    wait_until(
        lambda: all(app.client.get(i).status is S.RUNNING for i in ids), 30, "the jobs to run"
    )
    wait_until(lambda: read_lines(notes, "started"), 30, "the sync job to start")
    sup.send_signal(signal.SIGTERM)
    wait_until(lambda: pool.log_of(sup).count("stopping: waiting") >= 1, 10, "a drain")
    time.sleep(0.3)
    begun = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert exit_code(sup, 15) == 0, pool.log_of(sup)
    assert time.monotonic() - begun < 10
    # Coroutines are released (queued again, attempt not counted); the sync
    # task's thread cannot be stopped, so its job goes back when its lease
    # lapses, as with a single worker's second signal. None failed.
    for job_id in waits:
        job = app.client.get(job_id)
        assert (job.status, job.attempts) == (S.QUEUED, 0)
    wait_until(lambda: app.client.reclaim_expired(), 10, "the sync job's lease to lapse")
    job = app.client.get(sync)
    assert (job.status, job.attempts) == (S.QUEUED, 1)
    assert read_lines(notes, "finished") == []


def test_a_child_stopped_on_its_own_is_not_restarted(app: qw.App, pool: Workers) -> None:
    sup = pool.spawn("--processes", "2")
    wait_until(lambda: len(live_children(app, sup)) == 2, 30, "two children")
    first, second = live_children(app, sup)
    os.kill(first.pid, signal.SIGTERM)
    wait_until(lambda: "not restarted" in pool.log_of(sup), 15, "the child to exit")
    time.sleep(1.0)  # longer than a first restart's delay
    assert [w.pid for w in live_children(app, sup)] == [second.pid]
    sup.send_signal(signal.SIGTERM)
    assert exit_code(sup) == 0, pool.log_of(sup)


def test_children_of_a_killed_supervisor_drain_and_exit(
    app: qw.App, pool: Workers, notes: Path
) -> None:
    sup = pool.spawn("--processes", "2", "--concurrency", "2", "--grace", "20")
    wait_until(lambda: len(live_children(app, sup)) == 2, 30, "two children")
    kids = live_children(app, sup)
    job_id = app.tasks["rt.record"].enqueue(str(notes), 1.0).id
    wait_until(lambda: read_lines(notes, "started"), 30, "the job to start")
    os.kill(sup.pid, signal.SIGKILL)
    assert exit_code(sup) == -signal.SIGKILL
    wait_until(lambda: not any(is_alive(k.pid) for k in kids), 15, "the orphaned children to exit")
    # They drained: the running job finished, and they left the registry.
    assert app.client.get(job_id).status is S.SUCCEEDED
    assert app.client.workers() == []


def test_ctrl_c_to_the_terminal_group_drains_once(
    app: qw.App, notes: Path, tmp_path: Path, process_url: str
) -> None:
    # Ctrl-C signals the terminal's whole process group; the children must
    # not see it directly as well, or the forwarded copy would be a second signal.
    job_id = app.tasks["rt.record"].enqueue(str(notes), 1.5).id
    env = {**os.environ, "PYTHONPATH": str(HERE), "QW_METRICS_PORT": "off"}
    cmd = [
        sys.executable, "-c", "from qw.cli import main; main(prog_name='qw')",
        "worker", "runtime_app:app", "--url", process_url, "--namespace", app.namespace,
        "--queues", "rt", "--processes", "2", "--poll-interval", "0.05",
    ]  # fmt: skip
    with (tmp_path / "group.log").open("wb") as log:
        sup = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: read_lines(notes, "started"), 30, "the job to start")
        os.killpg(sup.pid, signal.SIGINT)
        assert exit_code(sup) == 0, (tmp_path / "group.log").read_text()
    finally:
        if sup.poll() is None:
            sup.kill()
    assert len(read_lines(notes, "finished")) == 1
    assert app.client.get(job_id).status is S.SUCCEEDED


def test_a_child_that_cannot_start_is_retried_with_backoff_then_given_up(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(HERE), "QW_METRICS_PORT": "off"}
    cmd = [
        sys.executable, "-c", "from qw.cli import main; main(prog_name='qw')",
        "worker", "no_such_module_here:app", "--url", f"sqlite:///{tmp_path}/q.db",
        "--processes", "2",
    ]  # fmt: skip
    begun = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - begun
    log = proc.stderr
    assert proc.returncode == 1, log
    assert f"failed at start-up {MAX_STARTUP_FAILURES} times in a row" in log
    assert "giving up" in log
    assert "cannot import 'no_such_module_here'" in log
    # Backed off (0.5 + 1 + 2 + 4 s between the five starts), no hot loop.
    starts = log.count(": started w")
    assert MAX_STARTUP_FAILURES <= starts <= 2 * MAX_STARTUP_FAILURES
    assert took >= 7.0


@pytest.mark.parametrize("value", ["0", "-1", "257", "many"])
def test_a_bad_process_count_is_a_usage_error_before_any_io(tmp_path: Path, value: str) -> None:
    db = tmp_path / "never.db"
    args = ["worker", "nowhere:app", "--url", f"sqlite:///{db}", "--processes", value]
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 2, result.output
    assert "--processes" in result.output
    assert not db.exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--url", ""), ("--namespace", ""), ("--queues", "bad queue!")]
)
def test_bad_store_options_fail_in_the_supervisor_at_once(option: str, value: str) -> None:
    args = ["worker", "nowhere:app", "--processes", "2", option, value]
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 2, result.output
    assert "supervisor" not in result.output


def test_the_child_option_is_not_for_people(tmp_path: Path) -> None:
    args = ["worker", "nowhere:app", "--child", "nonsense"]
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 2, result.output


# A stand-in child: reports ready, then crashes quickly four times, once after
# a long life, and then runs until SIGTERM (exit 0).
_CHILD = """
import os, signal, sys, time
from qw.worker.supervisor import ChildSpec
spec = ChildSpec.parse(sys.argv[sys.argv.index("--child") + 1])
runs = os.path.join(sys.argv[1], "runs")
with open(runs, "a") as f:
    f.write("x")
n = len(open(runs).read())
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
os.write(spec.ready_fd, b"r")
if n <= 4:
    sys.exit(3)
if n == 5:
    time.sleep(1.6)
    os.kill(os.getpid(), signal.SIGKILL)
while True:
    time.sleep(1)
"""

_SUPERVISOR = """
import logging, sys
from qw.worker.supervisor import Supervisor
logging.basicConfig(level="INFO", format="%(message)s")
child = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
options = dict(restart_first_s=0.2, restart_max_s=0.8, stable_after_s=1.5)
sys.exit(Supervisor(child, 1, **options).run())
"""


def test_restarts_back_off_doubling_to_a_cap_and_reset_after_a_long_life(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _SUPERVISOR, _CHILD, str(tmp_path)]
    with (tmp_path / "log").open("wb") as log:
        sup = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (tmp_path / "runs").exists() and
                   len((tmp_path / "runs").read_text()) == 6, 30, "six starts")  # fmt: skip
        time.sleep(0.3)
        sup.send_signal(signal.SIGTERM)
        assert exit_code(sup) == 0, (tmp_path / "log").read_text()
    finally:
        if sup.poll() is None:
            sup.kill()
    text = (tmp_path / "log").read_text()
    delays = [line.rsplit(" in ", 1)[1] for line in text.splitlines() if "restarting w0" in line]
    assert delays == ["0.2 s", "0.4 s", "0.8 s", "0.8 s", "0.2 s"], text
    assert "exit code 3" in text
    assert "killed by SIGKILL" in text
