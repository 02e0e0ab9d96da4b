"""PostgreSQL-specific promises: server clock, the claim index, bounded purges."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import qw
from qw.contract import Complete, Fail, Finish, Outcome
from qw.transitions import plan_finish
from qw.validation import encode_json
from qw_postgres import PostgresBackend, backend, batches
from qw_postgres.queries import JOB_FIELDS, Queries

from .conftest import with_query

SCHEMA = "qw_test"


@pytest.fixture
def client(pg_url: str) -> Iterator[qw.Client]:
    url = with_query(pg_url, f"schema={SCHEMA}&pool_max=2")
    c = qw.Client(PostgresBackend.from_url(url, namespace="s" + uuid.uuid4().hex[:12]))
    yield c
    c.close()


def test_run_at_and_leases_come_from_the_server_clock(client: qw.Client) -> None:
    job_id = client.enqueue_one("q", 1, delay=1.5).id
    job = client.get(job_id)
    # Both ends are the same server now(): exact, whatever the client's clock says.
    assert job.run_at - job.created_at == timedelta(seconds=1.5)
    client.enqueue_one("r", 2)
    [claim] = client.claim(["r"], worker="w", lease_s=7.25)
    assert claim.job.started_at is not None
    assert claim.lease.expires_at - claim.job.started_at == timedelta(seconds=7.25)


def test_claim_reads_the_partial_index_of_queued_jobs(pg_url: str, fresh_schema: str) -> None:
    # A schema of its own: the plan follows the table's statistics, and the
    # shared test schema keeps every earlier run's jobs (other namespaces).
    url = with_query(pg_url, f"schema={fresh_schema}&pool_max=2")
    client = qw.Client(PostgresBackend.from_url(url, namespace="plan"))
    client.enqueue([qw.NewJob("q", i) for i in range(500)])
    client.close()
    query = Queries.for_schema(fresh_schema).claim_one
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ANALYZE {fresh_schema}.jobs")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                b"EXPLAIN " + query,
                {"ns": client.namespace, "queue": "q", "worker": "w", "lease_s": 1.0, "limit": 10},
            ).fetchall()
        )
        [(indexdef,)] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'jobs_claim'",
            (fresh_schema,),
        ).fetchall()
    assert "jobs_claim" in plan
    assert "Sort" not in plan  # the index already yields priority, then FIFO
    assert "WHERE ((status = 'queued'::text) AND (NOT parked))" in indexdef


def test_purge_deletes_in_bounded_batches(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "PURGE_BATCH", 3)
    ids = [a.id for a in client.enqueue([qw.NewJob("q", i) for i in range(10)])]
    keep = client.enqueue_one("q", "keep").id
    for claim in client.claim(["q"], worker="w", limit=10):
        assert claim.job.id != keep
        client.complete(claim.lease)
    result = client.purge(0)
    assert result.jobs == 10
    assert [j.id for j in client.list_jobs()] == [keep]
    assert all(client.find(i) is None for i in ids)


def test_a_ten_thousand_job_enqueue_keeps_fifo_order(client: qw.Client) -> None:
    answers = client.enqueue([qw.NewJob("bulk", {"i": i}) for i in range(10_000)])
    assert all(a.created for a in answers)
    assert client.counts()["bulk"][qw.JobStatus.QUEUED] == 10_000
    claims = client.claim(["bulk"], worker="w", limit=1000)
    assert [c.job.payload for c in claims] == [{"i": i} for i in range(1000)]


def test_json_values_come_back_exactly(client: qw.Client) -> None:
    # \u0000 is valid JSON that PostgreSQL text cannot hold; huge and signed
    # floats and big ints are where a jsonb column would change the value.
    value: dict[str, qw.model.JSONValue] = {
        "nul": "a\u0000b",
        "esc": '\\u0000"\n',
        "big": 1e300,
        "neg": -0.0,
        "i": 2**70,
    }
    job_id = client.enqueue_one("q", value, dedupe_key="k\u00e9").id
    assert client.get(job_id).payload == value
    [claim] = client.claim(["q"], worker="w")
    client.complete(claim.lease, value, event=qw.EventSpec("done", value))
    assert client.get(job_id).result == value
    assert client.fetch_events()[0].data == value


def test_nul_in_a_text_field_is_refused_and_nothing_is_written(client: qw.Client) -> None:
    # PostgreSQL text cannot hold U+0000: a documented limit, answered with a typed error.
    with pytest.raises(qw.InvalidInput):
        client.enqueue([qw.NewJob("q", 1), qw.NewJob("q", 2, dedupe_key="a\u0000b")])
    with pytest.raises(qw.InvalidInput):
        client.enqueue([qw.NewJob("q", 1), qw.NewJob("q", 2, id="id\u0000")])
    assert client.counts() == {}


@pytest.mark.parametrize("size", [10, backend.COPY_MIN_JOBS + 5])
def test_dedupe_and_duplicates_behave_alike_for_small_and_staged_batches(
    client: qw.Client, size: int
) -> None:
    # Batches from COPY_MIN_JOBS on take the COPY path; the answers must not change.
    held = client.enqueue_one("q", "holder", dedupe_key="taken").id
    jobs = [qw.NewJob("q", i) for i in range(size)]
    jobs[1] = qw.NewJob("q", "first", dedupe_key="fresh")
    jobs[2] = qw.NewJob("q", "second", dedupe_key="fresh")
    jobs[3] = qw.NewJob("q", "live", dedupe_key="taken")
    answers = client.enqueue(jobs)
    assert answers[1] == qw.Enqueued(jobs[1].id, created=True)
    assert answers[2] == qw.Enqueued(jobs[1].id, created=False)
    assert answers[3] == qw.Enqueued(held, created=False)
    assert sum(a.created for a in answers) == size - 2
    assert client.counts()["q"][qw.JobStatus.QUEUED] == size - 1

    before = client.counts()
    again = [qw.NewJob("q", i) for i in range(size - 1)] + [qw.NewJob("q", "x", id=jobs[5].id)]
    with pytest.raises(qw.DuplicateJob):
        client.enqueue(again)
    nul = [qw.NewJob("q", i) for i in range(size - 1)] + [qw.NewJob("q", 0, dedupe_key="\x00")]
    with pytest.raises(qw.InvalidInput):
        client.enqueue(nul)
    assert client.counts() == before
    # FIFO holds across the batch, whichever path carried it.
    claims = client.claim(["q"], worker="w", limit=20)
    assert [c.job.id for c in claims] == [held, *[a.id for a in answers if a.created][:19]]


def test_a_finish_too_large_for_one_document_is_split_and_fully_applied(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "FINISH_DOC_MAX_CHARS", 50)
    client.enqueue([qw.NewJob("big", i) for i in range(7)])
    claims = client.claim(["big"], worker="w", limit=7)
    results = [{"text": "x" * 30 + "\u0000", "i": c.job.payload} for c in claims]
    finishes = [
        Finish(c.lease, plan_finish(Complete(c.lease, r), body=encode_json(r)))
        for c, r in zip(claims, results, strict=True)
    ]
    parts = list(batches.finish_documents(finishes))
    assert len(parts) > 1
    assert [f for p, _ in parts for f in p] == finishes
    outcomes: list[Outcome] = [Complete(c.lease, r) for c, r in zip(claims, results, strict=True)]
    outcomes.append(Fail(claims[0].lease, "late"))  # stale by then: answered from its record
    statuses = client.finish(outcomes)
    assert statuses == [qw.JobStatus.SUCCEEDED] * 7 + [None]
    for claim, result in zip(claims, results, strict=True):
        assert client.get(claim.job.id).result == result


def test_rows_map_to_jobs_by_position() -> None:
    # to_job builds Job positionally from JOB_FIELDS order: they must agree,
    # but for Job's last field, progress, read from the last three columns.
    names = tuple(f.name for f in dataclasses.fields(qw.Job))
    assert names[-1] == "progress"
    assert (*names[:-1], "progress_fraction", "progress_message", "progress_at") == JOB_FIELDS


def test_a_dedupe_key_taken_after_the_look_up_is_planned_again(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The look-up misses the holder once (as if it committed just after):
    # jobs_dedupe refuses the insert, and the enqueue reads and plans again.
    held = client.enqueue_one("q", "holder", dedupe_key="k").id
    real = PostgresBackend._fetch
    missed: list[bool] = []

    def fetch(self: PostgresBackend, what: str, query: bytes, params: dict[str, object]) -> object:
        if query == self._q.live_keys and not missed:
            missed.append(True)
            return []
        return real(self, what, query, params)

    monkeypatch.setattr(PostgresBackend, "_fetch", fetch)
    answers = client.enqueue([qw.NewJob("q", 1), qw.NewJob("q", 2, dedupe_key="k")])
    assert missed == [True]
    assert answers[1] == qw.Enqueued(held, created=False)
    assert answers[0].created
    assert client.counts()["q"][qw.JobStatus.QUEUED] == 2


def _stored(pg_url: str, namespace: str, job_id: str) -> dict[str, object]:
    """A job's row as stored, but for what differs between any two jobs."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cur = conn.execute(
            f"SELECT * FROM {SCHEMA}.jobs WHERE namespace = %s AND id = %s", (namespace, job_id)
        )
        names = [d.name for d in cur.description or ()]
        row = cur.fetchone()
    assert row is not None
    got = dict(zip(names, row, strict=True))
    # A job due now (or after a delay) is due from its creation.
    if got["run_at"] != FIXED_RUN_AT:
        got["run_at"] -= got["created_at"]
    for varying in ("id", "seq", "created_at", "dedupe_key"):
        got.pop(varying)
    return got


