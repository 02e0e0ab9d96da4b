"""Screenshots of the dashboard's main pages, for docs/screenshots/ (shown in the README).

    python packages/qw-dashboard/tests/browser/screenshots.py [--url URL] [--out DIR]

Fills a store with a small shop's day — queues with jobs in every status, a
paused queue, a failed job with its error, a workflow mid-run, a worker —
starts ``qw dashboard`` and ``qw worker`` on it as real processes, and saves
PNGs of the overview, the jobs list, a failed job's page and the workflow's
DAG, taken with headless Chromium. The store defaults to a fresh SQLite file
in a temporary directory; ``--url`` names another (a fresh namespace is used).

The worker imports this module as ``screenshots`` (it puts this directory on
``PYTHONPATH``), so the tasks below are the ones it runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import qw
from qw.model import JobStatus

app = qw.App()


@app.task(name="shop.send_email", queue="emails", max_attempts=3, backoff=0.2)
def send_email(to: str, template: str) -> dict[str, str]:
    time.sleep(random.uniform(0.02, 0.1))
    return {"to": to, "template": template, "message_id": f"<{abs(hash(to)) % 10**8}@mail>"}


@app.task(name="shop.resize_image", queue="images", max_attempts=3)
def resize_image(image_id: int, sizes: list[int], slow_s: float = 0.0) -> dict[str, object]:
    job = qw.current_job()
    for done, size in enumerate(sizes, 1):
        job.progress((done - 1) / len(sizes), f"resizing to {size}px")
        time.sleep(slow_s / len(sizes) if slow_s else 0.03)
    job.progress(1.0, "done")
    return {"image": image_id, "sizes": sizes}


class ReportError(RuntimeError):
    """A report that cannot be built from the data there is."""


@app.task(name="shop.build_report", queue="reports", max_attempts=2, backoff=0.2)
def build_report(region: str, day: str) -> dict[str, object]:
    time.sleep(0.05)
    if region == "apac":
        raise ReportError(f"no orders for region {region!r} on {day}: the export is empty")
    return {"region": region, "day": day, "orders": 120 + len(region) * 7}


@app.task(name="shop.charge_card", queue="billing", max_attempts=5)
def charge_card(order_id: int, cents: int) -> dict[str, object]:
    return {"order": order_id, "charged": cents}


@app.task(name="shop.fetch_orders", queue="pipeline")
def fetch_orders(day: str) -> dict[str, object]:
    time.sleep(0.1)
    return {"day": day, "regions": ["eu", "us", "apac"], "orders": 412}


@app.task(name="shop.tally_region", queue="pipeline")
def tally_region(orders: dict[str, object], region: str, slow_s: float = 0.0) -> int:
    time.sleep(slow_s or 0.1)
    return {"eu": 163, "us": 201, "apac": 48, "latam": 95}[region]


@app.task(name="shop.render_chart", queue="pipeline")
def render_chart(total: int) -> str:
    return f"chart-{total}.png"


@app.task(name="shop.publish_report", queue="pipeline")
def publish_report(tallies: list[int], chart: str) -> str:
    return f"{sum(tallies)} orders, {chart}"


QUEUES = ("emails", "images", "reports", "pipeline")
DAY = "2026-11-30"


def fill(client: qw.Client, shop: qw.App) -> dict[str, str]:
    """Enqueue the demo; answers the ids the screenshots open.

    The jobs are built in one mixed order (ids follow creation), so the
    first page of the jobs list shows every kind and status side by side.
    """
    # Billing is switched off by an operator: its jobs wait, queued.
    client.set_enabled(False, "billing")
    regions = ("eu", "us", "apac", "latam")
    jobs: list[qw.NewJob] = []
    later: list[str] = []
    failing = ""
    for i in range(16):
        template = "welcome" if i % 3 else "receipt"
        jobs.append(send_email.job(f"customer{i}@example.com", template))
        jobs.append(resize_image.job(1000 + i, [128, 512, 1024]))
        if i < len(regions):
            report = build_report.job(regions[i], DAY)
            failing = report.id if regions[i] == "apac" else failing
            jobs.append(report)
        if i % 3 == 1:
            jobs.append(charge_card.job(5000 + i, 1299 + 100 * i))
        if i in (2, 6):  # still running when the pictures are taken
            jobs.append(resize_image.job(2000 + i, [256, 1024, 2048, 4096], slow_s=600))
        if i in (3, 5, 9):  # due tomorrow; two are cancelled below
            reminder = send_email.options(delay=86_400).job(f"vip{i}@example.com", "reminder")
            later.append(reminder.id)
            jobs.append(reminder)
    jobs += [send_email.job(f"customer{i}@example.com", "welcome") for i in range(16, 48)]
    shop.enqueue_many(jobs)
    client.cancel(later[0])
    client.cancel(later[1])

    wf = shop.workflow(f"nightly-sales-{DAY}")
    orders = wf.add(fetch_orders, DAY)
    tallies = [
        wf.add(tally_region, orders, region, slow_s=600 if region == "apac" else 0.0)
        for region in regions
    ]
    chart = wf.add(render_chart, tallies[0])
    published = wf.add(publish_report, tallies, chart)
    wf.add(send_email.options(queue="emails"), "sales@example.com", "nightly", after=[published])
    handle = wf.enqueue()
    return {"failed_job": failing, "workflow": handle.id}


def settle(client: qw.Client, ids: dict[str, str], timeout: float = 60) -> None:
    """Wait until everything fast has run: only the slow jobs are left running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failed = client.get(ids["failed_job"]).status == JobStatus.FAILED
        live = sum(
            counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.RUNNING, 0)
            for queue, counts in client.counts().items()
            if queue != "billing"
        )
        # Left: two slow resizes, the slow tally, and the e-mail due tomorrow.
        if failed and live <= 4:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the demo did not settle: {client.counts()}")


