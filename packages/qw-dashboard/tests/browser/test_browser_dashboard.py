"""The dashboard in a real browser: headless Chromium against ``qw dashboard`` on a real store.

Every test drives the pages through the element contract of DOM.md (the
``data-*`` hooks), waits on DOM state with WebDriverWait, and checks the
store itself as well as what the page shows. "Live" means the document was
not reloaded: a mark set on ``window`` before the change is still there
after the page shows it (see ``browser_harness.mark``).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import pytest
from browser_harness import (
    Dashboard,
    Store,
    Worker,
    browser_required,
    css,
    css_all,
    flash,
    mark,
    queue_count,
    read_all,
    same_document,
    text_of,
    wait_alert,
    wait_for,
    wait_page,
    wait_ticks,
)

import qw
from qw.model import JobStatus, Limit, WorkerInfo

try:
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
except ImportError:  # pragma: no cover - only where selenium is not installed
    if browser_required():
        raise
    pytest.skip(
        "SKIPPED LOUDLY: selenium is not installed (pip install selenium)", allow_module_level=True
    )

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

QUEUE = "work"
OTHER = "other"
BOTH_STORES = pytest.mark.parametrize("store", ["postgres", "redis"], indirect=True)


def click(driver: WebDriver, selector: str) -> None:
    """Click the element ``selector`` names, again if a live refresh replaced it meanwhile."""

    def attempt(d: WebDriver) -> bool:
        try:
            css(d, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_page(driver, attempt, 10)


def loaded(driver: WebDriver, page: str) -> Callable[[WebDriver], bool]:
    """A wait condition: the document is ``main[data-page=page]`` and fully loaded."""

    def condition(d: WebDriver) -> bool:
        ready = d.execute_script("return document.readyState") == "complete"
        return bool(ready and css_all(d, f'main[data-page="{page}"]'))

    return condition


def submit_and_wait(driver: WebDriver, selector: str, page: str) -> None:
    """Click a form button and wait until the answer (a new document) has loaded."""
    before = mark(driver)
    click(driver, selector)
    wait_page(driver, lambda d: not same_document(d, before) and loaded(d, page)(d))


def counts(store: Store, queue: str) -> dict[JobStatus, int]:
    return store.client.counts().get(queue, {})


def no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when there is none


# -- 1. pause and resume a queue ---------------------------------------------


@BOTH_STORES
def test_pausing_a_queue_stops_its_worker_and_resuming_drains_it_live(
    store: Store,
    dashboard: Dashboard,
    start_worker: Callable[..., Worker],
    driver: WebDriver,
) -> None:
    app, tasks = store.app()
    try:
        # Two slots and 300 ms jobs: the queue takes ~4.5 s to drain, so the
        # pause below lands while it is draining.
        start_worker(concurrency=2)
        app.enqueue_many([tasks.work.job(ms=300) for _ in range(30)])
        driver.get(dashboard.page())
        wait_page(driver, loaded(driver, "overview"))
        wait_page(driver, lambda d: (queue_count(d, QUEUE, "succeeded") or 0) >= 2)
        assert text_of(driver, f'tr[data-queue="{QUEUE}"] td[data-switch]') == "ON"

        submit_and_wait(driver, f'tr[data-queue="{QUEUE}"] button[data-action="pause"]', "overview")
        assert text_of(driver, f'tr[data-queue="{QUEUE}"] td[data-switch]') == "OFF"
        assert css_all(driver, f'tr[data-queue="{QUEUE}"] button[data-action="resume"]')
        assert QUEUE in flash(driver)
        assert not store.client.is_enabled(QUEUE)
        # The jobs it was running when paused finish; then nothing more starts.
        wait_for(lambda: counts(store, QUEUE).get(JobStatus.RUNNING, 0) == 0 or None, 10, "idle")
        held = counts(store, QUEUE).get(JobStatus.QUEUED, 0)
        # Paused mid-drain (it takes ~4.5 s): some started, some are held.
        assert 0 < held <= 28, held

        # Jobs enqueued while paused show up live, and stay queued, on the
        # page and in the store, while the other queue keeps being worked.
        page = mark(driver)
        app.enqueue_many([tasks.work.job(ms=0) for _ in range(5)])
        app.enqueue_many([tasks.work.options(queue=OTHER).job(ms=0) for _ in range(3)])
        wait_page(driver, lambda d: queue_count(d, QUEUE, "queued") == held + 5)
        wait_page(driver, lambda d: queue_count(d, OTHER, "succeeded") == 3)
        wait_ticks(driver, 3)
        assert queue_count(driver, QUEUE, "queued") == held + 5
        assert queue_count(driver, QUEUE, "running") == 0
        now = counts(store, QUEUE)
        assert now.get(JobStatus.QUEUED, 0) == held + 5
        assert now.get(JobStatus.RUNNING, 0) == 0
        assert text_of(driver, f'tr[data-queue="{QUEUE}"] td[data-switch]') == "OFF"
        assert same_document(driver, page)

        submit_and_wait(
            driver, f'tr[data-queue="{QUEUE}"] button[data-action="resume"]', "overview"
        )
        assert text_of(driver, f'tr[data-queue="{QUEUE}"] td[data-switch]') == "ON"
        assert store.client.is_enabled(QUEUE)
        page = mark(driver)
        wait_page(driver, lambda d: queue_count(d, QUEUE, "succeeded") == 35, timeout=30)
        assert queue_count(driver, QUEUE, "queued") == 0
        assert queue_count(driver, QUEUE, "running") == 0
        assert same_document(driver, page), "the page was reloaded instead of updated live"
        assert counts(store, QUEUE).get(JobStatus.SUCCEEDED, 0) == 35
    finally:
        app.close()


# -- 2. retry a failed job ---------------------------------------------------


def test_retrying_a_failed_job_from_its_page_runs_it_again_live(
    store: Store,
    dashboard: Dashboard,
    worker: Worker,
    driver: WebDriver,
    tmp_path: Path,
) -> None:
    if not getattr(store.client.capabilities, "retry", False):
        pytest.skip(f"{store.backend} does not declare the retry capability (qw.Client.retry)")
    app, tasks = store.app()
    try:
        # The second run takes 2 s, so the page shows it queued or running first.
        job = tasks.flaky.enqueue(str(tmp_path / "flaky-marker"), second_run_ms=2000)
        store.client.wait_finished(job.id, timeout=15)
        driver.get(dashboard.job_page(job.id))
        wait_page(driver, loaded(driver, "job"))
        assert text_of(driver, "#job-id") == job.id
        assert text_of(driver, "#job-status") == "failed"
        assert "first run fails on purpose" in (text_of(driver, "#job-error") or "")
        assert text_of(driver, "#job-attempts") == "1 / 1"
        assert not css_all(driver, 'button[data-action="cancel"]')

        submit_and_wait(driver, 'button[data-action="retry"]', "job")
        page = mark(driver)
        assert text_of(driver, "#job-status") in ("queued", "running")
        wait_page(driver, lambda d: text_of(d, "#job-status") == "succeeded", timeout=20)
        assert same_document(driver, page), "the page was reloaded instead of updated live"
        assert text_of(driver, "#job-attempts") == "2 / 2"
        assert "second run succeeded" in (text_of(driver, "#job-result") or "")
        stored = store.client.get(job.id)
        assert (stored.status, stored.attempts) == (JobStatus.SUCCEEDED, 2)
        assert not css_all(driver, 'button[data-action="retry"]')
    finally:
        app.close()


# -- 3. a workflow's DAG -----------------------------------------------------


def test_a_workflow_opened_from_the_list_draws_every_step_and_edge_and_updates_live(
    store: Store, dashboard: Dashboard, worker: Worker, driver: WebDriver
) -> None:
    app, tasks = store.app()
    try:
        # Paused until the page is open, so it sees the steps before they run.
        store.client.set_enabled(False, QUEUE)
        wf = app.workflow(f"diamond-{secrets.token_hex(4)}")
        top = wf.add(tasks.fetch, 7)
        left = wf.add(tasks.score, top)
        right = wf.add(tasks.score, top)
        joined = wf.add(tasks.combine, left, right)
        doubled = wf.map(tasks.double, [left, right])
        wf.add(tasks.report, joined, doubled)
        handle = wf.enqueue()
        steps = store.client.steps(handle.id)
        assert len(steps) == 7
        edges = {(parent, step.id) for step in steps for parent in step.parents}
        assert len(edges) == 9

        driver.get(dashboard.page())
        wait_page(driver, loaded(driver, "overview"))
        submit_and_wait(driver, 'nav#nav a[data-nav="workflows"]', "workflows")
        row = f'table#workflows tr[data-workflow-id="{handle.id}"]'
        assert text_of(driver, f'{row} td[data-field="state"]') == "running"
        submit_and_wait(driver, f"{row} a", "workflow")

        nodes = read_all(driver, "svg#dag g.step", "data-step-id", "data-status")
        drawn = {g["data-step-id"]: g["data-status"] for g in nodes}
        assert drawn == {step.id: step.status.value for step in steps}
        assert drawn[top.id] == "queued"
        assert set(drawn.values()) == {"queued", "waiting"}
        paths = read_all(driver, "svg#dag path.edge", "data-from", "data-to")
        lines = {(p["data-from"], p["data-to"]) for p in paths}
        assert lines == edges
        labels = {g["data-step-id"]: g["text"] for g in nodes}
        assert all(labels.values()), labels
        assert len(css_all(driver, "table#steps tr[data-step-id], table#steps tbody tr")) >= 7

        page = mark(driver)
        store.client.set_enabled(True, QUEUE)

        def all_succeeded(d: WebDriver) -> bool:
            statuses = [g["data-status"] for g in read_all(d, "svg#dag g.step", "data-status")]
            return len(statuses) == 7 and set(statuses) == {"succeeded"}

        wait_page(driver, all_succeeded, timeout=30)
        wait_page(driver, lambda d: text_of(d, "#workflow-state") == "succeeded")
        assert same_document(driver, page), "the page was reloaded instead of updated live"
        assert handle.result(timeout=5) == "total 140, parts 280"

        # A step links to its job's page.
        submit_and_wait(
            driver,
            f'svg#dag g.step[data-step-id="{joined.id}"] a, '
            f'svg#dag a:has(g.step[data-step-id="{joined.id}"])',
            "job",
        )
        assert text_of(driver, "#job-id") == joined.id
        assert text_of(driver, "#job-status") == "succeeded"
    finally:
        app.close()


# -- 4. what the store holds is shown as text ---------------------------------

XSS_JOB_ID = '<img src=x onerror="window.__qwXss=1">'
XSS_PAYLOAD = {
    "html": "<script>window.__qwXss=2</script>",
    "attr": "\"'><img src=x onerror=window.__qwXss=3>",
}
XSS_ERROR = {
    "message": "</pre><script>window.__qwXss=4</script><img src=x onerror=window.__qwXss=5>"
}
XSS_PROGRESS = "<b>half</b><script>window.__qwXss=6</script>"
XSS_WORKER = "<svg onload=window.__qwXss=7>worker"
XSS_KEY = "<script>window.__qwXss=8</script>"


def assert_inert(driver: WebDriver) -> None:
    """No dialog, no flag set by any payload, no element injected into the page's content."""
    no_alert(driver)
    assert driver.execute_script("return typeof window.__qwXss") == "undefined"
    injected = driver.execute_script(
        "return Array.from(document.querySelectorAll('main script, main img, main [onerror],"
        " main [onload], main b')).map(e => e.outerHTML)"
    )
    assert injected == []


