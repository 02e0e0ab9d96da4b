"""The bare-store cycle: the fastest plain claim -> finish loop a store allows, no task run.

``python -m bench.bare phase SPEC`` (run by bench/run.py as the ``bare``
phase of ``qw-postgres`` and ``qw-redis``). It is the yardstick of qw's
drain: what the store itself costs per job with the durability qw has, and
nothing else (no payload decoding, no task, no leases renewed, no events).

* **PostgreSQL** (its own database ``qw_bench_bare``, ``synchronous_commit =
  on`` set in every session, so each commit waits for its WAL flush as
  qw's do): a table ``bare_jobs(id bigint primary key, queue, payload
  jsonb, status smallint, attempts, lease_until, finished_at)`` with a
  partial index on ``id WHERE status = 0``, filled with ``n`` rows. Each
  client repeats, until a claim returns nothing: ``UPDATE bare_jobs SET
  status = 1, attempts = attempts + 1, lease_until = now() + 30 s WHERE id
  IN (SELECT id FROM bare_jobs WHERE status = 0 ORDER BY id LIMIT B FOR
  UPDATE SKIP LOCKED) RETURNING id, payload`` (one commit), then ``UPDATE
  bare_jobs SET status = 2, finished_at = now() WHERE id = ANY(ids)`` (one
  commit).
* **Redis** (the bench DB, flushed): ``n`` ids in a list. Each client
  repeats, until a claim returns nothing: one Lua script that pops ``B``
  ids (``LPOP key B``) and for each sets its state ``running`` in a hash and
  its lease deadline in a sorted set, then one Lua script that sets each
  state ``done`` and removes its lease. Redis's own persistence settings
  apply, as they do to qw.

Every batch size of ``plan.bare_batches`` runs with every client count of
``plan.bare_clients`` (client processes, forked, started together); jobs/s
is ``n`` over first claim to last finish commit. Each run checks that the
ids finished are exactly ``0 .. n-1``, each once, and that the store says
``n`` are done. The best run is "the bare cycle" of the goals.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import stores
from bench.config import Plan, Stores
from bench.spawn import answer

__all__ = ["STORES", "best", "run"]

#: The qw systems whose store gets a bare cycle.
STORES = ("qw-postgres", "qw-redis")
PG_DB = "qw_bench_bare"
LEASE_S = 30

_PG_SCHEMA = """
CREATE TABLE bare_jobs (
    id bigint PRIMARY KEY,
    queue text NOT NULL,
    payload jsonb NOT NULL,
    status smallint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    finished_at timestamptz
);
CREATE INDEX bare_jobs_queued ON bare_jobs (id) WHERE status = 0;
"""
_PG_CLAIM = """
UPDATE bare_jobs SET status = 1, attempts = attempts + 1,
    lease_until = now() + make_interval(secs => %s)
WHERE id IN (
    SELECT id FROM bare_jobs WHERE status = 0 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
)
RETURNING id, payload
"""
_PG_FINISH = "UPDATE bare_jobs SET status = 2, finished_at = now() WHERE id = ANY(%s)"

_LUA_CLAIM = """
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then return {} end
local deadline = tonumber(ARGV[2])
for _, id in ipairs(ids) do
    redis.call('HSET', KEYS[2], id, 'running')
    redis.call('ZADD', KEYS[3], deadline, id)
end
return ids
"""
_LUA_FINISH = """
for _, id in ipairs(ARGV) do
    redis.call('HSET', KEYS[1], id, 'done')
    redis.call('ZREM', KEYS[2], id)
