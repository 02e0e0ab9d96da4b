"""Bad input: a typed error, before any I/O, and the store unchanged afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import qw
from qw.model import NewJob, WorkerInfo
from qw.validation import (
    MAX_ATTEMPTS,
    MAX_DEDUPE_KEY_CHARS,
    MAX_DELAY_S,
    MAX_JOB_ID_CHARS,
    MAX_JSON_DEPTH,
    MAX_SECONDS,
)
from qw_testkit.base import ContractBase

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

#: Text no store can keep: a lone surrogate has no UTF-8 encoding.
LONE_SURROGATE = "x\ud800"
#: Text every store must keep as it is: 2-, 3- and 4-byte UTF-8.
WIDE_TEXT = "é✓\U0001f600"
#: Ten years ahead on this machine's clock, give or take a day of skew and test time.
FAR_FUTURE = datetime.now(UTC) + timedelta(seconds=MAX_DELAY_S)


def nested(depth: int) -> Any:
    """A JSON value with ``depth`` levels of arrays and objects."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


#: JSON that is valid Python but that no store may be asked to keep.
UNSTORABLE_JSON: list[tuple[str, object]] = [
    ("lone-surrogate", LONE_SURROGATE),
    ("lone-surrogate-key", {LONE_SURROGATE: 1}),
    ("too-deep", nested(MAX_JSON_DEPTH + 1)),
]

#: A call that must be refused, given the client and the lease of a running job.
Call = Callable[[qw.Client, qw.Lease], object]


class BadInputTests(ContractBase):
    """What reaches a backend at the edge of the bounds, and what a backend checks itself.

    Input the client refuses before any I/O (``qw.Client``'s checks, the same
    for every backend) is tested once, in qw-core's own unit tests
    (``tests/unit/test_client_bad_input.py``): repeating it per backend would
    test the client again, not the store.
    """

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

    def test_a_payload_of_exactly_the_limit_is_kept(self, client: qw.Client) -> None:
        at_limit = "x" * (client.capabilities.max_payload_bytes - 2)  # the quotes make `limit`
        answer = client.enqueue_one("big", at_limit)
        assert client.get(answer.id).payload == at_limit

    def test_every_bound_itself_is_accepted_and_read_back(self, client: qw.Client) -> None:
        """The largest values the bounds allow are stored, listed and read back as sent."""
        earliest = datetime(1970, 1, 1, tzinfo=UTC)
        latest = FAR_FUTURE - timedelta(days=1)
        deep = nested(MAX_JSON_DEPTH)
        jobs = [
            NewJob("q", deep, id="deep"),
            NewJob("q", WIDE_TEXT, id="wide", dedupe_key=WIDE_TEXT),
            NewJob("q", {WIDE_TEXT: [WIDE_TEXT]}, id="x" * MAX_JOB_ID_CHARS),
            NewJob("q", 1, id="k", dedupe_key="k" * MAX_DEDUPE_KEY_CHARS),
            NewJob("q", 1, id="delay", delay=MAX_DELAY_S),
            NewJob("q", 1, id="latest", run_at=latest),
            NewJob("q", 1, id="earliest", run_at=earliest, priority=-(2**31)),
            NewJob("q", 1, id="attempts", max_attempts=MAX_ATTEMPTS, priority=2**31 - 1),
        ]
        assert all(answer.created for answer in client.enqueue(jobs))
        listed = {job.id: job for job in client.list_jobs(limit=100)}
        assert set(listed) == {job.id for job in jobs}
        for new in jobs:
            job = client.get(new.id)
            assert job == listed[new.id]
            assert (job.payload, job.dedupe_key) == (new.payload, new.dedupe_key)
            assert (job.priority, job.max_attempts) == (new.priority, new.max_attempts)
        assert listed["earliest"].run_at == earliest
        assert abs(listed["latest"].run_at - latest) < timedelta(seconds=1)
        far = listed["delay"].run_at - client.now()
        assert timedelta(seconds=MAX_DELAY_S - 3600) < far <= timedelta(seconds=MAX_DELAY_S)
        # The earliest job is due: claim it and retry it as late as a retry may be.
        (claim,) = client.claim(["q"], worker=WIDE_TEXT, limit=1)
        assert claim.job.id == "earliest"
        assert client.get("earliest").worker == WIDE_TEXT
        assert client.fail(claim.lease, WIDE_TEXT, retry_in=MAX_SECONDS) is qw.JobStatus.QUEUED
        retried = client.get("earliest")
        assert retried.error == WIDE_TEXT
        assert retried.run_at - client.now() > timedelta(seconds=MAX_SECONDS - 3600)
        assert len(client.list_jobs(limit=100)) == len(jobs)
        client.heartbeat(WorkerInfo(WIDE_TEXT, host=WIDE_TEXT, pid=2**31 - 1))
        assert [(w.id, w.host, w.pid) for w in client.workers()] == [
            (WIDE_TEXT, WIDE_TEXT, 2**31 - 1)
        ]
        assert client.ack_events([2**63 - 1]) == 0
