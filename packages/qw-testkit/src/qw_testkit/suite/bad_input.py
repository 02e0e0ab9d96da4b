"""Bad input: a typed error, before any I/O, and the store unchanged afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

import qw
from qw.model import EventSpec, NewJob, WorkerInfo
from qw_testkit.base import ContractBase, snapshot

BAD_NAMES = [
    "*",
    "../x",
    "a' OR 1=1",
    "{x}",
    "",
    " q",
    "q ",
    "q\n",
    "q\x00",
    "a:b",
    "a/b",
    "a.b*",
    "-leading",
    "_leading",
    "ünïcode",
    "x" * 129,
]
BAD_NAMESPACES = [*BAD_NAMES, "A", "Upper", "a.b", "x" * 64, None, 7]

BAD_PAYLOADS: list[tuple[str, object]] = [
    ("set", {1, 2}),
    ("bytes", b"raw"),
    ("object", object()),
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
    ("int-key", {1: "x"}),
    ("tuple-key", {(1, 2): "x"}),
    ("nested-nan", {"a": [1, {"b": float("nan")}]}),
    ("tuple", (1, 2)),
    ("datetime", datetime(2020, 1, 1)),
]

#: A call that must be refused, given the client and the lease of a running job.
Call = Callable[[qw.Client, qw.Lease], object]


class BadInputTests(ContractBase):
    def _refused(self, client: qw.Client, call: Call, error: type[Exception]) -> None:
        """``call`` raises ``error`` and leaves everything observable as it was."""
        client.enqueue_one("q", "bystander", dedupe_key="bystander")
        client.enqueue_one("q", "claimed")
        (claim,) = client.claim(["q"], worker="w", limit=1)
        before = snapshot(client)
        with pytest.raises(error):
            call(client, claim.lease)
        assert snapshot(client) == before

    @pytest.mark.parametrize("name", BAD_NAMESPACES, ids=repr)
    def test_make_backend_refuses_a_bad_namespace(self, name: Any) -> None:
        with pytest.raises(qw.InvalidName):
            self.make_backend(name)

    # qw.open reads a missing (falsy) namespace as "use the default", so only truthy ones here.
    @pytest.mark.parametrize("name", [n for n in BAD_NAMESPACES if n], ids=repr)
    def test_open_refuses_a_bad_namespace(self, name: Any) -> None:
        url = self.backend_url()
        if url is None:
            pytest.skip(f"{type(self).__name__}.backend_url() returns None")
        with pytest.raises(qw.InvalidName):
            qw.open(url, namespace=name)

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
        def call(c: qw.Client, claimed: qw.Lease) -> object:
            if where == "result":
                return c.complete(claimed, value)
            if where == "error":
                return c.fail(claimed, value)
            if where == "abort":
                return c.abort(claimed, value)
            return c.complete(claimed, event=EventSpec("e", value))

        self._refused(client, call, qw.InvalidPayload)

    def test_oversized_payload_is_refused_and_the_limit_itself_accepted(
        self, client: qw.Client
    ) -> None:
        limit = client.capabilities.max_payload_bytes
        self._refused(client, lambda c, _: c.enqueue_one("q", "x" * (limit - 1)), qw.InvalidPayload)
        multibyte = "é" * (limit // 2)  # fewer characters than the limit, more bytes
        self._refused(client, lambda c, _: c.enqueue_one("q", multibyte), qw.InvalidPayload)
        at_limit = "x" * (limit - 2)  # the quotes make it exactly `limit` bytes
        answer = client.enqueue_one("big", at_limit)
        assert client.get(answer.id).payload == at_limit

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
