"""What does the done notification cost ``finish``?

N threads complete single jobs (one ``complete()`` call each, as workers
do) of a namespace whose jobs were all claimed first. Variants, alternated
round by round so a busy machine weighs on each alike:

- ``with``: the shipped statement, nobody waiting for results (no row in
  ``result_listeners``: the statement sends no done notification);
- ``without``: the same statement with the done notification taken out;
- ``listening``: the shipped statement while the backend's results
  listener is registered, so every finish notifies.

    python packages/qw-postgres/benchmarks/finish_notify.py JOBS THREADS ROUNDS [BASE_URL]

The results are in docs/backends/postgres.md (Finish with the done notification).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import threading
import time
import uuid

import qw
from qw_postgres import PostgresBackend
from qw_postgres.queries import Queries

SCHEMA = "qw_bench"
VARIANTS = ("with", "without", "listening")


def without_done(q: Queries) -> Queries:
    """``q`` with FINISH's done notification cut out of its ``woke`` CTE."""
    text = q.finish.decode()
    start = text.index("+ (\n        SELECT count(pg_notify(%(done)s")
    end = text.index(") AS n", start)
    return dataclasses.replace(q, finish=(text[:start] + text[end + 2 :]).encode())


def finishes_per_s(client: qw.Client, jobs: int, threads: int) -> float:
    client.enqueue([qw.NewJob("q", i) for i in range(jobs)])
    claims: list[qw.Claim] = []
    while len(claims) < jobs:
        claims += client.claim(["q"], worker="bench", limit=1000)
    shares = [claims[i::threads] for i in range(threads)]

    def work(share: list[qw.Claim]) -> None:
        for claim in share:
            client.complete(claim.lease)

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return jobs / (time.perf_counter() - started)


def main() -> None:
    jobs, threads, rounds = (int(a) for a in sys.argv[1:4])
    base = sys.argv[4] if len(sys.argv) > 4 else "postgresql://postgres@127.0.0.1:5432/test"
    url = f"{base}?schema={SCHEMA}&pool_max={max(threads, 2)}"
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            backend = PostgresBackend.from_url(url, namespace="b" + uuid.uuid4().hex[:8])
            if variant == "without":
                backend._q = without_done(backend._q)
            if variant == "listening":
                backend._ensure_done_listener()
            client = qw.Client(backend)
            try:
                results[variant].append(finishes_per_s(client, jobs, threads))
            finally:
                client.close()
    for variant, values in results.items():
        spread = ", ".join(f"{v:.0f}" for v in values)
        print(f"{variant:>9}: median {statistics.median(values):.0f} finishes/s ({spread})")


if __name__ == "__main__":
    main()
