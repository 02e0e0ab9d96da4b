"""The ``qw demo`` application: a few kinds of task, some failing, drained by a real worker.

Run it with ``qw demo``, or import :data:`app` to poke at the tasks. Jobs
are deterministic: which ones fail, and how often, depends only on their
arguments and attempt number. Beside them runs one small workflow (see
:func:`build_workflow`): a fetch, three steps that each take its result,
and a report that takes all three of theirs.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qw.app import App
from qw.backoff import Backoff
from qw.model import JSONValue, NewJob, WorkflowState
from qw.worker.context import current_job

if TYPE_CHECKING:
    from qw.workflow import WorkflowBuilder

__all__ = ["DemoSummary", "app", "build_jobs", "build_workflow", "run_demo", "total_jobs"]

NAMESPACE = "demo"
QUEUES = ("images", "emails", "billing", "reports", "sales")
#: Delayed jobs "an operator" cancels before they run.
CANCELLED_LATER = 5
#: The demo workflow's id, and the regions it tallies (one step each).
WORKFLOW_ID = "demo-sales"
REGIONS = ("eu", "us", "apac")
#: The workflow's steps: the fetch, one tally per region, the report.
WORKFLOW_STEPS = 1 + len(REGIONS) + 1
# Quick retries, so the demo shows them without waiting.
FAST_RETRY = Backoff(base=0.05, factor=2.0, max=0.5)

#: The demo's application; ``run_demo`` binds it to a store before use.
app = App(namespace=NAMESPACE)


@app.task(name="demo.resize_image", queue="images")
def resize_image(image_id: int, width: int) -> dict[str, int]:
    """CPU work: a few rounds of hashing stand in for image processing."""
    digest = str(image_id).encode()
    for _ in range(20):
        digest = hashlib.sha256(digest).digest()
    return {"image_id": image_id, "width": width, "checksum": digest[0]}


@app.task(name="demo.send_email", queue="emails", max_attempts=4, backoff=FAST_RETRY)
async def send_email(to: str, subject: str) -> str:
    """I/O work (async): every 7th address's mail server is down for one attempt."""
    await asyncio.sleep(0.001)
    if sum(map(ord, to)) % 7 == 0 and current_job().attempt == 1:
        raise ConnectionError(f"mail server for {to} is not answering")
    return f"sent {subject!r} to {to}"


class CardDeclined(Exception):
    """A payment that no retry will fix."""


@app.task(
    name="demo.charge_card",
    queue="billing",
    max_attempts=3,
    backoff=FAST_RETRY,
    no_retry=(CardDeclined,),
)
def charge_card(customer: int, cents: int) -> dict[str, int]:
    """Every 50th card is declined (failed at once); every 40th gateway call flakes twice."""
    if customer % 50 == 49:
        raise CardDeclined(f"card of customer {customer} declined")
    if customer % 40 == 7 and current_job().attempt <= 2:
        raise TimeoutError("payment gateway timed out")
    return {"customer": customer, "charged": cents}


@app.task(name="demo.build_report", queue="reports", max_attempts=2, backoff=FAST_RETRY)
def build_report(report_id: int) -> int:
    """Every 100th report is broken for good: it fails both attempts (dead letter)."""
    if report_id % 100 == 99:
        raise ValueError(f"report {report_id} has no data")
    return sum(range(report_id % 1000))


@app.task(name="demo.fetch_sales", queue="sales")
def fetch_sales(day: int) -> dict[str, list[int]]:
    """The workflow's first step: one day's sales in cents, by region (made up, repeatable)."""
    return {
        region: [(day * 31 + i * 17 + k * 7) % 500 + 100 for k in range(10 + i)]
        for i, region in enumerate(REGIONS)
    }


@app.task(name="demo.tally_region", queue="sales")
def tally_region(sales: dict[str, list[int]], region: str) -> dict[str, Any]:
    """One of three parallel steps: the fetched sales of one region, added up."""
    amounts = sales[region]
    return {"region": region, "orders": len(amounts), "cents": sum(amounts)}