FIXED_RUN_AT = datetime(2031, 1, 2, 3, 4, 5, 678, tzinfo=UTC)


@pytest.mark.parametrize(
    "job",
    [
        qw.NewJob("q", {"n": "\u0000\u00e9"}),
        qw.NewJob("q", [1, 2], priority=-3, max_attempts=7, dedupe_key="d"),
        qw.NewJob("q", 1, run_at=FIXED_RUN_AT),
        qw.NewJob("q", 1, delay=2.25),
        qw.NewJob("q", None, limit_key="k"),
        qw.NewJob("q", None, limit_key="k", limit=qw.Limit()),
        qw.NewJob("q", None, limit_key="k", limit=qw.Limit(concurrency=2, rate=3, per=1.5)),
    ],
    ids=["plain", "fields", "run_at", "delay", "key", "declared-limit", "limit"],
)
def test_a_job_enqueued_alone_is_stored_as_in_a_batch(
    client: qw.Client, pg_url: str, job: qw.NewJob
) -> None:
    # One job rides a statement of plain parameters, a batch the JSON
    # document: the rows they store must be the same, field for field.
    alone = dataclasses.replace(job, id="alone", dedupe_key=job.dedupe_key and "d1")
    batched = dataclasses.replace(job, id="batched", dedupe_key=job.dedupe_key and "d2")
    client.enqueue([alone])
    client.enqueue([batched, qw.NewJob("other", 0)])
    assert _stored(pg_url, client.namespace, "alone") == _stored(
        pg_url, client.namespace, "batched"
    )


