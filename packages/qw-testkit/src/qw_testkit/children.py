"""Work done in child processes (``spawn``), importable by module path."""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import qw

__all__ = ["claim_until_empty"]


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
