"""Which one-call bulk insert is fastest for ``enqueue``?

Every variant starts from a list of :class:`qw.NewJob`, encodes the payloads,
inserts the rows into the real ``jobs`` table with the same dedupe
``ON CONFLICT`` and reads back the inserted ids, in one transaction, on a
warm connection (prepared statements in place). ``Client.enqueue`` is the
shipped code path: the client's checks and its one encoding, then the
backend's insert, which also answers dedupe hits and sends the NOTIFY.

    python packages/qw-postgres/benchmarks/bulk_enqueue.py [BASE_URL]

The results are in docs/backends/postgres.md (Bulk enqueue).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

import qw
from qw.validation import encode_json
from qw_postgres import PostgresBackend

SCHEMA = "qw_bench"
CONFLICT = (
    "ON CONFLICT (namespace, dedupe_key) WHERE dedupe_key IS NOT NULL"
    " AND status IN ('queued', 'running') DO NOTHING RETURNING id"
)
COLUMNS = (
    "namespace, id, queue, status, priority, run_at, max_attempts, payload, dedupe_key, created_at"
)
Variant = Callable[[psycopg.Connection[Any], str, Sequence[qw.NewJob]], int]


def _q(text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(SCHEMA))


def unnest_arrays(conn: psycopg.Connection[Any], ns: str, jobs: Sequence[qw.NewJob]) -> int:
    query = _q(
        f"INSERT INTO {{s}}.jobs ({COLUMNS}) SELECT %s, id, queue, 'queued', priority, now(),"
        " max_attempts, payload::json, key, now() FROM unnest(%s::text[], %s::text[],"
        " %s::int4[], %s::int4[], %s::text[], %s::text[]) WITH ORDINALITY"
        " AS t(id, queue, priority, max_attempts, payload, key, ord) ORDER BY ord " + CONFLICT
    )
    params = (
        ns,
        [j.id for j in jobs],
        [j.queue for j in jobs],
        [j.priority for j in jobs],
        [j.max_attempts for j in jobs],
        [encode_json(j.payload) for j in jobs],
        [j.dedupe_key for j in jobs],
    )
    return len(conn.execute(query, params, prepare=True).fetchall())


def unnest_json_document(conn: psycopg.Connection[Any], ns: str, jobs: Sequence[qw.NewJob]) -> int:
    query = _q(
        f"INSERT INTO {{s}}.jobs ({COLUMNS}) SELECT %s, v->>0, v->>1, 'queued', (v->>2)::int4,"
        " now(), (v->>3)::int4, (v->>4)::json, v->>5, now()"
        " FROM json_array_elements(%s::json) WITH ORDINALITY AS e(v, ord) ORDER BY ord " + CONFLICT
    )
    doc = json.dumps(
        [
            [j.id, j.queue, j.priority, j.max_attempts, encode_json(j.payload), j.dedupe_key]
            for j in jobs
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return len(conn.execute(query, (ns, doc), prepare=True).fetchall())


def executemany_pipeline(conn: psycopg.Connection[Any], ns: str, jobs: Sequence[qw.NewJob]) -> int:
    query = _q(
        f"INSERT INTO {{s}}.jobs ({COLUMNS}) VALUES (%s, %s, %s, 'queued', %s, now(), %s,"
        " %s::json, %s, now()) " + CONFLICT
    )
    rows = [
        (ns, j.id, j.queue, j.priority, j.max_attempts, encode_json(j.payload), j.dedupe_key)
        for j in jobs
    ]
    n = 0
    with conn.cursor() as cur:
        cur.executemany(query, rows, returning=True)
        while True:
            n += len(cur.fetchall())
            if not cur.nextset():
                break
    return n


def copy_then_insert(conn: psycopg.Connection[Any], ns: str, jobs: Sequence[qw.NewJob]) -> int:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS qw_in (id text, queue text, priority int,"
        " max_attempts int, payload text, dedupe_key text, ord serial) ON COMMIT DELETE ROWS"
    )
    with conn.cursor().copy(
        "COPY qw_in (id, queue, priority, max_attempts, payload, dedupe_key) FROM STDIN"
    ) as copy:
        for j in jobs:
            copy.write_row(
                (j.id, j.queue, j.priority, j.max_attempts, encode_json(j.payload), j.dedupe_key)
            )
    query = _q(
        f"INSERT INTO {{s}}.jobs ({COLUMNS}) SELECT %s, id, queue, 'queued', priority, now(),"
        " max_attempts, payload::json, dedupe_key, now() FROM qw_in ORDER BY ord " + CONFLICT
    )
    return len(conn.execute(query, (ns,)).fetchall())


VARIANTS: dict[str, Variant] = {
    "unnest(arrays)": unnest_arrays,
    "json_array_elements(doc)": unnest_json_document,
    "executemany (pipeline)": executemany_pipeline,
    "COPY + INSERT..SELECT": copy_then_insert,
}


def _bind(variant: Variant, conn: psycopg.Connection[Any]) -> Callable[[Sequence[qw.NewJob]], int]:
    return lambda jobs: variant(conn, "bench" + uuid.uuid4().hex[:6], jobs)


def jobs_for(n: int) -> list[qw.NewJob]:
    return [qw.NewJob("q", {"i": i, "user": f"u{i}", "tags": ["a", "b"]}) for i in range(n)]


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
    url = f"{base}?schema={SCHEMA}&pool_min=1&pool_max=1"
    backend = PostgresBackend.from_url(url, namespace="bench")
    client = qw.Client(backend)
    results: dict[tuple[int, str], list[float]] = {}
    try:
        with psycopg.connect(base) as conn:
            for n, reps in ((100, 15), (1000, 9), (10_000, 5)):
                runners: dict[str, Callable[[Sequence[qw.NewJob]], int]] = {
                    name: _bind(f, conn) for name, f in VARIANTS.items()
                }
                runners["Client.enqueue (shipped)"] = lambda jobs: len(client.enqueue(jobs))
                # Interleave the variants so that load from elsewhere hits all alike.
                for rep in range(reps + 1):
                    for name, run in runners.items():
                        jobs = jobs_for(n)
                        start = time.perf_counter()
                        assert run(jobs) == n
                        conn.commit()
                        if rep:  # the first round only warms up
                            results.setdefault((n, name), []).append(time.perf_counter() - start)
                for name in runners:
                    times = results[(n, name)]
                    median = statistics.median(times)
                    print(
                        f"n={n:>6}  {name:<27} median {median * 1000:8.1f} ms"
                        f"  min {min(times) * 1000:8.1f} ms  ({n / median:8.0f} jobs/s)",
                        flush=True,
                    )
    finally:
        backend.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
