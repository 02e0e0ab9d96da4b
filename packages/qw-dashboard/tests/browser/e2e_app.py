"""The tasks the browser tests' real worker runs (``qw worker e2e_app:app``).

``register(app)`` puts the same tasks, under fixed names, on any ``qw.App``:
the worker subprocess imports this module by name (``PYTHONPATH`` holds this
directory), while a test builds its own app on its own namespace and
enqueues through it; the fixed names make both agree on the payload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qw

QUEUE = "work"
OTHER_QUEUE = "other"


@dataclass(frozen=True)
class Tasks:
    """The registered tasks, for a test to enqueue."""

    work: Any
    flaky: Any
    fetch: Any
    score: Any
    combine: Any
    double: Any
    report: Any


def register(app: qw.App) -> Tasks:
    """Register every e2e task on ``app`` under its fixed ``e2e.*`` name."""

    @app.task(name="e2e.work", queue=QUEUE)
    def work(ms: int = 0) -> int:
        time.sleep(ms / 1000)
        return ms

    @app.task(name="e2e.flaky", queue=QUEUE, max_attempts=1)
    def flaky(marker: str, second_run_ms: int = 0) -> str:
        # The marker file is the state that survives between attempts: the
        # first run creates it and fails, any later run finds it and succeeds.
        path = Path(marker)
        if not path.exists():
            path.write_text("failed once\n")
            raise RuntimeError(f"first run fails on purpose ({path.name})")
        time.sleep(second_run_ms / 1000)
        return "second run succeeded"

    @app.task(name="e2e.fetch", queue=QUEUE)
    def fetch(user_id: int) -> dict[str, int]:
        time.sleep(0.05)
        return {"id": user_id}

    @app.task(name="e2e.score", queue=QUEUE)
    def score(user: dict[str, int]) -> int:
        time.sleep(0.05)
        return user["id"] * 10

    @app.task(name="e2e.combine", queue=QUEUE)
    def combine(a: int, b: int) -> int:
        return a + b

    @app.task(name="e2e.double", queue=QUEUE)
    def double(value: int) -> int:
        time.sleep(0.05)
        return value * 2

    @app.task(name="e2e.report", queue=QUEUE)
    def report(total: int, parts: list[int]) -> str:
        return f"total {total}, parts {sum(parts)}"

    return Tasks(work, flaky, fetch, score, combine, double, report)


#: The worker's app: ``qw worker --url ... --namespace ...`` configures it.
app = qw.App()
tasks = register(app)