@BOTH_STORES
def test_store_text_with_markup_renders_literally_on_every_page(
    store: Store, dashboard: Dashboard, driver: WebDriver
) -> None:
    caps = store.client.capabilities
    client = store.client
    client.enqueue([qw.NewJob(QUEUE, XSS_PAYLOAD, id=XSS_JOB_ID, max_attempts=1)])
    client.heartbeat(WorkerInfo(id=XSS_WORKER, queues=(QUEUE,), host="<i>host</i>", pid=1))
    (claim,) = client.claim([QUEUE], worker=XSS_WORKER, lease_s=60)
    if caps.progress:
        client.set_progress(claim.lease, 0.5, XSS_PROGRESS)
    assert client.fail(claim.lease, error=XSS_ERROR) == JobStatus.FAILED
    if caps.limits:
        client.set_limit(XSS_KEY, Limit(concurrency=1))

    # The jobs list, then the search box: an exact id opens that job.
    driver.get(dashboard.page("jobs"))
    wait_page(driver, loaded(driver, "jobs"))
    rows = read_all(driver, "table#jobs tr[data-job-id]", "data-job-id")
    assert [r["data-job-id"] for r in rows] == [XSS_JOB_ID]
    assert XSS_JOB_ID in (rows[0]["text"] or "")
    assert "&lt;img src=x" in driver.page_source
    assert_inert(driver)
    box = css(driver, 'form#job-filter input[name="q"]')
    box.clear()
    box.send_keys(XSS_JOB_ID)
    before = mark(driver)
    box.submit()
    wait_page(driver, lambda d: not same_document(d, before) and loaded(d, "job")(d))

    assert text_of(driver, "#job-id") == XSS_JOB_ID
    assert text_of(driver, "#job-status") == "failed"
    assert json.loads(text_of(driver, "#job-payload") or "null") == XSS_PAYLOAD
    assert json.loads(text_of(driver, "#job-error") or "null") == XSS_ERROR
    if caps.progress:
        assert XSS_PROGRESS in (text_of(driver, "#job-progress") or "")
    assert_inert(driver)
    wait_ticks(driver, 2)  # what a live refresh puts in is escaped the same way
    assert text_of(driver, "#job-id") == XSS_JOB_ID
    assert json.loads(text_of(driver, "#job-error") or "null") == XSS_ERROR
    assert_inert(driver)

    driver.get(dashboard.page("events"))
    wait_page(driver, loaded(driver, "events"))
    events = read_all(driver, "table#events tr[data-cursor]")
    assert any(XSS_JOB_ID in (row["text"] or "") for row in events)
    assert_inert(driver)

    driver.get(dashboard.page("workers"))
    wait_page(driver, loaded(driver, "workers"))
    workers = read_all(driver, "table#workers tr[data-worker-id]", "data-worker-id")
    assert [r["data-worker-id"] for r in workers] == [XSS_WORKER]
    assert XSS_WORKER in (workers[0]["text"] or "")
    assert_inert(driver)

    if caps.limits:
        driver.get(dashboard.page("limits"))
        wait_page(driver, loaded(driver, "limits"))
        keys = [r["data-key"] for r in read_all(driver, "table#keys tr[data-key]", "data-key")]
        assert XSS_KEY in keys
        assert_inert(driver)

    driver.get(dashboard.page())
    wait_page(driver, loaded(driver, "overview"))
    assert queue_count(driver, QUEUE, "failed") == 1
    assert_inert(driver)