def test_a_job_enqueued_alone_is_refused_as_in_a_batch(client: qw.Client) -> None:
    client.enqueue_one("q", 1, id="taken")
    with pytest.raises(qw.DuplicateJob):
        client.enqueue([qw.NewJob("q", 2, id="taken")])
    with pytest.raises(qw.InvalidInput):
        client.enqueue([qw.NewJob("q", 2, id="id\u0000")])
    with pytest.raises(qw.InvalidInput):
        client.enqueue([qw.NewJob("q", 2, dedupe_key="a\u0000b")])
    assert sum(client.counts()["q"].values()) == 1
    job = client.get("taken")
    assert job.payload == 1


def test_a_job_alone_whose_key_was_taken_after_the_look_up_is_planned_again(
    client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for a batch (above), through the one-job statement: jobs_dedupe
    # refuses it, the enqueue reads again and answers the holder.
    held = client.enqueue_one("q", "holder", dedupe_key="k").id
    real = PostgresBackend._fetch
    calls: list[bytes] = []

    def fetch(self: PostgresBackend, what: str, query: bytes, params: dict[str, object]) -> object:
        calls.append(query)
        if query == self._q.live_keys and calls.count(query) == 1:
            return []
        return real(self, what, query, params)

    monkeypatch.setattr(PostgresBackend, "_fetch", fetch)
    [answer] = client.enqueue([qw.NewJob("q", 2, dedupe_key="k")])
    assert answer == qw.Enqueued(held, created=False)
    q = client.backend._q  # type: ignore[attr-defined]
    # The second plan inserts nothing; the batch statement checks its id is not stored.
    assert calls == [q.live_keys, q.enqueue_one, q.live_keys, q.enqueue]
    assert client.counts()["q"][qw.JobStatus.QUEUED] == 1
