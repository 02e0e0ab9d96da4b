"""Progress in ``f:prog`` and result wake-ups on the ``ended`` channel, single and Cluster.

The contract suites check the semantics; these check what is Redis's own:
a version-3 namespace (no ``f:prog``) opens and reads as jobs without
progress, each script call that ends jobs publishes once, and a waiter is
woken by that message rather than by a poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import qw
from qw.model import PROGRESS_EVENT, Complete, JobStatus, Lease, NewJob, Progress
from qw_redis import RedisBackend
from qw_redis.keys import SCHEMA_VERSION, Keyspace
from qw_testkit.base import new_namespace

from .servers import drop_namespaces
from .test_invariants import _raw, check_invariants
from .test_migrate import LATER, _v2_job


@pytest.fixture
def client(url: str) -> Iterator[qw.Client]:
    namespace = new_namespace()
    c = qw.open(url, namespace=namespace)
    try:
        yield c
    finally:
        c.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def _backend(client: qw.Client) -> RedisBackend:
    assert isinstance(client.backend, RedisBackend)
    return client.backend


def test_a_version_3_namespace_opens_and_reads_as_jobs_without_progress(url: str) -> None:
    # A version-3 job is a version-2 one (limits add only optional fields).
    namespace = new_namespace()
    keys = Keyspace(namespace)
    r = _raw(url)
    p = keys.prefix
    r.set(p + "schema", 3)
    _v2_job(r, keys, "old", "q", 1, payload="first")
    _v2_job(r, keys, "run", "q", 2, status="running", att=1, token="t:1:q", worker="w", lease=LATER)
    r.zadd(p + "running", {"run": LATER})
    r.set(p + "seq", 2)
    client = qw.open(url, namespace=namespace)
    try:
        assert r.get(p + "schema") == str(SCHEMA_VERSION) == "4"
        assert [j.progress for j in client.get_many(["old", "run"]) if j] == [None, None]
        (claim,) = client.claim(["q"], worker="w2", limit=1)
        assert claim.job.id == "old"
        assert claim.job.progress is None
        # The version-3 lease reports progress like any other.
        lease = Lease("run", "t:1:q", claim.lease.expires_at, attempt=1, max_attempts=3)
        client.set_progress(lease, 0.5, "half")
        got = client.get("run").progress
        assert got is not None
        assert (got.fraction, got.message) == (0.5, "half")
        check_invariants(r, keys, ["q"])
    finally:
        client.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_progress_is_stored_fenced_and_committed_with_its_event(client: qw.Client) -> None:
    client.enqueue([NewJob("q", 1)])
    (claim,) = client.claim(["q"], worker="w", limit=1)
    before = client.now()
    client.set_progress(claim.lease, 0.25, "a b\nc")  # the message may hold anything
    client.set_progress(claim.lease, None, "")  # "" is not None
    got = client.get(claim.job.id).progress
    assert isinstance(got, Progress)
    assert (got.fraction, got.message) == (None, "")
    assert before <= got.at <= client.now()
    events = [e for e in client.fetch_events(100) if e.type == PROGRESS_EVENT]
    assert [e.data for e in events] == [
        {"fraction": 0.25, "message": "a b\nc"},
        {"fraction": None, "message": ""},
    ]
    # A stale lease writes nothing: not the job, not an event.
    stale = Lease(claim.lease.job_id, "x:1:q", claim.lease.expires_at, attempt=1, max_attempts=3)
    with pytest.raises(qw.LeaseLost):
        client.set_progress(stale, 1.0)
    wrong_attempt = Lease(
        claim.lease.job_id, claim.lease.token, claim.lease.expires_at, attempt=2, max_attempts=3
    )
    with pytest.raises(qw.LeaseLost):
        client.set_progress(wrong_attempt, 1.0)
    assert client.get(claim.job.id).progress == got
    assert len([e for e in client.fetch_events(100) if e.type == PROGRESS_EVENT]) == 2
    # It stays after the job ends; an ended job takes no more.
    client.complete(claim.lease, "ok")
    assert client.get(claim.job.id).progress == got
    with pytest.raises(qw.LeaseLost):
        client.set_progress(claim.lease, 1.0)


def _ended_messages(url: str, keys: Keyspace) -> tuple[Any, list[str], threading.Event]:
    """Subscribe the ended channel; the subscriber, the messages it got, a stop flag."""
    r = _raw(url)
    cluster = url.startswith("redis+cluster://")
    if cluster:
        node = r.get_node_from_key(keys.ended_channel)
        r.close()
        r = _raw(f"redis://{node.host}:{node.port}")
    pubsub = r.pubsub()
    if cluster:
        pubsub.ssubscribe(keys.ended_channel)
    else:
        pubsub.subscribe(keys.ended_channel)
    while (m := pubsub.get_message(timeout=1.0)) is None or "subscribe" not in m["type"]:
        pass
    got: list[str] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            m = pubsub.get_message(timeout=0.05)
            if m is not None and m["type"] in ("message", "smessage"):
                got.append(m["data"])
        pubsub.close()
        r.close()

    threading.Thread(target=run, daemon=True).start()
    return pubsub, got, stop


def test_each_call_that_ends_jobs_publishes_once_naming_them(url: str, client: qw.Client) -> None:
    keys = Keyspace(client.namespace)
    _, got, stop = _ended_messages(url, keys)
    try:
        ids = [a.id for a in client.enqueue([NewJob("q", i) for i in range(5)])]
        claims = client.claim(["q"], worker="w", limit=3)
        client.finish([Complete(c.lease, i) for i, c in enumerate(claims)])
        # A retry ends nothing: no message.
        (c4,) = client.claim(["q"], worker="w", limit=1)
        client.fail(c4.lease, "boom", retry_in=0)
        assert client.cancel(ids[4]) is JobStatus.CANCELLED
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # nothing else may follow
        assert got == [" ".join(c.job.id for c in claims), ids[4]]
    finally:
        stop.set()


def test_wait_finished_is_woken_by_the_message_not_a_poll(url: str) -> None:
    namespace = new_namespace()
    # A poll interval far above the delay: only the message can wake the wait in time.
    slow = url + ("&" if "?" in url else "?") + "poll_interval=30"
    waiter = qw.open(slow, namespace=namespace)
    other = qw.open(url, namespace=namespace)
    try:
        (job,) = other.enqueue([NewJob("q", 1)])
        (claim,) = other.claim(["q"], worker="w", limit=1)
        assert waiter.wait_finished(job.id, 0.05).status is JobStatus.RUNNING
        ended_at: list[float] = []

        def finish_later() -> None:
            time.sleep(0.3)
            ended_at.append(time.monotonic())
            other.complete(claim.lease, "ok")

        thread = threading.Thread(target=finish_later)
        thread.start()
        got = waiter.wait_finished(job.id, 10.0)
        woke = time.monotonic()
        thread.join()
        assert got.status is JobStatus.SUCCEEDED
        assert got.result == "ok"
        assert woke - ended_at[0] < 0.5
    finally:
        waiter.close()
        other.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_wait_finished_answers_at_timeout_and_none_for_an_unknown_job(client: qw.Client) -> None:
    backend = _backend(client)
    (job,) = client.enqueue([NewJob("q", 1)])
    started = time.monotonic()
    got = backend.wait_finished(job.id, 0.3)
    assert got is not None
    assert got.status is JobStatus.QUEUED
    assert 0.3 <= time.monotonic() - started < 2.0
    assert backend.wait_finished("nope", 0.1) is None
    assert backend._ended._watching == {}  # a wait leaves no flag behind


def test_reclaim_to_failed_a_settle_and_a_workflow_cancel_each_publish_once(
    url: str, client: qw.Client
) -> None:
    keys = Keyspace(client.namespace)
    _, got, stop = _ended_messages(url, keys)
    try:
        # Two expired leases on their last attempt: one reclaim call fails both.
        client.enqueue([NewJob("r", i, id=f"last{i}", max_attempts=1) for i in range(2)])
        client.claim(["r"], worker="w", lease_s=0.01, limit=2)
        time.sleep(0.05)
        assert client.reclaim_expired() == 2
        # A step that fails cancels its waiting child in the same script: one message.
        client.create_workflow(
            "wf",
            [
                NewJob("a", 1, id="wf.p", max_attempts=1),
                NewJob("b", 2, id="wf.c", parents=("wf.p",)),
            ],
        )
        (parent,) = client.claim(["a"], worker="w", limit=1)
        client.fail(parent.lease, "boom")
        # A workflow cancel ends its queued and waiting steps in one script.
        client.create_workflow(
            "wg",
            [NewJob("a", 1, id="wg.p"), NewJob("b", 2, id="wg.c", parents=("wg.p",))],
        )
        client.cancel_workflow("wg")
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert [sorted(m.split(" ")) for m in got] == [
            ["last0", "last1"],
            ["wf.c", "wf.p"],
            ["wg.c", "wg.p"],
        ]
    finally:
        stop.set()