# -- 5. actions need the token, and the site's own form ------------------------


def test_with_a_token_an_action_is_refused_until_the_browser_logs_in(
    store: Store, start_dashboard: Callable[..., Dashboard], driver: WebDriver
) -> None:
    token = secrets.token_urlsafe(16)
    dashboard = start_dashboard(token=token)
    store.client.enqueue_one(QUEUE, {"task": "e2e.work", "args": [], "kwargs": {}})
    driver.get(dashboard.page())
    wait_page(driver, loaded(driver, "overview"))
    before = mark(driver)
    click(driver, f'tr[data-queue="{QUEUE}"] button[data-action="pause"]')
    wait_page(
        driver,
        lambda d: (
            not same_document(d, before)
            and d.execute_script("return document.readyState") == "complete"
        ),
    )
    assert store.client.is_enabled(QUEUE), "paused without the token"
    assert token not in driver.page_source

    driver.get(f"{dashboard.base}/login")
    wait_page(driver, lambda d: css_all(d, "form input[name='token']"))
    box = css(driver, "form input[name='token']")
    assert box.get_attribute("type") == "password"
    box.send_keys(token)
    before = mark(driver)
    box.submit()
    wait_page(
        driver,
        lambda d: (
            not same_document(d, before)
            and d.execute_script("return document.readyState") == "complete"
        ),
    )

    driver.get(dashboard.page())
    wait_page(driver, loaded(driver, "overview"))
    submit_and_wait(driver, f'tr[data-queue="{QUEUE}"] button[data-action="pause"]', "overview")
    assert text_of(driver, f'tr[data-queue="{QUEUE}"] td[data-switch]') == "OFF"
    assert not store.client.is_enabled(QUEUE)
    cookies = driver.get_cookies()
    assert cookies
    assert all(token not in c["value"] for c in cookies)


