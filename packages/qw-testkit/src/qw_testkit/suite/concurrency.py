"""Racing claims: threads and processes; every job claimed exactly once, none lost."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

import qw
from qw.model import JobStatus, NewJob
from qw_testkit.base import ContractBase, OpenClient, race_processes
from qw_testkit.children import claim_until_empty
from qw_testkit.gates import requires

THREADS = 8
PROCESSES = 4
JOBS = 2000
#: Seconds a race may take before the kit gives up on it (a failure, not a hang).
DEADLINE = 90.0


class ConcurrencyTests(ContractBase):
    def _race_threads(self, clients: list[qw.Client], ids: list[str]) -> None:
        start = threading.Barrier(len(clients))
        claimed: list[list[str]] = [[] for _ in clients]
        errors: list[BaseException] = []
        # Bounded even against a broken backend that never runs dry.
        deadline = time.monotonic() + DEADLINE
        most = 2 * len(ids)

        def work(index: int) -> None:
            client = clients[index]
            rnd = random.Random(index)
            try:
                start.wait()
                empty = 0
                while empty < 3 and time.monotonic() < deadline:
                    if sum(map(len, claimed)) >= most:
                        break
                    claims = client.claim(["q"], worker=f"t{index}", limit=rnd.randint(1, 8))
                    if not claims:
                        empty += 1
                        continue
                    empty = 0
                    for claim in claims:
                        claimed[index].append(claim.job.id)
                        client.complete(claim.lease, index)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        every = [job_id for ids_ in claimed for job_id in ids_]
        twice = [job_id for job_id, n in Counter(every).items() if n > 1]
        assert not twice, f"{len(twice)} jobs were claimed more than once: {twice[:5]}"
        assert sorted(every) == sorted(ids), "some jobs were never claimed"
        assert sum(1 for part in claimed if part) > 1, "only one thread ever won a claim"
        check = clients[0]
        assert check.counts() == {"q": {s: JOBS * (s is JobStatus.SUCCEEDED) for s in JobStatus}}

    @requires("thread_safe")
    def test_threads_sharing_one_client_claim_each_job_once(self, client: qw.Client) -> None:
        ids = self.enqueue_n(client, "q", JOBS)
        self._race_threads([client] * THREADS, ids)

    @requires("thread_safe")
    def test_threads_with_their_own_clients_claim_each_job_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        ids = self.enqueue_n(client, "q", JOBS)
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        self._race_threads(clients, ids)

    @requires("thread_safe")
    def test_racing_enqueues_with_one_dedupe_key_create_one_job(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        answers: list[qw.Enqueued] = []

        def enqueue(c: qw.Client) -> None:
            start.wait()
            for _ in range(10):
                answers.extend(c.enqueue([NewJob("q", 1, dedupe_key="only-one")]))

        threads = [threading.Thread(target=enqueue, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == THREADS * 10
        assert sum(a.created for a in answers) == 1
        assert len({a.id for a in answers}) == 1
        assert [j.id for j in client.list_jobs()] == [answers[0].id]

    @requires("thread_safe")
    def test_racing_enqueues_lose_nothing(self, client: qw.Client, open_client: OpenClient) -> None:
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        made: list[str] = []

        def enqueue(c: qw.Client) -> None:
            start.wait()
            for _ in range(10):
                made.extend(a.id for a in c.enqueue([NewJob("q", i) for i in range(10)]))

        threads = [threading.Thread(target=enqueue, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(made) == THREADS * 100
        assert sorted(j.id for j in client.list_jobs(limit=10_000)) == sorted(made)
        assert client.counts()["q"][JobStatus.QUEUED] == THREADS * 100

    @requires("multi_process")
    def test_processes_claim_each_job_once(self, client: qw.Client) -> None:
        url = self.backend_url()
        if url is None:
            pytest.skip(
                f"{type(self).__name__}.backend_url() returns None, so child processes "
                "cannot open the store"
            )
        ids = self.enqueue_n(client, "q", JOBS)
        reports = race_processes(
            claim_until_empty,
            lambda start, results: (
                url,
                client.namespace,
                "q",
                start,
                results,
                10,
                2 * JOBS,
                DEADLINE,
            ),
            count=PROCESSES,
            timeout=180,
        )
        every = [job_id for _, part in reports for job_id in part]
        twice = [job_id for job_id, n in Counter(every).items() if n > 1]
        assert not twice, f"{len(twice)} jobs were claimed by two processes: {twice[:5]}"
        assert sorted(every) == sorted(ids), "some jobs were never claimed"
        assert sum(1 for _, part in reports if part) > 1, "only one process ever won a claim"
        assert client.counts() == {"q": {s: JOBS * (s is JobStatus.SUCCEEDED) for s in JobStatus}}
        by_pid = Counter(job.result for job in client.list_jobs(limit=10_000))
        assert by_pid == Counter({pid: len(part) for pid, part in reports if part})
