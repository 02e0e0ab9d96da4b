"""``qw worker --periodic TASK=SPEC``: schedules given on the command line, run by a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import qw
from qw.schedule import tick_of

APP = """
import qw

app = qw.App()


@app.task(name="ping")
def ping() -> str:
    return "pong"
"""


def _worker(tmp_path: Path, url: str, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "QW_URL": url, "QW_NAMESPACE": "cli"}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from qw.cli import main; main(prog_name='qw')",
            "worker",
            "pingapp:app",
            "--poll-interval",
            "0.2",
            *options,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_schedule_given_on_the_command_line_enqueues_its_ticks(tmp_path: Path) -> None:
    (tmp_path / "pingapp.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    proc = _worker(tmp_path, url, "--periodic", "ping=every 1s")
    try:
        with qw.open(url, namespace="cli") as client:
            deadline = time.monotonic() + 30
            done: list[qw.Job] = []
            while time.monotonic() < deadline and len(done) < 2:
                time.sleep(0.2)
                jobs = client.list_jobs(status=qw.JobStatus.SUCCEEDED)
                done = [j for j in jobs if j.id.startswith("ping@")]
            assert len(done) >= 2, proc.stderr.read() if proc.poll() is not None else done
            assert all(tick_of(j.id) is not None and j.result == "pong" for j in done)
            (schedule,) = client.schedules()
            assert (schedule.name, schedule.spec, schedule.task) == ("ping", "every 1s", "ping")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_a_bad_periodic_option_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pingapp.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    for bad, says in [
        ("nosuch=every 1s", "one of the app's tasks (ping)"),
        ("ping", "expected TASK=SPEC"),
        ("ping=61 * * * *", "--periodic"),
    ]:
        proc = _worker(tmp_path, url, "--periodic", bad)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert says in err
