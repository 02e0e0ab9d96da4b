"""The fixtures and helpers every contract module builds on.

A backend author subclasses :class:`qw_testkit.BackendContractTests` and
implements :meth:`ContractBase.make_backend` (and, to enable the
multi-process test, :meth:`ContractBase.backend_url`). Every test then talks
to the backend through :class:`qw.Client`, so validation runs as users see it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import qw
from qw.capabilities import Capabilities
from qw.contract import Switches
from qw.model import Event, Job, JobStatus, NewJob, WorkerInfo
from qw_testkit.gates import MARKER, capability_skip_reason, stand_in_note

__all__ = [
    "ContractBase",
    "OpenClient",
    "Snapshot",
    "new_namespace",
    "race_processes",
    "snapshot",
]

OpenClient = Callable[[str], qw.Client]


#: How long spawned children may take to import and open the store.
_CHILDREN_READY_S = 60.0


def new_namespace() -> str:
    """A fresh namespace name, so that no two tests (or runs) share data."""
    return "t" + uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Snapshot:
    """Everything observable in one namespace, to prove a call changed nothing."""

    counts: dict[str, dict[JobStatus, int]]
    jobs: list[Job]
    events: list[Event]
    switches: Switches
    workers: list[WorkerInfo]


def race_processes(
    target: Callable[..., None],
    args: Callable[[Any, Any], tuple[Any, ...]],
    *,
    count: int,
    timeout: float,
) -> list[tuple[int, Any]]:
    """Run ``count`` spawned children ``target(*args(start, results))``, released together.

    ``start`` is a barrier each child waits on (``start.wait(s)``) once it
    is ready; the parent joins it last, so no child starts racing while
    another is still importing. Each child puts ``("ok", pid, part)`` or
    ``("error", pid, traceback)`` on ``results``; returns ``(pid, part)`` in
    the order they arrived. A child's error, one that never gets ready, or
    one silent for ``timeout`` seconds fails the test. Every child is
    joined, and killed if it is still alive 30 s later, whatever happens.
    """
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(count + 1), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=args(start, results), daemon=True) for _ in range(count)
    ]
    for p in procs:
        p.start()
    reports: list[tuple[str, int, Any]] = []
    try:
        try:
            start.wait(_CHILDREN_READY_S)
        except threading.BrokenBarrierError:
            pass  # a child never got ready: it reports why, or the wait below fails
        for _ in procs:
            reports.append(results.get(timeout=timeout))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {count} child processes reported back")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [r for r in reports if r[0] != "ok"]
    assert not errors, "\n".join(r[2] for r in errors)
    return [(pid, part) for _, pid, part in reports]


def snapshot(client: qw.Client) -> Snapshot:
    """Read every observable part of ``client``'s namespace."""
    return Snapshot(
        counts=client.counts(),
        jobs=client.list_jobs(limit=10_000),
        events=client.fetch_events(limit=10_000),
        switches=client.switches(),
        workers=client.workers(),
    )