end
return #ARGV
"""
_R_QUEUE, _R_STATE, _R_LEASES = "bare:queue", "bare:state", "bare:leases"


def _pg_fill(st: Stores, n: int) -> str:
    import psycopg

    url = stores.pg_recreate(st, PG_DB)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_PG_SCHEMA)
        conn.execute(
            "INSERT INTO bare_jobs (id, queue, payload) "
            "SELECT g, 'bench', jsonb_build_array(g) FROM generate_series(0, %s - 1) g",
            (n,),
        )
        conn.execute("VACUUM ANALYZE bare_jobs")
    return url


def _pg_client(url: str, batch: int) -> tuple[list[int], int, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        done: list[int] = []
        first = last = 0
        while True:
            # Autocommit: each statement is its own committed transaction.
            t = time.time_ns()
            first = first or t
            rows = conn.execute(_PG_CLAIM, (LEASE_S, batch)).fetchall()
            if not rows:
                return done, first, last
            ids = [int(r[0]) for r in rows]
            conn.execute(_PG_FINISH, (ids,))
            last = time.time_ns()
            done += ids


def _pg_done(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM bare_jobs WHERE status = 2").fetchone()
    return int(row[0]) if row else -1


def _redis_fill(st: Stores, n: int) -> str:
    import redis

    stores.redis_flush(st)
    client = redis.Redis.from_url(st.redis)
    try:
        for start in range(0, n, 10_000):
            client.rpush(_R_QUEUE, *range(start, min(start + 10_000, n)))
    finally:
        client.close()
    return st.redis


def _redis_client(url: str, batch: int) -> tuple[list[int], int, int]:
    import redis

    client = redis.Redis.from_url(url)
    claim = client.register_script(_LUA_CLAIM)
    finish = client.register_script(_LUA_FINISH)
    done: list[int] = []
    first = last = 0
    try:
        while True:
            t = time.time_ns()
            first = first or t
            ids = claim(keys=[_R_QUEUE, _R_STATE, _R_LEASES], args=[batch, time.time() + LEASE_S])
            if not ids:
                return done, first, last
            finish(keys=[_R_STATE, _R_LEASES], args=ids)
            last = time.time_ns()
            done += [int(i) for i in ids]
    finally:
        client.close()


def _redis_done(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        states = client.hvals(_R_STATE)
    finally:
        client.close()
    return sum(1 for s in states if s == b"done")


def _child(store: str, url: str, batch: int, go: Any, out: Any) -> None:
    try:
        # Connect before the barrier so that start-up is not timed.
        client = _pg_client if store == "postgres" else _redis_client
        go.wait()
        out.put(("ok", client(url, batch)))
    except Exception as exc:  # reported to the parent, which fails the run
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def one(store: str, st: Stores, n: int, batch: int, clients: int) -> dict[str, Any]:
    """One run: ``n`` jobs filled, then ``clients`` processes cycling batches of ``batch``."""
    url = _pg_fill(st, n) if store == "postgres" else _redis_fill(st, n)
    ctx = mp.get_context("fork")
    go = ctx.Barrier(clients)
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(store, url, batch, go, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    errors = [r[1] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError(f"bare client failed: {errors[0]}")
    done = [i for r in results for i in r[1][0]]
    first = min(r[1][1] for r in results if r[1][0])
    last = max(r[1][2] for r in results if r[1][0])
    seen = Counter(done)
    store_done = _pg_done(url) if store == "postgres" else _redis_done(url)
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    ok = len(done) == n and len(seen) == n and set(seen) == set(range(n)) and store_done == n
    seconds = max((last - first) / 1e9, 1e-9)
    result = {
        "label": f"B={batch}x{clients}c",
        "batch": batch,
        "clients": clients,
        "n": n,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "finished": len(done),
        "unique": len(seen),
        "duplicates": duplicates,
        "store_done": store_done,
        "exactly_once": ok,
    }
    print(
        f"    bare {store} B={batch} clients={clients}: {n / seconds:,.0f} jobs/s, "
        f"exactly_once={ok}",
        file=sys.stderr,
        flush=True,
    )
    if not ok:
        raise RuntimeError(f"bare cycle check failed: {result}")
    return result


def run(driver_id: str, plan: Plan, st: Stores) -> dict[str, Any]:
    """Every batch size x client count on ``driver_id``'s store; the best run marked."""
    store = driver_id.partition("-")[2]
    if driver_id not in STORES:
        raise ValueError(f"no bare cycle for {driver_id}")
    runs: dict[str, Any] = {}
    try:
        for clients in plan.bare_clients:
            for batch in plan.bare_batches:
                r = one(store, st, plan.bare_n, batch, clients)
                runs[r["label"]] = r
    finally:
        if store == "postgres":
            stores.pg_drop(st, PG_DB)
        else:
            stores.redis_flush(st)
    out: dict[str, Any] = {"store": store, "n": plan.bare_n, "runs": runs}
    top = best(out)
    out["best"] = top[1] if top else None
    return out


def best(result: dict[str, Any] | None) -> tuple[float, str] | None:
    """The fastest verified run of a bare phase's result: (jobs/s, label)."""
    rates = [
        (float(r["jobs_per_s"]), label)
        for label, r in ((result or {}).get("runs") or {}).items()
        if r.get("exactly_once")
    ]
    return max(rates) if rates else None


def main(argv: list[str]) -> int:
    if argv[:1] != ["phase"]:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(argv[1])

    def work() -> dict[str, Any]:
        st = Stores.from_env(Path(spec["workdir"]))
        return run(spec["driver"], Plan.from_dict(spec["plan"]), st)

    return answer(work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
