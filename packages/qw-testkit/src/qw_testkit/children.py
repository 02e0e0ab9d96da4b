"""Work done in child processes (``spawn``), importable by module path."""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import qw

__all__ = [
    "advance_ticks",
    "claim_keyed_until_done",
    "claim_one_and_hang",
    "claim_until_empty",
    "finish_steps_until_done",
    "finish_steps_until_killed",
]


def claim_until_empty(
    url: str,
    namespace: str,
    queue: str,
    start: Any,
    results: Any,
    batch: int,
    most: int,
    seconds: float,
) -> None:
    """Claim and complete jobs from ``queue`` until it stays empty; report the ids claimed.

    Stops early after ``most`` claims or ``seconds``, so that a broken store
    that never runs dry fails the test instead of hanging it.

    Puts ``("ok", pid, ids)`` or ``("error", pid, traceback)`` on ``results``;
    ``start`` is an event all children wait on, so that they race.
    """
    try:
        with qw.open(url, namespace=namespace) as client:
            claimed: list[str] = []
            start.wait(60)
            deadline = time.monotonic() + seconds
            empty = 0
            while empty < 3 and len(claimed) < most and time.monotonic() < deadline:
                claims = client.claim([queue], worker=f"proc-{os.getpid()}", limit=batch)
                if not claims:
                    empty += 1
                    time.sleep(0.02)
                    continue
                empty = 0
                for claim in claims:
                    claimed.append(claim.job.id)
                    client.complete(claim.lease, os.getpid())
        results.put(("ok", os.getpid(), claimed))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def finish_steps_until_done(
    url: str,
    namespace: str,
    workflow: str,
    queue: str,
    start: Any,
    results: Any,
    batch: int,
    seconds: float,
) -> None:
    """Claim and complete steps from ``queue`` until ``workflow`` has ended.

    For each step claimed, reports whether every parent of it had succeeded
    when it was claimed: ``("ok", pid, [(job_id, parents_succeeded), ...])``
    or ``("error", pid, traceback)`` on ``results``. Gives up after
    ``seconds``, so that a store that loses a step fails the test instead of
    hanging it; ``start`` is an event all children wait on, so that they race.
    """
    try:
        with qw.open(url, namespace=namespace) as client:
            claimed: list[tuple[str, bool]] = []
            start.wait(60)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                claims = client.claim([queue], worker=f"proc-{os.getpid()}", limit=batch)
                if not claims:
                    if client.get_workflow(workflow).state != "running":
                        break
                    time.sleep(0.01)
                    continue
                for claim in claims:
                    parents = claim.job.parents
                    ok = all(
                        job is not None and job.status == "succeeded"
                        for job in client.get_many(parents)
                    )
                    claimed.append((claim.job.id, ok))
                    client.complete(claim.lease, os.getpid())
        results.put(("ok", os.getpid(), claimed))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def finish_steps_until_killed(
    url: str, namespace: str, queue: str, lease_s: float, started: Any, done: Any
) -> None:
    """Claim and complete one job at a time from ``queue``, until this process is killed.

    Sets ``started`` once the store is open and adds one to ``done.value``
    after each complete, so that the test can kill it (``SIGKILL``) mid-stream.
    """
    with qw.open(url, namespace=namespace) as client:
        started.set()
        while True:
            claims = client.claim([queue], worker=f"doomed-{os.getpid()}", lease_s=lease_s)
            if not claims:
                time.sleep(0.005)
                continue
            client.complete(claims[0].lease, os.getpid())
            done.value += 1


def claim_keyed_until_done(
    url: str,
    namespace: str,
    queue: str,
    total: int,
    hold: float,
    start: Any,
    results: Any,
    seconds: float,
) -> None:
    """Claim and complete jobs from ``queue`` until ``total`` of them have succeeded.

    Holds each claimed batch up to ``hold`` seconds, so that claims race
    while slots are taken. Reports, per job, when it surely ran:
    ``("ok", pid, [(job_id, limit_key, after_claim, before_complete), ...])``
    with ``time.monotonic()`` stamps (one clock for every process of the
    machine), or ``("error", pid, traceback)``. Gives up after ``seconds``.
    """
    try:
        with qw.open(url, namespace=namespace) as client:
            spans: list[tuple[str, str | None, float, float]] = []
            rnd = random.Random(os.getpid())
            start.wait(60)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                claims = client.claim(
                    [queue], worker=f"proc-{os.getpid()}", limit=rnd.randint(1, 4)
                )
                after_claim = time.monotonic()
                if not claims:
                    done = client.counts().get(queue, {}).get(qw.JobStatus.SUCCEEDED, 0)
                    if done >= total:
                        break
                    time.sleep(0.002)
                    continue
                time.sleep(rnd.uniform(0, hold))
                for claim in claims:
                    spans.append((claim.job.id, claim.job.limit_key, after_claim, time.monotonic()))
                    client.complete(claim.lease, os.getpid())
        results.put(("ok", os.getpid(), spans))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))


def claim_one_and_hang(url: str, namespace: str, queue: str, lease_s: float, results: Any) -> None:
    """Claim one job from ``queue`` with a ``lease_s`` lease, report it, and hang until killed.

    Puts ``("claimed", job_id, lease_expires_at)`` (or ``("none", "", None)``
    when nothing was claimable, ``("error", traceback, None)`` on an error)
    on ``results``.
    """
    try:
        client = qw.open(url, namespace=namespace)
        claims = client.claim([queue], worker=f"doomed-{os.getpid()}", lease_s=lease_s)
        if not claims:
            results.put(("none", "", None))
            return
        results.put(("claimed", claims[0].job.id, claims[0].lease.expires_at))
    except BaseException:
        results.put(("error", traceback.format_exc(), None))
        return
    while True:
        time.sleep(60)


def advance_ticks(
    url: str,
    namespace: str,
    name: str,
    ticks: Sequence[datetime],
    start: Any,
    results: Any,
) -> None:
    """Call ``advance_schedule(name, tick)`` for each of ``ticks`` in order; report the wins.

    Puts ``("ok", pid, [tick, ...])`` (the ticks this process moved the
    schedule to) or ``("error", pid, traceback)`` on ``results``; ``start``
    is an event all children wait on, so that they race.
    """
    try:
        with qw.open(url, namespace=namespace) as client:
            won: list[datetime] = []
            start.wait(60)
            for tick in ticks:
                if client.advance_schedule(name, tick):
                    won.append(tick)
        results.put(("ok", os.getpid(), won))
    except BaseException:
        results.put(("error", os.getpid(), traceback.format_exc()))
