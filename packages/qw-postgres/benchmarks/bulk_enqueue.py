"""Which single-call bulk insert is fastest: UNNEST, executemany (pipeline), or COPY?

Each variant inserts the same rows into the same table with the same dedupe
ON CONFLICT and answers the inserted ids, in one transaction. ``unnest`` is
the backend's real ``enqueue`` (dedupe answers, NOTIFY and all), so it does
strictly more work than the other two.

    python packages/qw-postgres/benchmarks/bulk_enqueue.py [URL]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

import qw
from qw.ids import new_job_id
from qw.validation import encode_json

SCHEMA = "qw_bench"
INSERT_ONE = """
INSERT INTO {s}.jobs (namespace, id, queue, status, priority, run_at, max_attempts,
                      payload, dedupe_key, created_at)
VALUES (%s, %s, %s, 'queued', %s, now(), %s, %s::json, %s, now())
ON CONFLICT (namespace, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
RETURNING id
"""


def rows(ns: str, n: int) -> list[tuple[Any, ...]]:
    return [
        (ns, new_job_id(), "q", 0, 3, encode_json({"i": i, "pad": "x" * 40}), None)
        for i in range(n)
    ]


def via_backend(url: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        ns = "b" + uuid.uuid4().hex[:10]
        with qw.open(url, namespace=ns) as client:
            jobs = [qw.NewJob("q", {"i": i, "pad": "x" * 40}) for i in range(n)]
            start = time.perf_counter()
            client.enqueue(jobs)
            TIMES.append(time.perf_counter() - start)

    return run


def via_executemany(conninfo: str) -> Callable[[int], None]:
    query = sql.SQL(INSERT_ONE).format(s=sql.Identifier(SCHEMA))

    def run(n: int) -> None:
        data = rows("b" + uuid.uuid4().hex[:10], n)
        with psycopg.connect(conninfo) as conn:
            start = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(query, data, returning=True)
                ids = []
                while True:
                    ids.extend(r[0] for r in cur.fetchall())
                    if not cur.nextset():
                        break
            conn.commit()
            TIMES.append(time.perf_counter() - start)
            assert len(ids) == n

    return run


def via_copy(conninfo: str) -> Callable[[int], None]:
    s = sql.Identifier(SCHEMA)

    def run(n: int) -> None:
        data = rows("b" + uuid.uuid4().hex[:10], n)
        with psycopg.connect(conninfo) as conn:
            start = time.perf_counter()
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS qw_in (namespace text, id text, queue text,"
                " priority int, max_attempts int, payload text, dedupe_key text)"
                " ON COMMIT DELETE ROWS"
            )
            with conn.cursor().copy("COPY qw_in FROM STDIN") as copy:
                for row in data:
                    copy.write_row(row)
            ids = conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.jobs (namespace, id, queue, status, priority, run_at,"
                    " max_attempts, payload, dedupe_key, created_at)"
                    " SELECT namespace, id, queue, 'queued', priority, now(), max_attempts,"
                    " payload::json, dedupe_key, now() FROM qw_in"
                    " ON CONFLICT (namespace, dedupe_key) WHERE dedupe_key IS NOT NULL"
                    " AND status IN ('queued', 'running') DO NOTHING RETURNING id"
                ).format(s=s)
            ).fetchall()
            conn.commit()
            TIMES.append(time.perf_counter() - start)
            assert len(ids) == n

    return run


TIMES: list[float] = []


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
    url = f"{base}?schema={SCHEMA}&pool_max=2"
    import qw_postgres

    qw_postgres.migrate(url)
    variants = {
        "unnest (backend.enqueue)": via_backend(url),
        "executemany (pipeline)": via_executemany(base),
        "copy + insert-select": via_copy(base),
    }
    try:
        for n in (100, 1000, 10_000):
            reps = 5 if n < 10_000 else 3
            for name, run in variants.items():
                TIMES.clear()
                run(n)  # warm-up
                TIMES.clear()
                for _ in range(reps):
                    run(n)
                best, median = min(TIMES), statistics.median(TIMES)
                print(
                    f"n={n:>6}  {name:<26} median {median * 1000:8.1f} ms"
                    f"  best {best * 1000:8.1f} ms  ({n / median:9.0f} jobs/s)"
                )
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
