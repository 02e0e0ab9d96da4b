"""Bad input the client refuses before any I/O: a typed error, and the store unchanged.

These checks are :class:`qw.Client`'s, the same whatever the backend, so they
run here on the two built-in stores rather than in the kit for every backend
(the kit's ``BadInputTests`` keeps what reaches a store). Moved from
``qw_testkit.suite.bad_input`` unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import qw
from qw.backends.memory import MemoryBackend
from qw.backends.sqlite import SqliteBackend
from qw.model import EventSpec, NewJob, WorkerInfo
from qw.validation import (
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_CALL_BYTES,
    MAX_DELAY_S,
    MAX_JOB_ID_CHARS,
    MAX_SECONDS,
    MAX_WORKER_ID_CHARS,
)
from qw_testkit.base import ContractBase, snapshot
from qw_testkit.suite.bad_input import (
    BAD_NAMES,
    BAD_PAYLOADS,
    FAR_FUTURE,
    LONE_SURROGATE,
    UNSTORABLE_JSON,
)

#: A call that must be refused, given the client and the lease of a running job.
Call = Callable[[qw.Client, qw.Lease], object]


def _carry(client: qw.Client, claimed: qw.Lease, where: str, value: Any) -> object:
    """Send ``value`` to the store as a payload, result, error or event data."""
    if where == "payload":
        return client.enqueue_one("q", value)
    if where == "result":
        return client.complete(claimed, value)
    if where == "error":
        return client.fail(claimed, value)
    if where == "abort":
        return client.abort(claimed, value)
    return client.complete(claimed, event=EventSpec("e", value))


class ClientBadInputTests(ContractBase):
    def _refused(self, client: qw.Client, call: Call, error: type[Exception]) -> None:
        """``call`` raises ``error`` and leaves everything observable as it was."""
        client.enqueue_one("q", "bystander", dedupe_key="bystander")
        client.enqueue_one("q", "claimed")
        (claim,) = client.claim(["q"], worker="w", limit=1)
        before = snapshot(client)
        with pytest.raises(error):
            call(client, claim.lease)
        assert snapshot(client) == before

    @pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
    @pytest.mark.parametrize(
        "use",
        ["enqueue", "batch", "claim", "set_enabled", "is_enabled", "list_jobs", "heartbeat"],
    )
    def test_bad_queue_names_are_refused(self, client: qw.Client, name: str, use: str) -> None:
        calls: dict[str, Call] = {
            "enqueue": lambda c, _: c.enqueue_one(name, 1),
            "batch": lambda c, _: c.enqueue([NewJob("q", 1), NewJob(name, 2)]),
            "claim": lambda c, _: c.claim(["q", name], worker="w"),
            "set_enabled": lambda c, _: c.set_enabled(False, queue=name),
            "is_enabled": lambda c, _: c.is_enabled(name),
            "list_jobs": lambda c, _: c.list_jobs(queue=name),
            "heartbeat": lambda c, _: c.heartbeat(WorkerInfo("w", queues=("q", name))),
        }
        self._refused(client, calls[use], qw.InvalidName)

    @pytest.mark.parametrize(("kind", "payload"), BAD_PAYLOADS, ids=[k for k, _ in BAD_PAYLOADS])
    def test_non_json_payloads_are_refused(
        self, client: qw.Client, kind: str, payload: Any
    ) -> None:
        self._refused(client, lambda c, _: c.enqueue_one("q", payload), qw.InvalidPayload)

    @pytest.mark.parametrize(
        ("kind", "value"), BAD_PAYLOADS[:7], ids=[k for k, _ in BAD_PAYLOADS[:7]]
    )
    @pytest.mark.parametrize("where", ["result", "error", "abort", "event"])
    def test_non_json_results_errors_and_event_data_are_refused(
        self, client: qw.Client, kind: str, value: Any, where: str
    ) -> None:
        self._refused(
            client, lambda c, claimed: _carry(c, claimed, where, value), qw.InvalidPayload
        )

    def test_oversized_payload_is_refused(self, client: qw.Client) -> None:
        limit = client.capabilities.max_payload_bytes
        self._refused(client, lambda c, _: c.enqueue_one("q", "x" * (limit - 1)), qw.InvalidPayload)
        multibyte = "é" * (limit // 2)  # fewer characters than the limit, more bytes
        self._refused(client, lambda c, _: c.enqueue_one("q", multibyte), qw.InvalidPayload)

    def test_oversized_result_leaves_the_job_running(self, client: qw.Client) -> None:
        limit = client.capabilities.max_payload_bytes
        client.enqueue_one("r", 1)
        lease = self.claim_one(client, "r").lease
        before = snapshot(client)
        with pytest.raises(qw.InvalidPayload):
            client.complete(lease, "x" * limit, event=EventSpec("e"))
        assert snapshot(client) == before
        assert client.complete(lease) is qw.JobStatus.SUCCEEDED

    @pytest.mark.parametrize(
        "job",
        [
            NewJob("q", 1, priority=2**31),
            NewJob("q", 1, priority=-(2**31) - 1),
            NewJob("q", 1, priority=True),
            NewJob("q", 1, priority=1.5),  # type: ignore[arg-type]
            NewJob("q", 1, max_attempts=0),
            NewJob("q", 1, max_attempts=-1),
            NewJob("q", 1, delay=-1),
            NewJob("q", 1, delay=float("nan")),
            NewJob("q", 1, delay=float("inf")),
            NewJob("q", 1, run_at=datetime(2030, 1, 1)),
            NewJob("q", 1, run_at=datetime(2030, 1, 1).astimezone(), delay=1),
            NewJob("q", 1, id=""),
            NewJob("q", 1, id="x" * 65),
            NewJob("q", 1, dedupe_key=""),
            NewJob("q", 1, dedupe_key="k" * 513),
            # The bounds (qw.validation): far times, huge counts, text without UTF-8.
            NewJob("q", 1, delay=MAX_DELAY_S + 1),
            NewJob("q", 1, delay=1e12),
            NewJob("q", 1, delay=10**400),
            NewJob("q", 1, run_at=FAR_FUTURE + timedelta(days=1)),
            NewJob("q", 1, run_at=datetime(9999, 12, 31, tzinfo=UTC)),
            NewJob("q", 1, run_at=datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
            NewJob("q", 1, run_at=datetime(1, 1, 1, tzinfo=UTC)),
            NewJob("q", 1, max_attempts=MAX_ATTEMPTS + 1),
            NewJob("q", 1, max_attempts=2**31),
            NewJob("q", 1, max_attempts=2**63),
            NewJob("q", 1, id="x" * (MAX_JOB_ID_CHARS + 1)),
            NewJob("q", 1, id=LONE_SURROGATE),
            NewJob("q", 1, dedupe_key=LONE_SURROGATE),
        ],
        ids=lambda j: repr(j)[:60],
    )
    def test_bad_job_fields_are_refused(self, client: qw.Client, job: NewJob) -> None:
        self._refused(client, lambda c, _: c.enqueue([job]), qw.InvalidInput)

    @pytest.mark.parametrize(
        "call",
        [
            lambda c, _: c.claim(["q"], worker="w", lease_s=0),
            lambda c, _: c.claim(["q"], worker="w", lease_s=-1),
            lambda c, _: c.claim(["q"], worker="w", lease_s=float("nan")),
            lambda c, _: c.claim(["q"], worker="w", lease_s=float("inf")),
            lambda c, _: c.claim(["q"], worker="w", lease_s=True),
            lambda c, _: c.claim(["q"], worker="w", limit=0),
            lambda c, _: c.claim(["q"], worker="w", limit=1001),
            lambda c, _: c.claim(["q"], worker="w", limit=True),
            lambda c, _: c.claim(["q"], worker=""),
            lambda c, _: c.claim([], worker="w"),
            lambda c, _: c.claim("q", worker="w"),
            lambda c, _: c.wait(["q"], timeout=-1),
            lambda c, _: c.wait(["q"], timeout=float("nan")),
            lambda c, _: c.purge(-1),
            lambda c, _: c.purge(float("nan")),
            lambda c, _: c.ack_events(["1"]),
            lambda c, _: c.ack_events([True]),
            lambda c, _: c.fetch_events(limit=0),
            lambda c, _: c.list_jobs(status="nope"),
            lambda c, _: c.list_jobs(limit=0),
            lambda c, _: c.get(""),
            lambda c, _: c.cancel("x" * 65),
            lambda c, _: c.set_enabled("no"),
            lambda c, _: c.renew("not a lease"),
            lambda c, _: c.finish(["not an outcome"]),
            lambda c, _: c.enqueue(NewJob("q", 1)),
            lambda c, _: c.enqueue(["not a job"]),
            lambda c, _: c.heartbeat(WorkerInfo("")),
            # The bounds (qw.validation): seconds, cursors, batch lengths, UTF-8 text.
            lambda c, _: c.claim(["q"], worker="w", lease_s=10**400),
            lambda c, _: c.claim(["q"], worker=LONE_SURROGATE),
            lambda c, _: c.claim(["q"], worker="w" * (MAX_WORKER_ID_CHARS + 1)),
            lambda c, _: c.wait(["q"], timeout=10**400),
            lambda c, _: c.wait(["q"], timeout=MAX_SECONDS + 1),
            lambda c, _: c.purge(10**400),
            lambda c, _: c.purge(MAX_SECONDS + 1),
            lambda c, _: c.ack_events([0]),
            lambda c, _: c.ack_events([-1]),
            lambda c, _: c.ack_events([2**63]),
            lambda c, _: c.ack_events([2**70]),
            lambda c, _: c.ack_events(range(1, MAX_BATCH + 2)),
            lambda c, lease: c.renew_many([lease] * (MAX_BATCH + 1)),
            lambda c, lease: c.finish([qw.Release(lease)] * (MAX_BATCH + 1)),
            lambda c, lease: c.complete(replace(lease, job_id=LONE_SURROGATE)),
            lambda c, lease: c.complete(replace(lease, token=LONE_SURROGATE)),
            lambda c, _: c.get(LONE_SURROGATE),
            lambda c, _: c.cancel(LONE_SURROGATE),
            lambda c, _: c.list_jobs(after=LONE_SURROGATE),
            lambda c, _: c.heartbeat(WorkerInfo(LONE_SURROGATE)),
            lambda c, _: c.heartbeat(WorkerInfo("w", host=LONE_SURROGATE)),
            lambda c, _: c.heartbeat(WorkerInfo("w", pid=2**31)),
            lambda c, _: c.heartbeat(WorkerInfo("w", concurrency=2**63)),
            lambda c, _: c.heartbeat(WorkerInfo("w", started_at=datetime(2030, 1, 1))),
            lambda c, _: c.remove_worker(LONE_SURROGATE),
        ],
    )
    def test_bad_arguments_are_refused(self, client: qw.Client, call: Call) -> None:
        self._refused(client, call, qw.InvalidInput)

    @pytest.mark.parametrize(
        "make",
        [
            lambda lease: qw.Complete(lease, event=EventSpec("bad type!")),
            lambda lease: qw.Complete(lease, event=EventSpec("")),
            lambda lease: qw.Fail(lease, retry_in=-1),
            lambda lease: qw.Fail(lease, retry_in=float("nan")),
            lambda lease: qw.Fail(lease, retry_in=MAX_SECONDS + 1),
            lambda lease: qw.Fail(lease, retry_in=1e12),
            lambda lease: qw.Fail(lease, retry_in=10**400),
            lambda lease: qw.Abort(lease, event="not a spec"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_outcomes_leave_the_job_running(
        self, client: qw.Client, make: Callable[[qw.Lease], qw.Outcome]
    ) -> None:
        client.enqueue_one("r", 1)
        lease = self.claim_one(client, "r").lease
        before = snapshot(client)
        with pytest.raises(qw.InvalidInput):
            client.finish([qw.Complete(lease), make(lease)])
        assert snapshot(client) == before
        assert client.complete(lease) is qw.JobStatus.SUCCEEDED

    @pytest.mark.parametrize(
        ("kind", "value"), UNSTORABLE_JSON, ids=[k for k, _ in UNSTORABLE_JSON]
    )
    @pytest.mark.parametrize("where", ["payload", "result", "error", "abort", "event"])
    def test_json_a_store_cannot_keep_is_refused(
        self, client: qw.Client, kind: str, value: Any, where: str
    ) -> None:
        self._refused(
            client, lambda c, claimed: _carry(c, claimed, where, value), qw.InvalidPayload
        )

    def test_an_enqueue_call_over_max_call_bytes_is_refused(self, client: qw.Client) -> None:
        limit = client.capabilities.max_payload_bytes
        count = MAX_CALL_BYTES // limit + 1
        if count > MAX_BATCH:
            pytest.skip(f"max_payload_bytes={limit}: MAX_BATCH jobs cannot exceed MAX_CALL_BYTES")
        full = "x" * (limit - 2)  # one string object: the quotes make `limit` bytes
        jobs = [NewJob("q", full) for _ in range(count)]
        self._refused(client, lambda c, _: c.enqueue(jobs), qw.InvalidPayload)


STORE = "bad-input-" + uuid.uuid4().hex[:8]


class TestMemoryClientBadInput(ClientBadInputTests):
    def make_backend(self, namespace: str) -> qw.Backend:
        return MemoryBackend(STORE, namespace=namespace)


class TestSqliteClientBadInput(ClientBadInputTests):
    db_path: Path

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _sqlite_file(cls, tmp_path_factory: pytest.TempPathFactory) -> None:
        cls.db_path = tmp_path_factory.mktemp("sqlite") / "qw.db"

    def make_backend(self, namespace: str) -> qw.Backend:
        return SqliteBackend(self.db_path, namespace=namespace)
