"""``qw workflows list|show|cancel``, and workflow steps in ``jobs``, ``events`` and ``demo``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from unit_helpers import run

import qw
from qw.cli._common import EXIT_NOT_FOUND, EXIT_USAGE, exit_code_for
from qw.cli.jobs import SHOW_STEP_IDS
from qw.cli.workflows import SHOW_CHILDREN, SHOW_DEPTH, draw_tree, step_order
from qw.model import Job, JobStatus, NewJob, ParentFailure

S = JobStatus
NS = "wfcli"
HOSTILE = "evil\x1b]0;pwned\x07\r\n\u202etask"
HOSTILE_SHOWN = "evil\\x1b]0;pwned\\x07\\r\\n\\u202etask"


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, memory_url: str, tmp_path: Path) -> str:
    return memory_url if request.param == "memory" else f"sqlite:///{tmp_path / 'wf.db'}"


@pytest.fixture
def client(url: str) -> Iterator[qw.Client]:
    with qw.open(url, namespace=NS) as c:
        yield c


def qw_cli(url: str, *args: str, code: int = 0) -> Result:
    result = run(*args, "--url", url, "--namespace", NS)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def step(job_id: str, *parents: str, task: str = "t", queue: str = "q") -> NewJob:
    return NewJob(queue, {"task": task, "args": [], "kwargs": {}}, id=job_id, parents=parents)


def diamond(client: qw.Client, wf: str = "d") -> None:
    """wf.1 -> wf.2, wf.3 -> wf.4 (wf.4's first parent is wf.3)."""
    client.create_workflow(
        wf,
        [
            step(f"{wf}.1", task="fetch"),
            step(f"{wf}.2", f"{wf}.1", task="left"),
            step(f"{wf}.3", f"{wf}.1", task="right"),
            step(f"{wf}.4", f"{wf}.3", f"{wf}.2", task="join"),
        ],
        output=f"{wf}.4",
    )


def drain(client: qw.Client, fail: tuple[str, ...] = ()) -> None:
    """Claim and finish every claimable step, in rounds, until none is left."""
    while claims := client.claim(["q"], worker="w", limit=100):
        for c in claims:
            if c.job.id in fail:
                client.fail(c.lease, {"type": "Boom"})
            else:
                client.complete(c.lease, c.job.id)


def tree_lines(output: str) -> list[str]:
    """The drawn rows of ``workflows show``: from the STEP header to the end, no header."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("STEP "))
    return [line.rstrip() for line in lines[start + 1 :]]


def first_column(line: str) -> str:
    """The STEP cell of a step's row: the tree's lines, then the id (which has no spaces)."""
    found = re.match(r"[│├└─ ]*\S+", line)
    assert found, line
    return found.group(0)


# -- list ----------------------------------------------------------------------


def test_list_shows_state_and_steps_by_status(url: str, client: qw.Client) -> None:
    assert qw_cli(url, "workflows", "list").output == "no workflows\n"
    assert json.loads(qw_cli(url, "workflows", "list", "--json").output) == []
    diamond(client, "a")
    diamond(client, "b")
    drain(client)

    out = qw_cli(url, "workflows", "list").output.splitlines()
    assert out[0].split() == [
        "ID", "STATE", "STEPS", "WAITING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED",
        "CANCELLED", "CREATED", "FINISHED",
    ]  # fmt: skip
    assert out[1].split()[:9] == ["a", "succeeded", "4", "0", "0", "0", "4", "0", "0"]
    assert out[2].split()[:9] == ["b", "succeeded", "4", "0", "0", "0", "4", "0", "0"]

    diamond(client, "c")
    listed = json.loads(qw_cli(url, "workflows", "list", "--json").output)
    assert [w["id"] for w in listed] == ["a", "b", "c"]
    c = listed[2]
    assert (c["state"], c["steps"], c["output"], c["finished_at"]) == ("running", 4, "c.4", None)
    assert c["counts"] == {
        "waiting": 3, "queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0
    }  # fmt: skip
    assert "\nc   running " in qw_cli(url, "workflows", "list").output
    assert listed[0]["finished_at"] is not None

    running = json.loads(qw_cli(url, "workflows", "list", "-s", "running", "--json").output)
    assert [w["id"] for w in running] == ["c"]
    paged = json.loads(
        qw_cli(url, "workflows", "list", "--after", "a", "--limit", "1", "--json").output
    )
    assert [w["id"] for w in paged] == ["b"]


@pytest.mark.parametrize(
    "args",
    [
        ["--state", "waiting"],
        ["--state", "bogus"],
        ["--limit", "0"],
        ["--limit", "10001"],
        ["--after", "bad id!"],
        ["--after", "x" * 41],
    ],
)
def test_list_refuses_bad_input_with_exit_2(memory_url: str, args: list[str]) -> None:
    result = qw_cli(memory_url, "workflows", "list", *args, code=EXIT_USAGE)
    assert result.stdout == ""


# -- show ----------------------------------------------------------------------


def test_show_draws_a_diamond_with_the_fan_in_drawn_once(url: str, client: qw.Client) -> None:
    diamond(client)
    (first,) = client.claim(["q"], worker="w")
    client.complete(first.lease, "fetched")

    out = qw_cli(url, "workflows", "show", "d").output
    header = out.split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in header] == [
        "workflow", "state", "output", "created", "finished", "steps"
    ]  # fmt: skip
    assert "steps     4 steps: 1 waiting, 2 queued, 1 succeeded" in out
    assert "finished  -" in out
    lines = tree_lines(out)
    assert [first_column(line) for line in lines] == [
        "d.1",
        "├─ d.2",
        "│  └─ d.4",
        "└─ d.3",
        "   └─ d.4",
    ]
    assert lines[0].split()[1:4] == ["fetch", "succeeded", "1"]
    assert lines[1].split()[2:5] == ["left", "queued", "0"]
    # Under d.2 (not its first parent) d.4 is a reference; under d.3 it is drawn.
    assert lines[2].endswith("(see under d.3)")
    assert lines[4].split()[2:5] == ["join", "waiting", "0"]
    assert "not every step is drawn" not in out


def test_show_times_each_step(url: str, client: qw.Client) -> None:
    diamond(client)
    drain(client)
    out = qw_cli(url, "workflows", "show", "d").output
    assert "state     succeeded" in out
    for line in tree_lines(out):
        if "(see under" in line:
            continue
        assert re.search(r"succeeded +1 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+(ms|\.\d\ds)$", line)


def test_show_table_lists_every_step_flat(url: str, client: qw.Client) -> None:
    diamond(client)
    out = qw_cli(url, "workflows", "show", "d", "--table").output
    lines = tree_lines(out)
    assert [line.split()[0] for line in lines] == ["d.1", "d.2", "d.3", "d.4"]
    assert lines[3].split()[1:4] == ["join", "waiting", "0"]
    assert lines[3].endswith("d.3, d.2")
    assert lines[0].endswith("-")


def test_show_json_has_the_workflow_and_every_step_with_its_edges(
    url: str, client: qw.Client
) -> None:
    diamond(client)
    shown = json.loads(qw_cli(url, "workflows", "show", "d", "--json").output)
    assert shown["workflow"]["id"] == "d"
    assert shown["workflow"]["counts"]["waiting"] == 3
    steps = {s["id"]: s for s in shown["steps"]}
    assert list(steps) == ["d.1", "d.2", "d.3", "d.4"]
    assert steps["d.1"]["children"] == ["d.2", "d.3"]
    assert steps["d.4"]["parents"] == ["d.3", "d.2"]
    assert steps["d.4"]["workflow"] == "d"
    assert steps["d.4"]["on_parent_failure"] == "cancel"
    assert steps["d.4"]["payload"]["task"] == "join"


def test_show_escapes_a_hostile_task_name(url: str, client: qw.Client) -> None:
    client.create_workflow(
        "h", [step("h.1", task="fine"), step("h.2", "h.1", task=HOSTILE)], output="h.2"
    )
    for args in ([], ["--table"], ["--all"]):
        out = qw_cli(url, "workflows", "show", "h", *args).output
        assert HOSTILE_SHOWN in out
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", out)
    raw = qw_cli(url, "workflows", "show", "h", "--json").output
    assert "\x1b" not in raw
    assert "\u202e" not in raw
    assert json.loads(raw)["steps"][1]["payload"]["task"] == HOSTILE
    listed = qw_cli(url, "jobs", "list", "--workflow", "h").output
    assert HOSTILE_SHOWN in listed


def test_show_caps_a_fan_out_of_ten_thousand(memory_url: str) -> None:
    with qw.open(memory_url, namespace=NS) as client:
        fan = [step("f.1", task="split")] + [step(f"f.{i}", "f.1") for i in range(2, 10_002)]
        client.create_workflow("f", fan)
    out = qw_cli(memory_url, "workflows", "show", "f").output
    lines = tree_lines(out)
    assert len(lines) == 1 + SHOW_CHILDREN + 1 + 1
    assert first_column(lines[0]) == "f.1"
    # Children in the order they were added: f.2 .. f.21, not f.10 after f.1.
    assert [first_column(x) for x in lines[1 : 1 + SHOW_CHILDREN]] == [
        f"├─ f.{i}" for i in range(2, 2 + SHOW_CHILDREN)
    ]
    assert lines[1 + SHOW_CHILDREN] == f"└─ … and {10_000 - SHOW_CHILDREN} more"
    assert lines[-1] == "(not every step is drawn: --all draws them all, --table lists them)"

    everything = tree_lines(qw_cli(memory_url, "workflows", "show", "f", "--all").output)
    assert len(everything) == 10_001
    assert first_column(everything[-1]) == "└─ f.10001"
    table = tree_lines(qw_cli(memory_url, "workflows", "show", "f", "--table").output)
    assert [line.split()[0] for line in table[:3]] == ["f.1", "f.2", "f.3"]
    assert len(table) == 10_001


def test_show_caps_many_roots_and_a_long_chain(memory_url: str) -> None:
    with qw.open(memory_url, namespace=NS) as client:
        client.create_workflow("r", [step(f"r.{i}") for i in range(1, SHOW_CHILDREN + 6)])
        chain = [step("c.1")] + [step(f"c.{i}", f"c.{i - 1}") for i in range(2, SHOW_DEPTH + 6)]
        client.create_workflow("c", chain)
    roots = tree_lines(qw_cli(memory_url, "workflows", "show", "r").output)
    assert [first_column(x) for x in roots[:3]] == ["r.1", "r.2", "r.3"]
    assert roots[SHOW_CHILDREN] == "… and 5 more"

    lines = tree_lines(qw_cli(memory_url, "workflows", "show", "c").output)
    assert len(lines) == SHOW_DEPTH + 2
    assert first_column(lines[SHOW_DEPTH - 1]).endswith(f"└─ c.{SHOW_DEPTH}")
    assert lines[SHOW_DEPTH].endswith("└─ … 5 more steps below")
    full = tree_lines(qw_cli(memory_url, "workflows", "show", "c", "--all").output)
    assert len(full) == SHOW_DEPTH + 5


def test_show_refuses_a_bad_id_and_reports_an_unknown_one(memory_url: str) -> None:
    bad = qw_cli(memory_url, "workflows", "show", "bad id!", code=EXIT_USAGE)
    assert bad.stderr.startswith("qw: error: InvalidWorkflow: invalid workflow id")
    assert bad.stdout == ""
    missing = qw_cli(memory_url, "workflows", "show", "nope", code=EXIT_NOT_FOUND)
    assert missing.stderr == ("qw: error: WorkflowNotFound: no workflow 'nope' in this namespace\n")
    assert exit_code_for(qw.WorkflowNotFound("x")) == EXIT_NOT_FOUND
    hostile = qw_cli(memory_url, "workflows", "show", "a\x1b[2Jb", code=EXIT_USAGE)
    assert "\x1b" not in hostile.output


def test_draw_tree_puts_a_step_under_its_first_parent_even_when_met_later() -> None:
    def job(job_id: str, parents: tuple[str, ...], children: tuple[str, ...]) -> Job:
        when = datetime.now(UTC)
        return Job(
            job_id, "q", None, 0, when, 3, 0, S.WAITING, when,
            workflow="x", parents=parents, children=children,
        )  # fmt: skip

    # x.4's first parent is x.3, drawn after x.2: the reference comes first.
    steps = [
        job("x.1", (), ("x.2", "x.3")),
        job("x.2", ("x.1",), ("x.4",)),
        job("x.3", ("x.1",), ("x.4",)),
        job("x.4", ("x.3", "x.2"), ()),
    ]
    rows, cut = draw_tree(steps)
    assert [(r[0], r[1]) for r in rows] == [
        ("x.1", "-"),
        ("├─ x.2", "-"),
        ("│  └─ x.4", "(see under x.3)"),
        ("└─ x.3", "-"),
        ("   └─ x.4", "-"),
    ]
    assert cut is False
    assert sorted(["w.10", "w.2", "w.1"], key=step_order) == ["w.1", "w.2", "w.10"]


# -- cancel --------------------------------------------------------------------


def test_cancel_prints_the_state_and_counts_after(url: str, client: qw.Client) -> None:
    diamond(client)
    (running,) = client.claim(["q"], worker="w")
    out = qw_cli(url, "workflows", "cancel", "d").output
    assert out == (
        "d running (cancel requested; 1 running step left to their workers): "
        "4 steps: 1 running, 3 cancelled\n"
    )
    assert qw_cli(url, "workflows", "list", "--json").output.count('"cancel_requested": true') == 1
    assert "cancel    requested" in qw_cli(url, "workflows", "show", "d").output
    client.abort(running.lease)
    after = json.loads(qw_cli(url, "workflows", "cancel", "d", "--json").output)
    assert (after["state"], after["cancel_requested"]) == ("cancelled", True)
    assert after["counts"]["cancelled"] == 4
    assert qw_cli(url, "workflows", "cancel", "d").output == "d cancelled: 4 steps: 4 cancelled\n"

    diamond(client, "e")
    drain(client)
    assert qw_cli(url, "workflows", "cancel", "e").output == (
        "e succeeded (it had ended; nothing to cancel): 4 steps: 4 succeeded\n"
    )


def test_cancel_of_a_workflow_without_running_steps_ends_it(url: str, client: qw.Client) -> None:
    diamond(client)
    assert qw_cli(url, "workflows", "cancel", "d").output == "d cancelled: 4 steps: 4 cancelled\n"
    assert client.get_workflow("d").state.value == "cancelled"


def test_cancel_refuses_a_bad_id_and_reports_an_unknown_one(memory_url: str) -> None:
    qw_cli(memory_url, "workflows", "cancel", "bad id!", code=EXIT_USAGE)
    missing = qw_cli(memory_url, "workflows", "cancel", "nope", code=EXIT_NOT_FOUND)
    assert "WorkflowNotFound" in missing.stderr
    qw_cli(memory_url, "workflows", "cancel", code=EXIT_USAGE)


# -- jobs ----------------------------------------------------------------------


def test_jobs_show_gives_a_steps_edges_and_nothing_extra_for_a_plain_job(
    url: str, client: qw.Client
) -> None:
    diamond(client)
    drain(client, fail=("d.1",))  # d.1 fails: d.2, d.3 and then d.4 are cancelled
    fields = _fields(qw_cli(url, "jobs", "show", "d.4").output)
    assert fields["workflow"] == "d"
    assert fields["parents"] == "d.3, d.2"
    assert fields["children"] == "-"
    assert fields["on_parent_failure"] == "cancel"
    assert fields["failed_parents"] == "d.3, d.2"
    assert fields["status"] == "cancelled"
    assert _fields(qw_cli(url, "jobs", "show", "d.1").output)["children"] == "d.2, d.3"

    plain = client.enqueue_one("q", {"task": "t"}).id
    fields = _fields(qw_cli(url, "jobs", "show", plain).output)
    assert fields["status"] == "queued"
    assert not {"workflow", "parents", "children", "on_parent_failure", "failed_parents"} & set(
        fields
    )
    data = json.loads(qw_cli(url, "jobs", "show", plain, "--json").output)
    assert (data["workflow"], data["parents"]) == (None, [])


def test_jobs_show_caps_a_long_list_of_children(memory_url: str) -> None:
    with qw.open(memory_url, namespace=NS) as client:
        fan = [step("f.1")] + [step(f"f.{i}", "f.1") for i in range(2, 102)]
        client.create_workflow("f", fan)
        fan_in = NewJob(
            "q", None, id="g.3", parents=("g.1", "g.2"), on_parent_failure=ParentFailure.RUN
        )
        client.create_workflow("g", [step("g.1"), step("g.2"), fan_in])
    children = _fields(qw_cli(memory_url, "jobs", "show", "f.1").output)["children"]
    first = ", ".join(f"f.{i}" for i in range(2, 2 + SHOW_STEP_IDS))
    assert children == f"{first} … and {100 - SHOW_STEP_IDS} more (--json lists them all)"
    shown = json.loads(qw_cli(memory_url, "jobs", "show", "f.1", "--json").output)
    assert len(shown["children"]) == 100
    assert _fields(qw_cli(memory_url, "jobs", "show", "g.3").output)["on_parent_failure"] == "run"


def _fields(output: str) -> dict[str, str]:
    """``jobs show``'s lines: each a field's name, spaces, its value."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def test_jobs_list_of_one_workflow(url: str, client: qw.Client) -> None:
    diamond(client, "a")
    diamond(client, "b")
    client.enqueue_one("q", {"task": "plain"})
    listed = json.loads(qw_cli(url, "jobs", "list", "--workflow", "b", "--json").output)
    assert [j["id"] for j in listed] == ["b.1", "b.2", "b.3", "b.4"]
    waiting = json.loads(qw_cli(url, "jobs", "list", "-w", "b", "-s", "waiting", "--json").output)
    assert [j["id"] for j in waiting] == ["b.2", "b.3", "b.4"]
    assert "waiting" in qw_cli(url, "jobs", "list", "-w", "a").output
    qw_cli(url, "jobs", "list", "--workflow", "bad id!", code=EXIT_USAGE)
    assert qw_cli(url, "jobs", "list", "-w", "nope").output == "no jobs\n"


def test_jobs_retry_leaves_workflow_steps_alone(url: str, client: qw.Client) -> None:
    client.create_workflow("r", [step("r.1")])
    drain(client, fail=("r.1",))
    plain = client.enqueue_one("q", {"task": "t"}, max_attempts=1).id
    drain(client, fail=(plain,))
    for how in ([], ["--as-new"]):
        refused = qw_cli(url, "jobs", "retry", "r.1", *how, code=EXIT_USAGE)
        assert "step of workflow" in refused.stderr
    assert client.get("r.1").status is qw.JobStatus.FAILED
    again = qw_cli(url, "jobs", "retry", "--all-failed")
    assert again.stdout == f"{plain} queued\n"
    assert "skipped 1 failed workflow step(s)" in again.stderr


# -- events --------------------------------------------------------------------


def test_events_tail_shows_workflow_events_in_the_columns(url: str, client: qw.Client) -> None:
    plain = client.enqueue_one("q", {"task": "t"}, delay=3600).id
    client.cancel(plain)
    client.create_workflow("ev", [step("ev.1")])
    drain(client)
    lines = qw_cli(url, "events", "tail").output.splitlines()
    assert len(lines) == 2
    job_line, flow_line = lines
    assert job_line.split()[3:5] == ["job.cancelled", plain]
    assert flow_line.split()[3:5] == ["workflow.succeeded", "ev"]
    # The id column starts at the same place for both; for the workflow it is its id.
    assert job_line.index(f" {plain} ") == flow_line.index(" ev ")
    assert flow_line.endswith(' ev  {"workflow":"ev","state":"succeeded"}')
    parsed = [json.loads(x) for x in qw_cli(url, "events", "tail", "--json").output.splitlines()]
    assert parsed[1]["type"] == "workflow.succeeded"
    assert parsed[1]["job_id"] == "ev"
    assert parsed[1]["data"] == {"workflow": "ev", "state": "succeeded"}


def test_events_tail_shows_a_cancelled_workflow(url: str, client: qw.Client) -> None:
    client.create_workflow("x", [step("x.1"), step("x.2", "x.1")])
    client.cancel_workflow("x")
    lines = qw_cli(url, "events", "tail").output.splitlines()
    assert [line.split()[3:5] for line in lines] == [
        ["job.cancelled", "x.1"],
        ["job.cancelled", "x.2"],
        ["workflow.cancelled", "x"],
    ]


# -- demo ----------------------------------------------------------------------


def test_demo_runs_its_workflow_and_reports_the_result(memory_url: str) -> None:
    result = run("demo", "--jobs", "40", "--url", memory_url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "jobs        50 (5 cancelled by an operator, 5 workflow steps)" in out
    assert "workflow    demo-sales: fetch -> 3 tallies in parallel -> report, succeeded" in out
    line = next(x for x in out.splitlines() if x.startswith("  result"))
    report = json.loads(line.split(None, 1)[1])
    assert report["regions"] == ["eu", "us", "apac"]
    assert report["orders"] == 10 + 11 + 12
    assert "1 workflow.succeeded" in out
    assert f"qw workflows show demo-sales --url {memory_url} --namespace demo" in out
    shown = json.loads(
        run(
            "workflows", "show", "demo-sales", "--url", memory_url, "--namespace", "demo", "--json"
        ).output
    )
    assert shown["workflow"]["state"] == "succeeded"
    assert [s["status"] for s in shown["steps"]] == ["succeeded"] * 5
