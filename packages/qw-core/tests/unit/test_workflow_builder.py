"""What app.workflow() stores: ids, parents, refs, options; and what it refuses before any write."""

from __future__ import annotations

import uuid

import pytest

import qw
from qw.model import JobStatus, ParentFailure
from qw.payload import decode_task_payload, resolve_refs


@pytest.fixture
def app() -> qw.App:
    app = qw.App("memory://builder", namespace=f"b{uuid.uuid4().hex[:12]}")

    @app.task(name="t.one", queue="q1", priority=3)
    def one(x: object = None, *rest: object, **kw: object) -> object:
        return x

    @app.task(name="t.two", queue="q2")
    def two(*xs: object) -> object:
        return xs

    return app


def test_steps_get_derived_ids_parents_and_refs(app: qw.App) -> None:
    one, two = app.tasks["t.one"], app.tasks["t.two"]
    wf = app.workflow("flow")
    a = wf.add(one, 1)
    b = wf.add(two, a, "x", key=a)
    parts = wf.map(one, [a, b])
    c = wf.add(two, parts, after=[b], on_parent_failure="run")
    assert [a.id, b.id, c.id] == ["flow.1", "flow.2", "flow.5"]
    steps = {s.id: s for s in wf.steps}
    assert steps["flow.1"].parents == ()
    assert (steps["flow.1"].queue, steps["flow.1"].priority) == ("q1", 3)
    assert steps["flow.2"].parents == ("flow.1",)
    assert steps["flow.2"].payload == {
        "task": "t.two",
        "args": [None, "x"],
        "kwargs": {"key": None},
        "refs": [[0, "flow.1"], ["key", "flow.1"]],
    }
    assert steps["flow.5"].parents == ("flow.3", "flow.4", "flow.2")
    assert steps["flow.5"].on_parent_failure is ParentFailure.RUN
    call = decode_task_payload(steps["flow.5"].payload)
    assert call.refs == ((0, ["flow.3", "flow.4"]),)
    assert resolve_refs(call, {"flow.3": 3}) == ([[3, None]], {})


def test_options_ride_on_task_options(app: qw.App) -> None:
    wf = app.workflow("opts")
    wf.add(app.tasks["t.one"].options(queue="gpu", priority=-1, max_attempts=7), 1)
    (step,) = wf.steps
    assert (step.queue, step.priority, step.max_attempts) == ("gpu", -1, 7)


def test_enqueue_stores_all_steps_and_is_idempotent(app: qw.App) -> None:
    wf = app.workflow("idem")
    wf.add(app.tasks["t.two"], wf.add(app.tasks["t.one"], 1))
    handle = wf.enqueue()
    assert handle.created
    status = handle.status()
    assert status.output == "idem.2"
    assert status.counts == {JobStatus.QUEUED: 1, JobStatus.WAITING: 1}
    again = app.workflow("idem")
    again.add(app.tasks["t.one"], 99)
    assert again.enqueue().created is False
    assert [s.payload["args"] for s in handle.steps()] == [[1], [None]]  # type: ignore[index,call-overload]


def test_a_default_id_is_new_each_time(app: qw.App) -> None:
    assert app.workflow().id != app.workflow().id
    assert app.workflow().id.startswith("wf-")


@pytest.mark.parametrize(
    "build",
    [
        lambda app, wf: wf.add(app.tasks["t.one"], app.workflow("other").add(app.tasks["t.one"])),
        lambda app, wf: wf.add(app.tasks["t.one"], {"nested": wf.add(app.tasks["t.one"])}),
        lambda app, wf: wf.add(app.tasks["t.one"], after=["flow.1"]),
        lambda app, wf: wf.add(app.tasks["t.one"], on_parent_failure="explode"),
        lambda app, wf: wf.enqueue(),
        lambda app, wf: app.workflow("bad id"),
        lambda app, wf: app.workflow("x" * 41),
    ],
)
def test_bad_workflows_are_refused_before_any_write(app: qw.App, build: object) -> None:
    wf = app.workflow("flow")
    with pytest.raises(qw.InvalidWorkflow):
        build(app, wf)  # type: ignore[operator]
    assert app.client.list_workflows() == []
    assert app.client.list_jobs() == []


def test_a_non_json_argument_is_refused_before_any_write(app: qw.App) -> None:
    wf = app.workflow("flow")
    wf.add(app.tasks["t.one"], object())
    with pytest.raises(qw.InvalidPayload):
        wf.enqueue()
    assert app.client.list_workflows() == []


def test_an_enqueued_builder_takes_no_more_steps(app: qw.App) -> None:
    wf = app.workflow("done")
    wf.add(app.tasks["t.one"])
    wf.enqueue()
    with pytest.raises(qw.InvalidWorkflow, match="enqueued"):
        wf.add(app.tasks["t.one"])


def test_result_waits_and_times_out(app: qw.App) -> None:
    wf = app.workflow("slow")
    wf.add(app.tasks["t.one"], 1)
    handle = wf.enqueue()
    with pytest.raises(qw.ResultTimeout):
        handle.result(timeout=0.05)
    claim = app.client.claim(["q1"], worker="w", limit=1)[0]
    app.client.complete(claim.lease, 41)
    assert handle.result(timeout=1) == 41
    assert app.workflow_handle("slow").result() == 41


def test_a_step_outside_a_workflow_cannot_extend_it(app: qw.App) -> None:
    with pytest.raises(qw.InvalidWorkflow):
        app.workflow("p").parent  # noqa: B018