class ContractBase:
    """Fixtures (``client``, ``open_client``, ``namespace``) and helpers for the suite."""

    # -- what a backend author provides -----------------------------------

    def make_backend(self, namespace: str) -> qw.Backend:
        """Return a NEW backend object bound to ``namespace``, on the same store every call."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_backend(self, namespace) -> qw.Backend"
        )

    def backend_url(self) -> str | None:
        """A URL a child process opens with ``qw.open(url, namespace=...)``; None if none."""
        return None

    def make_async_backend(self, namespace: str) -> Any:
        """A NEW :class:`qw.aio.AsyncBackend` bound to ``namespace``, on the same store.

        The async suite drives it through :class:`qw.aio.AsyncClient`. The
        default wraps :meth:`make_backend` in :class:`qw.aio.ThreadedAsyncBackend`;
        a backend with a native async twin returns that instead (it is
        called inside the running event loop, so it may create loop-bound
        objects; a coroutine is awaited).
        """
        from qw.aio import ThreadedAsyncBackend

        return ThreadedAsyncBackend(self.make_backend(namespace))

    def app_connection(self) -> contextlib.AbstractContextManager[Any]:
        """A context giving a NEW application connection on the store, closed at exit.

        For a backend declaring ``transactional``: a DB-API connection of
        its driver (not autocommit), on the store the backend writes to,
        as an application would hold one. The transaction suite writes its
        own table through it with plain SQL (``CREATE TABLE``, ``INSERT``
        of literals, ``SELECT``), and commits or rolls back. A backend that
        declares ``transactional`` must implement it; the suite fails,
        naming this hook, if it does not.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement app_connection(self)")

    def interrupt_settle(self, client: qw.Client) -> contextlib.AbstractContextManager[None]:
        """A context inside which ``client``'s backend stops a step's end after the step's write.

        Only for a backend whose capabilities say ``atomic_settle=False`` (it
        settles a step's children, and ends its workflow, after the step's
        own write). While the context is active, a call that ends a step
        (``complete`` and the like) applies the step's own write, its status
        and its event, and then stops as a crash there would: the children
        are not settled and the workflow is not counted. The call may return
        or raise; either is accepted. After the context exits the backend
        works normally, and ``reclaim_expired`` must complete what was left.

        Not implemented by default: such a backend's test of that recovery
        is skipped, and the skip names this hook.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement interrupt_settle(self, client)"
        )

    # -- fixtures ----------------------------------------------------------

    @pytest.fixture
    def open_client(self, request: pytest.FixtureRequest) -> Iterator[OpenClient]:
        """A factory: a Client on the same store for any namespace; all closed at teardown."""
        opened: list[qw.Client] = []

        def open_(namespace: str) -> qw.Client:
            client = qw.Client(self.make_backend(namespace))
            opened.append(client)
            _record_backend(request.config, client)
            return client

        yield open_
        errors = []
        for client in reversed(opened):
            try:
                client.close()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        if errors:
            raise errors[0]

    @pytest.fixture
    def namespace(self) -> str:
        """This test's own namespace."""
        return new_namespace()

    @pytest.fixture
    def client(self, open_client: OpenClient, namespace: str) -> qw.Client:
        """A Client on a fresh namespace, closed at teardown."""
        return open_client(namespace)

    @pytest.fixture(autouse=True)
    def _qw_capability_gate(self, request: pytest.FixtureRequest, client: qw.Client) -> None:
        """Skip, with the reason, a test whose ``requires(...)`` the backend does not declare."""
        flags: tuple[str, ...] = ()
        for mark in request.node.iter_markers(MARKER):
            flags += tuple(mark.args)
        reason = capability_skip_reason(client.backend.name, client.capabilities, flags)
        if reason is not None:
            pytest.skip(reason)

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def caps(client: qw.Client) -> Capabilities:
        return client.capabilities

    @staticmethod
    def enqueue_n(client: qw.Client, queue: str, n: int, **options: Any) -> list[str]:
        """Enqueue ``n`` jobs with payload ``{"i": index}``; return their ids in order."""
        ids: list[str] = []
        for start in range(0, n, 1000):
            batch = [NewJob(queue, {"i": i}, **options) for i in range(start, min(n, start + 1000))]
            answers = client.enqueue(batch)
            assert all(a.created for a in answers)
            ids.extend(a.id for a in answers)
        return ids

    @staticmethod
    def claim_one(client: qw.Client, queue: str = "q", lease_s: float = 30.0) -> qw.Claim:
        """Claim exactly one job from ``queue`` (the test fails if there is none)."""
        claims = client.claim([queue], worker="w-test", lease_s=lease_s, limit=1)
        assert len(claims) == 1, f"expected one claimable job on {queue!r}, got {claims!r}"
        return claims[0]

    @staticmethod
    def tally(jobs: list[Job]) -> dict[str, dict[JobStatus, int]]:
        """What ``Client.counts()`` must say about ``jobs``."""
        out: dict[str, dict[JobStatus, int]] = {}
        for job in jobs:
            out.setdefault(job.queue, dict.fromkeys(JobStatus, 0))[job.status] += 1
        return dict(sorted(out.items()))

    @staticmethod
    def sleep_past(deadline: float) -> None:
        """Sleep until ``time.monotonic()`` passes ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)


def _record_backend(config: pytest.Config, client: qw.Client) -> None:
    # The pytest11 plugin reads this to print which backends (and stand-ins) ran.
    from qw_testkit.pytest_plugin import record_backend

    name = client.backend.name
    record_backend(config, name, client.capabilities, stand_in_note(name, client.capabilities))
