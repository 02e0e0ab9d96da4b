"""What a backend declares about itself, and what the testkit gates on.

Every flag is a promise the contract suite checks. A flag left False is not
a failure: the suite skips the tests that need it and says which flag.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from qw.validation import DEFAULT_MAX_PAYLOAD_BYTES

__all__ = ["Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A backend's declared abilities.

    Attributes:
        thread_safe: one backend object may be shared by many threads.
        multi_process: several processes (each with its own backend object)
            may work one namespace at once and claims stay exactly-once.
        native_wakeup: :meth:`~qw.contract.Backend.wait` is woken by the store
            pushing a signal (LISTEN/NOTIFY, pub/sub, a change feed) rather
            than by a bounded poll.
        durable: with the store's default settings, an acknowledged write
            survives a crash of the store's process.
        queue_switch: the ON/OFF switch works per queue as well as per
            namespace.
        atomic_settle: a step's end settles its children, and ends its
            workflow, in the same atomic write (see the contract's
            workflows section); False for a store that does it after, by an
            idempotent path that ``reclaim_expired`` completes after a crash.
        limits: concurrency and rate limits per limit key, and fair
            claiming, enforced at claim (see :meth:`~qw.contract.Backend.claim`);
            with False the client refuses jobs that ask for either.
        schedules: the schedule records periodic jobs need
            (:meth:`~qw.contract.Backend.advance_schedule`).
        progress: a running job's progress reports are stored on the job
            and committed with an outbox event
            (:meth:`~qw.contract.Backend.set_progress`).
        result_wakeup: :meth:`~qw.contract.Backend.wait_finished` is woken
            when a job of the namespace ends, rather than left to the
            client's bounded poll.
        retry: a ``failed`` or ``cancelled`` job can be put back in its
            queue (:meth:`~qw.contract.Backend.retry`); with False the
            client refuses the call before any I/O.
        transactional: jobs can be enqueued, and finished, inside the
            application's own open transaction on the store
            (:meth:`~qw.contract.Backend.enqueue_in`).
        cross_queue_atomic: a call that spans queues holds across all of
            the namespace's queues: a batch or a workflow is one atomic
            write whatever its queues, a claim over several queues takes
            them in one priority order, and job ids, dedupe keys and limit
            keys are unique and counted namespace-wide. False for a store
            that spreads queues over shards (Redis ``shards=N``): these hold
            among the queues of one shard, and a batch or workflow spanning
            shards raises :class:`~qw.errors.CrossShard`.
        max_payload_bytes: the largest payload (as UTF-8 JSON) accepted.
        stand_in: the name of a stand-in for the real store (for example
            ``"mongomock"``), when the backend talks to one; None for a real
            store. Test output and ``qw backends`` show it.
    """

    thread_safe: bool = True
    multi_process: bool = False
    native_wakeup: bool = False
    durable: bool = False
    queue_switch: bool = True
    atomic_settle: bool = True
    limits: bool = False
    schedules: bool = False
    progress: bool = False
    result_wakeup: bool = False
    retry: bool = False
    transactional: bool = False
    cross_queue_atomic: bool = True
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    stand_in: str | None = None

    def flags(self) -> dict[str, bool]:
        """The boolean capabilities by name, for display."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), bool)}