@contextmanager
def foreign_site(html: str) -> Iterator[str]:
    """A page on another origin (``localhost`` and a port of its own) that posts a form."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_form_posted_from_another_site_cannot_pause_a_loopback_dashboard(
    store: Store, dashboard: Dashboard, driver: WebDriver
) -> None:
    store.client.enqueue_one(QUEUE, {"task": "e2e.work", "args": [], "kwargs": {}})
    driver.get(dashboard.page())
    wait_page(driver, loaded(driver, "overview"))
    form = f'tr[data-queue="{QUEUE}"] form:has(button[data-action="pause"])'
    (found,) = read_all(driver, form, "action")
    assert found["action"]
    action = urljoin(dashboard.page(), found["action"])
    # Even with the page's own CSRF token copied in, the foreign Origin is refused.
    (field,) = read_all(driver, f'{form} input[name="csrf"]', "value")
    csrf = field["value"]
    assert csrf
    for fields in ("", f'<input type="hidden" name="csrf" value="{csrf}">'):
        evil = (
            f'<form method="post" action="{action}">{fields}</form>'
            "<script>document.forms[0].submit()</script>"
        )
        with foreign_site(evil) as site:
            driver.get(site)
            wait_page(
                driver,
                lambda d: (
                    d.current_url.startswith(dashboard.base)
                    and d.execute_script("return document.readyState") == "complete"
                ),
            )
        assert store.client.is_enabled(QUEUE), f"a foreign form paused the queue ({fields!r})"

    # The dashboard's own form, from its own page, does pause it.
    driver.get(dashboard.page())
    wait_page(driver, loaded(driver, "overview"))
    submit_and_wait(driver, f'tr[data-queue="{QUEUE}"] button[data-action="pause"]', "overview")
    assert not store.client.is_enabled(QUEUE)


# -- 6. the jobs list's filters, and cancel behind its confirm() ---------------


def test_the_jobs_filters_narrow_the_list_and_cancel_asks_before_it_cancels(
    store: Store, dashboard: Dashboard, driver: WebDriver
) -> None:
    from selenium.webdriver.support.ui import Select

    app, tasks = store.app()
    try:
        # Due in an hour: nothing runs them, and no worker is started.
        later = [tasks.work.options(delay=3600).enqueue(ms=0) for _ in range(3)]
        elsewhere = [tasks.work.options(queue=OTHER, delay=3600).enqueue(ms=0) for _ in range(2)]
        store.client.cancel(elsewhere[0].id)

        driver.get(dashboard.page("jobs"))
        wait_page(driver, loaded(driver, "jobs"))
        assert len(read_all(driver, "table#jobs tr[data-job-id]")) == 5
        Select(css(driver, 'form#job-filter select[name="queue"]')).select_by_value(OTHER)
        Select(css(driver, 'form#job-filter select[name="status"]')).select_by_value("queued")
        before = mark(driver)
        css(driver, 'form#job-filter select[name="queue"]').submit()
        wait_page(driver, lambda d: not same_document(d, before) and loaded(d, "jobs")(d))
        rows = read_all(driver, "table#jobs tr[data-job-id]", "data-job-id")
        assert [r["data-job-id"] for r in rows] == [elsewhere[1].id]
        assert text_of(driver, 'td[data-field="queue"]') == OTHER
        assert text_of(driver, 'td[data-field="status"]') == "queued"

        # The id links to the job page; its cancel asks first.
        target = later[1].id
        driver.get(dashboard.page("jobs?queue=" + QUEUE))
        wait_page(driver, loaded(driver, "jobs"))
        submit_and_wait(driver, f'tr[data-job-id="{target}"] td a', "job")
        assert text_of(driver, "#job-id") == target
        page = mark(driver)
        click(driver, 'button[data-action="cancel"]')
        dialog = wait_alert(driver)
        assert "Cancel" in dialog.text
        dialog.dismiss()
        assert same_document(driver, page)
        assert store.client.get(target).status == JobStatus.QUEUED
        click(driver, 'button[data-action="cancel"]')
        wait_alert(driver).accept()
        wait_page(driver, lambda d: not same_document(d, page) and loaded(d, "job")(d))
        assert text_of(driver, "#job-status") == "cancelled"
        assert store.client.get(target).status == JobStatus.CANCELLED
        assert store.client.get(later[0].id).status == JobStatus.QUEUED
        assert not css_all(driver, 'button[data-action="cancel"]')
    finally:
        app.close()
