"""The Client checks everything before the backend sees it; bad input leaves the store as it was."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from unit_helpers import assert_refused

import qw
from qw.client import MAX_BATCH
from qw.errors import InvalidInput, InvalidName, InvalidPayload, JobNotFound, LeaseLost
from qw.model import JobStatus, NewJob, WorkerInfo


def snapshot(client: qw.Client) -> object:
    """Everything a write could change, to compare before and after."""
    return (
        client.list_jobs(limit=10_000),
        client.counts(),
        client.switches(),
        client.workers(),
        client.fetch_events(limit=10_000),
    )


def test_a_bad_job_anywhere_in_a_batch_writes_nothing(client: qw.Client) -> None:
    client.enqueue_one("q", 1)
    assert_refused(client, lambda: client.enqueue([NewJob("q", 2), NewJob("q", float("nan"))]))
    assert_refused(client, lambda: client.enqueue([NewJob("q", 2), NewJob("bad queue", 3)]))
    assert_refused(client, lambda: client.enqueue([NewJob("q", id="dup"), NewJob("q", id="dup")]))


def test_enqueue_refuses_oversized_payloads_and_batches(client: qw.Client) -> None:
    limit = client.capabilities.max_payload_bytes
    assert_refused(client, lambda: client.enqueue_one("q", "x" * limit), InvalidPayload)
    assert_refused(client, lambda: client.enqueue([NewJob("q") for _ in range(MAX_BATCH + 1)]))


def test_enqueue_refuses_a_bare_new_job(client: qw.Client) -> None:
    assert_refused(client, lambda: client.enqueue(NewJob("q")))  # type: ignore[arg-type]


def test_empty_batches_are_a_no_op(client: qw.Client) -> None:
    assert client.enqueue([]) == []
    assert client.finish([]) == []
    assert client.renew_many([]) == []
    assert client.ack_events([]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queues": "q"},
        {"queues": []},
        {"queues": ["bad queue"]},
        {"worker": ""},
        {"worker": "w" * 201},
        {"worker": None},
        {"lease_s": 0},
        {"lease_s": float("inf")},
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"limit": 1.0},
    ],
)
def test_claim_refuses_bad_arguments_and_claims_nothing(
    client: qw.Client, kwargs: dict[str, object]
) -> None:
    client.enqueue_one("q")
    args: dict[str, object] = {"queues": ["q"], "worker": "w", "lease_s": 30, "limit": 1}
    args.update(kwargs)
    queues = args.pop("queues")
    assert_refused(client, lambda: client.claim(queues, **args))  # type: ignore[arg-type]


def test_finish_checks_outcomes_before_writing(client: qw.Client) -> None:
    client.enqueue_one("q")
    (claim,) = client.claim(["q"], worker="w")
    lease = claim.lease
    assert_refused(client, lambda: client.complete(lease, float("nan")), InvalidPayload)
    assert_refused(client, lambda: client.fail(lease, {1: "x"}), InvalidPayload)
    assert_refused(client, lambda: client.fail(lease, retry_in=-1))
    assert_refused(client, lambda: client.fail(lease, retry_in=float("nan")))
    assert_refused(client, lambda: client.complete(lease, event=qw.EventSpec("bad type")))
    assert_refused(client, lambda: client.abort(lease, event=qw.EventSpec("e", float("inf"))))
    assert_refused(client, lambda: client.complete("not a lease"))  # type: ignore[arg-type]
    assert_refused(client, lambda: client.finish(["not an outcome"]))  # type: ignore[list-item]
    # A batch with one bad outcome applies none of them.
    assert_refused(
        client,
        lambda: client.finish([qw.Complete(lease), qw.Complete(lease, float("nan"))]),
    )
    assert client.get(lease.job_id).status is JobStatus.RUNNING
    assert client.complete(lease, "ok") is JobStatus.SUCCEEDED


def test_a_stale_lease_raises_lease_lost(client: qw.Client) -> None:
    client.enqueue_one("q")
    (claim,) = client.claim(["q"], worker="w")
    forged = replace(claim.lease, token="not-the-token")
    assert_refused(client, lambda: client.complete(forged), LeaseLost)
    assert_refused(client, lambda: client.renew(forged), LeaseLost)
    assert client.renew_many([forged]) == [None]


def test_renew_refuses_bad_lease_lengths(client: qw.Client) -> None:
    client.enqueue_one("q")
    (claim,) = client.claim(["q"], worker="w")
    assert_refused(client, lambda: client.renew(claim.lease, 0))
    assert_refused(client, lambda: client.renew(claim.lease, 86_401))


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), True, "1"])
def test_wait_refuses_bad_timeouts(client: qw.Client, timeout: object) -> None:
    with pytest.raises(InvalidInput):
        client.wait(["q"], timeout)  # type: ignore[arg-type]


def test_wait_refuses_bad_queues(client: qw.Client) -> None:
    with pytest.raises(InvalidName):
        client.wait(["a*"], 0)


def test_switches_refuse_bad_input(client: qw.Client) -> None:
    assert_refused(client, lambda: client.set_enabled("no"))  # type: ignore[arg-type]
    assert_refused(client, lambda: client.set_enabled(0))  # type: ignore[arg-type]
    assert_refused(client, lambda: client.set_enabled(False, queue="x'; --"), InvalidName)
    with pytest.raises(InvalidName):
        client.is_enabled("a b")


def test_heartbeat_refuses_bad_workers(client: qw.Client) -> None:
    assert_refused(client, lambda: client.heartbeat(WorkerInfo("")))
    assert_refused(client, lambda: client.heartbeat(WorkerInfo("w", queues=("bad queue",))))
    assert_refused(client, lambda: client.remove_worker(""))


def test_inspection_refuses_bad_input(client: qw.Client) -> None:
    for call in [
        lambda: client.get(""),
        lambda: client.get("x" * 65),
        lambda: client.find(None),  # type: ignore[arg-type]
        lambda: client.list_jobs(queue="a b"),
        lambda: client.list_jobs(status="bogus"),
        lambda: client.list_jobs(limit=0),
        lambda: client.list_jobs(limit=10_001),
        lambda: client.list_jobs(after=""),
        lambda: client.cancel(""),
        lambda: client.fetch_events(limit=0),
        lambda: client.ack_events(["1"]),  # type: ignore[list-item]
        lambda: client.ack_events([True]),
        lambda: client.purge(-1),
        lambda: client.purge(float("nan")),
    ]:
        assert_refused(client, call)


def test_unknown_jobs(client: qw.Client) -> None:
    with pytest.raises(JobNotFound):
        client.get("0190aaaa-0000-7000-8000-000000000000")
    assert client.find("0190aaaa-0000-7000-8000-000000000000") is None
    with pytest.raises(JobNotFound):
        client.cancel("nope")


def test_list_jobs_accepts_a_status_string(client: qw.Client) -> None:
    client.enqueue_one("q")
    assert len(client.list_jobs(status="queued")) == 1
    assert client.list_jobs(status=JobStatus.RUNNING) == []


def test_counts_fill_every_status(client: qw.Client) -> None:
    client.enqueue_one("q")
    assert client.counts() == {"q": {s: (1 if s is JobStatus.QUEUED else 0) for s in JobStatus}}


def test_enqueue_one_passes_options(client: qw.Client) -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    answer = client.enqueue_one("q", {"a": 1}, priority=-5, run_at=when, dedupe_key="k")
    job = client.get(answer.id)
    assert (job.priority, job.run_at, job.dedupe_key) == (-5, when, "k")
    again = client.enqueue_one("q", {"a": 2}, dedupe_key="k")
    assert again == qw.Enqueued(answer.id, created=False)


def test_client_is_a_context_manager_and_names_its_backend(memory_url: str) -> None:
    with qw.open(memory_url, namespace="ctx") as client:
        assert client.namespace == "ctx"
        assert "memory" in repr(client)
        assert client.now().tzinfo is not None


def test_open_validates_the_namespace_before_loading(memory_url: str) -> None:
    with pytest.raises(InvalidName):
        qw.open("nosuchbackend://x", namespace="Bad Name")


def test_open_reads_the_environment(monkeypatch: pytest.MonkeyPatch, memory_url: str) -> None:
    monkeypatch.setenv("QW_URL", memory_url)
    monkeypatch.setenv("QW_NAMESPACE", "from-env")
    with qw.open() as client:
        assert client.namespace == "from-env"
        assert client.backend.name == "memory"
