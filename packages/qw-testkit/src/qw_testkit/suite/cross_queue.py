"""Calls that span many queues: all or nothing, claim once, order within each queue.

Every backend runs these. One that keeps each queue on one of several shards
(``cross_queue_atomic=False``, such as Redis with ``shards=N``) may refuse a
batch or workflow spanning shards with :class:`~qw.errors.CrossShard`, but
then must have written nothing; a claim over queues on several shards must
still lease each job once and take each queue in priority, then FIFO,
order; the outbox, the switches and inspection must still see every queue.
A backend that declares ``cross_queue_atomic`` must take such a batch whole
and claim across queues in one priority order.
"""

from __future__ import annotations

from collections import Counter

import qw
from qw.errors import CrossShard, DuplicateJob
from qw.model import EventSpec, JobStatus, NewJob
from qw_testkit.base import ContractBase, snapshot

#: Enough names that a store spreading queues over a few shards spreads these.
QUEUES = tuple(f"span{i}" for i in range(8))


def _batch(per_queue: int) -> list[NewJob]:
    return [NewJob(q, {"q": q, "i": i}) for i in range(per_queue) for q in QUEUES]


class CrossQueueTests(ContractBase):
    def test_a_batch_over_many_queues_is_all_or_nothing(self, client: qw.Client) -> None:
        before = snapshot(client)
        jobs = _batch(3)
        try:
            answers = client.enqueue(jobs)
        except CrossShard:
            assert not self.caps(client).cross_queue_atomic, "refused, yet declared atomic"
            assert snapshot(client) == before, "a refused batch must write nothing"
            return
        assert [a.id for a in answers] == [j.id for j in jobs]
        assert {q: c[JobStatus.QUEUED] for q, c in client.counts().items()} == dict.fromkeys(
            QUEUES, 3
        )

    def test_a_refused_batch_over_many_queues_writes_nothing(self, client: qw.Client) -> None:
        taken = client.enqueue_one(QUEUES[-1], "first")
        before = snapshot(client)
        jobs = [*_batch(2), NewJob(QUEUES[-1], "again", id=taken.id)]
        try:
            client.enqueue(jobs)
        except (CrossShard, DuplicateJob):
            assert snapshot(client) == before
        else:
            raise AssertionError("a batch repeating an existing id must be refused")

    def test_a_workflow_over_many_queues_is_all_or_nothing(self, client: qw.Client) -> None:
        before = snapshot(client)
        w = "spanning"
        steps = [NewJob(q, i, id=f"{w}.{q}") for i, q in enumerate(QUEUES)]
        steps.append(NewJob(QUEUES[0], "end", id=f"{w}.end", parents=tuple(s.id for s in steps)))
        try:
            client.create_workflow(w, steps, output=f"{w}.end")
        except CrossShard:
            assert not self.caps(client).cross_queue_atomic, "refused, yet declared atomic"
            assert snapshot(client) == before, "a refused workflow must write nothing"
            with_one_queue = [
                NewJob(QUEUES[0], s.payload, id=s.id, parents=s.parents) for s in steps
            ]
            assert client.create_workflow(w, with_one_queue, output=f"{w}.end").created
            return
        stored = client.get_workflow(w)
        assert stored.state is qw.WorkflowState.RUNNING
        assert len(client.list_jobs(workflow=w, limit=100)) == len(steps)

    def test_claims_over_many_queues_take_each_job_once_in_queue_order(
        self, client: qw.Client
    ) -> None:
        # One batch per queue: what every store takes whole.
        order: dict[str, list[tuple[int, int]]] = {}
        ids: dict[str, tuple[str, int, int]] = {}
        for q in QUEUES:
            jobs = [NewJob(q, i, priority=(i * 7) % 3) for i in range(15)]
            for n, a in enumerate(client.enqueue(jobs)):
                ids[a.id] = (q, jobs[n].priority, n)
        seen: list[str] = []
        while batch := client.claim(QUEUES, worker="w-span", lease_s=60, limit=7):
            seen += (c.job.id for c in batch)
            assert len(seen) <= len(ids), "more claims than jobs"
        assert Counter(seen) == Counter(ids.keys()), "every job claimed exactly once"
        for job_id in seen:
            q, prio, n = ids[job_id]
            order.setdefault(q, []).append((prio, n))
        for q, taken in order.items():
            assert taken == sorted(taken), f"queue {q}: priority, then FIFO"
        if self.caps(client).cross_queue_atomic:
            prios = [ids[i][1] for i in seen]
            assert prios == sorted(prios), "one priority order across the queues"

    def test_events_of_many_queues_are_fetched_in_cursor_order_and_acked_once(
        self, client: qw.Client
    ) -> None:
        for q in QUEUES:
            client.enqueue([NewJob(q, i) for i in range(2)])
        ended: set[str] = set()
        while batch := client.claim(QUEUES, worker="w-span", lease_s=60, limit=5):
            for claim in batch:
                client.complete(claim.lease, event=EventSpec("span.done", claim.job.queue))
                ended.add(claim.job.id)
        got: list[qw.Event] = []
        while events := client.fetch_events(limit=5):
            cursors = [e.cursor for e in events]
            assert cursors == sorted(cursors)
            assert len(set(cursors)) == len(cursors)
            assert client.ack_events(cursors) == len(events)
            got += events
        assert client.ack_events([e.cursor for e in got]) == 0, "acked once"
        assert len({e.cursor for e in got}) == len(got)
        assert Counter(e.job_id for e in got if e.type == "span.done") == Counter(ended)

    def test_the_namespace_switch_stops_every_queue(self, client: qw.Client) -> None:
        for q in QUEUES:
            client.enqueue_one(q, q)
        client.set_enabled(False)
        assert client.claim(QUEUES, worker="w-span", limit=100) == []
        for q in QUEUES:
            assert client.claim([q], worker="w-span") == [], q
        assert client.switches().enabled is False
        client.set_enabled(True)
        claimed = client.claim(QUEUES, worker="w-span", limit=100)
        assert sorted(c.job.queue for c in claimed) == sorted(QUEUES)

    def test_inspection_sees_every_queue(self, client: qw.Client) -> None:
        ids: list[str] = []
        for q in QUEUES:
            ids += (a.id for a in client.enqueue([NewJob(q, i) for i in range(3)]))
        assert {q: c[JobStatus.QUEUED] for q, c in client.counts().items()} == dict.fromkeys(
            QUEUES, 3
        )
        paged: list[str] = []
        after = None
        while page := client.list_jobs(limit=5, after=after):
            paged += (j.id for j in page)
            after = page[-1].id
        assert paged == sorted(ids), "every job once, by id"
        for q in QUEUES:
            assert {j.id for j in client.list_jobs(queue=q)} == {
                i for i in ids if client.get(i).queue == q
            }
        for job_id in ids[:: len(QUEUES) // 2 + 1]:
            assert client.cancel(job_id) is JobStatus.CANCELLED
            assert client.get(job_id).status is JobStatus.CANCELLED
