"""kill -9 of workers in the middle of workflows: no step stuck, none promoted twice.

Worker processes (``qw worker runtime_app:app``) run many small workflows
(a root, a fan-out of six, a fan-in, a chain of two; steps of 10 ms) while
the test kills one of them with SIGKILL every fraction of a second and
starts another, ``KILLS`` times (``QW_CRASH_KILLS``, default 100), adding
workflows so that every kill lands mid-workflow. Then the workers finish,
and:

- **no step is stuck**: every workflow ended ``succeeded``, every step too;
- **no step was promoted twice or early**: each step first started after the
  last start of every parent (a step promoted twice, or before its last
  parent ended, starts before one), and each got exactly the results of its
  parents as inputs;
- **one event each**: exactly one ``job.succeeded`` per step and one
  ``workflow.succeeded`` per workflow.

It runs on the stores several processes share (sqlite, postgres, redis).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Workers, events_by_job, read_lines, wait_until

import qw
from qw.model import JobStatus, WorkflowState

KILLS = int(os.environ.get("QW_CRASH_KILLS", "100"))
#: Workflows at the start; more are added whenever a quarter of this is left.
WORKFLOWS = 100
#: A worker is killed this long after it started its first step (whatever
#: its start-up took), so that it dies holding steps, mid-task or mid-write.
LIFE_S = (0.05, 0.4)


def test_kill_9_mid_workflow_leaves_nothing_stuck_and_promotes_once(
    process_app: qw.App, workers: Workers, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = process_app
    flows: list[str] = []
    _add_workflows(app, notes, flows, WORKFLOWS)

    rng = random.Random(12)
    options = ("--concurrency", "4", "--lease", "1.0", "--reclaim-interval", "0.2")
    alive = [workers.spawn(*options) for _ in range(3)]
    deaths: dict[int, float] = {}
    kills = 0
    deadline = time.monotonic() + max(120.0, KILLS * 2.0)
    while kills < KILLS:
        assert time.monotonic() < deadline, f"only {kills} kills in time"
        time.sleep(rng.uniform(0.05, 0.2))
        index = rng.randrange(len(alive))
        proc = alive[index]
        if proc.pid not in deaths:
            if str(proc.pid) in _pids_started(notes):
                deaths[proc.pid] = time.monotonic() + rng.uniform(*LIFE_S)
            continue
        if time.monotonic() < deaths[proc.pid]:
            continue
        if _unfinished(app, flows) < WORKFLOWS // 4:
            # Kill in the middle of workflows, never between them.
            _add_workflows(app, notes, flows, WORKFLOWS // 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        alive[index] = workers.spawn(*options)

    wait_until(lambda: _unfinished(app, flows) == 0, 180, "every workflow to end")
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    steps = [job for flow in flows for job in app.client.steps(flow)]
    stuck = [job.id for job in steps if job.status is not JobStatus.SUCCEEDED]
    states = Counter(app.client.get_workflow(flow).state for flow in flows)
    starts: dict[str, list[float]] = {}
    for line in read_lines(notes, "starts"):
        job_id, _attempt, _pid, at = line.split()
        starts.setdefault(job_id, []).append(float(at))
    early = [
        job.id
        for job in steps
        for parent in job.parents
        if min(starts[job.id]) < max(starts[parent])
    ]
    events = events_by_job(app)
    step_events = Counter(tuple(e.type for e in events.get(job.id, [])) for job in steps)
    flow_events = Counter(tuple(e.type for e in events.get(flow, [])) for flow in flows)
    reruns = sum(len(times) - 1 for times in starts.values())
    with capsys.disabled():  # the figures belong in the run's log, pass or fail
        print(
            f"\n{app.client.backend.name}: {kills} kill -9, {len(flows)} workflows, "
            f"{len(steps)} steps, {reruns} steps re-run after a kill, {len(stuck)} stuck, "
            f"{len(early)} promoted early or twice"
        )
    assert stuck == []
    assert states == {WorkflowState.SUCCEEDED: len(flows)}
    assert early == []
    assert read_lines(notes, "mismatch") == []
    assert step_events == {("job.succeeded",): len(steps)}
    assert flow_events == {("workflow.succeeded",): len(flows)}


def _pids_started(notes: Path) -> set[str]:
    return {line.split()[2] for line in read_lines(notes, "starts")}


def _add_workflows(app: qw.App, notes: Path, flows: list[str], n: int) -> None:
    """Add ``n`` workflows: a root, a fan-out of six, a fan-in, a chain of two."""
    echo = app.tasks["rt.wf.echo"]
    for _ in range(n):
        wf = app.workflow(f"crash-{len(flows)}")
        root = wf.add(echo, str(notes))
        fanout = [wf.add(echo, str(notes), root) for _ in range(6)]
        fanin = wf.add(echo, str(notes), fanout)
        wf.add(echo, str(notes), wf.add(echo, str(notes), fanin))
        flows.append(wf.enqueue().id)


def _unfinished(app: qw.App, flows: list[str]) -> int:
    return len(app.client.list_workflows(state=WorkflowState.RUNNING, limit=10_000))