def shoot(driver: object, path: Path, max_height: int = 1100) -> None:
    """Save the page at its full height (up to ``max_height``) as ``path``."""
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(driver, WebDriver)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(height + 100, 700), max_height))
    time.sleep(0.3)  # let the resized window repaint before the capture
    driver.save_screenshot(str(path))
    print(f"screenshots: wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the store (default: a fresh SQLite file)")
    parser.add_argument("--namespace", default="shop")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[4] / "docs" / "screenshots"
    )
    args = parser.parse_args(argv)

    from browser_harness import Dashboard, Worker, browser_missing, chrome, wait_page, wait_ticks

    reason = browser_missing()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qw-screenshots-") as tmp:
        url = args.url or f"sqlite:///{tmp}/shop.db"
        random.seed(7)
        client = qw.open(url, namespace=args.namespace)
        ids = fill_with(client, url, args.namespace)
        worker = Worker(url, args.namespace, client, queues=QUEUES, app="screenshots:app")
        dashboard = Dashboard(url, args.namespace, refresh_ms=1000)
        driver = chrome(Path(tmp) / "profile")
        try:
            settle(client, ids)
            pages = {
                "overview.png": (dashboard.page(), "overview"),
                "jobs.png": (dashboard.page("jobs"), "jobs"),
                "job.png": (dashboard.job_page(ids["failed_job"]), "job"),
                "workflow.png": (dashboard.workflow_page(ids["workflow"]), "workflow"),
            }
            for name, (address, page) in pages.items():
                driver.set_window_size(1280, 900)
                driver.get(address)
                selector = f'main[data-page="{page}"]'
                wait_page(driver, lambda d: d.find_elements("css selector", selector))  # noqa: B023
                wait_ticks(driver, 1)  # one live refresh applied: what is shown is current
                shoot(driver, args.out / name)
        finally:
            driver.quit()
            dashboard.stop()
            worker.stop(timeout=3)
            client.close()
    return 0


def fill_with(client: qw.Client, url: str, namespace: str) -> dict[str, str]:
    """Enqueue the demo through this module's app, bound to ``url`` for the run."""
    app.configure(url=url, namespace=namespace)
    try:
        return fill(client, app)
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