@app.task(name="demo.sales_report", queue="sales")
def sales_report(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """The fan-in: every region's tally in one report (the workflow's result)."""
    return {
        "orders": sum(t["orders"] for t in tallies),
        "cents": sum(t["cents"] for t in tallies),
        "regions": [t["region"] for t in tallies],
    }


def build_workflow(day: int = 1) -> WorkflowBuilder:
    """fetch_sales, then tally_region for each region (in parallel), then sales_report."""
    wf = app.workflow(WORKFLOW_ID)
    sales = wf.add(fetch_sales, day)
    tallies = [wf.add(tally_region, sales, region) for region in REGIONS]
    wf.add(sales_report, tallies)
    return wf


def total_jobs(count: int) -> int:
    """Every job ``run_demo(jobs=count)`` makes: plain ones, the cancelled ones, the steps."""
    return count + CANCELLED_LATER + WORKFLOW_STEPS


def build_jobs(count: int) -> list[NewJob]:
    """``count`` jobs spread over the four task kinds."""
    makers: list[Callable[[int], NewJob]] = [
        lambda i: resize_image.job(i, 640),
        lambda i: send_email.job(f"user{i}@example.com", "Welcome"),
        lambda i: charge_card.job(i, 100 + i % 900),
        lambda i: build_report.job(i),
    ]
    return [makers[i % len(makers)](i // len(makers)) for i in range(count)]


@dataclass(slots=True)
class DemoSummary:
    """What ``run_demo`` measured."""

    url: str
    jobs: int
    cancelled_by_operator: int
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    events: Counter[str] = field(default_factory=Counter)
    #: The workflow: its id, steps, the state it ended in, and its result.
    workflow: str = WORKFLOW_ID
    workflow_steps: int = WORKFLOW_STEPS
    workflow_state: str = "running"
    workflow_result: JSONValue = None

    @property
    def throughput(self) -> float:
        """Jobs finished per second of worker time (retries included in the work)."""
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def default_database() -> Path:
    """A fresh SQLite file in a new temporary directory."""
    return Path(tempfile.mkdtemp(prefix="qw-demo-")) / "qw-demo.db"


def run_demo(
    url: str,
    *,
    jobs: int = 3000,
    concurrency: int = 16,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 120.0,
) -> DemoSummary:
    """Enqueue ``jobs`` jobs at ``url``, drain them with an in-process worker, summarise.

    ``progress(done, total)`` is called as jobs reach a terminal state.
    Five extra delayed jobs are cancelled by "an operator" before they run,
    and the workflow of :func:`build_workflow` runs beside the jobs.
    """
    app.configure(url=url)
    client = app.client
    try:
        flow = build_workflow().enqueue()
        app.enqueue_many(build_jobs(jobs))
        later = app.enqueue_many(
            [build_report.options(delay=3600).job(i) for i in range(CANCELLED_LATER)]
        )
        for answer in later:
            client.cancel(answer.id)
        total = jobs + len(later) + WORKFLOW_STEPS
        worker = app.worker(list(QUEUES), concurrency=concurrency, poll_interval=0.05)
        started = time.monotonic()
        thread = worker.start()
        try:
            done = _wait_for_terminal(app, total, progress, started + timeout)
        finally:
            worker.stop(timeout=30)
            thread.join(30)
        seconds = time.monotonic() - started
        summary = DemoSummary(url, total, len(later), seconds, retries=worker.stats.retried)
        ended = flow.status()
        summary.workflow_state = ended.state.value
        if ended.state is WorkflowState.SUCCEEDED and ended.output is not None:
            summary.workflow_result = client.get(ended.output).result
        for by_status in client.counts().values():
            for status, n in by_status.items():
                if n:
                    summary.statuses[status.value] += n
        while batch := client.fetch_events(1000):
            summary.events.update(e.type for e in batch)
            client.ack_events([e.cursor for e in batch])
        if done < total:
            raise TimeoutError(f"only {done} of {total} jobs finished within {timeout} s")
        return summary
    finally:
        app.close()


def _wait_for_terminal(
    demo_app: App, total: int, progress: Callable[[int, int], None] | None, deadline: float
) -> int:
    done = 0
    stop = threading.Event()
    while done < total and time.monotonic() < deadline:
        counts = demo_app.client.counts()
        done = sum(
            n for by_status in counts.values() for s, n in by_status.items() if s.is_terminal
        )
        if progress is not None:
            progress(done, total)
        stop.wait(0.1)
    return done
