"""Every page, its filters and its actions, against real SQLite, PostgreSQL and Redis stores."""

from __future__ import annotations

import dataclasses

import pytest

import qw
from qw.model import EventSpec, JobStatus, Limit, NewJob, WorkerInfo
from qw_dashboard import create_app
from qw_dashboard.urls import Urls, seg

from .conftest import Page, Store, Web, web_for

pytestmark = pytest.mark.anyio

PAGES = {
    "overview": "",
    "jobs": "jobs",
    "workers": "workers",
    "events": "events",
    "workflows": "workflows",
    "limits": "limits",
}


def task(name: str, *args: object) -> dict[str, object]:
    return {"task": name, "args": list(args), "kwargs": {}}


def fail_one(client: qw.Client, queue: str, error: object) -> str:
    """Claim the next job of ``queue`` and fail it for good; return its id."""
    (claim,) = client.claim([queue], worker="w-test", lease_s=30)
    client.fail(claim.lease, error)
    return claim.job.id


async def test_every_page_renders_with_the_contract_hooks(
    web: Web, store: Store, client: qw.Client
) -> None:
    client.enqueue_one("emails", task("app.send", 1))
    ns = store.namespace
    for page, path in PAGES.items():
        response = await web.get(Urls.ns(ns, path))
        assert response.status_code == 200, (page, response.text[:300])
        # The headers every page carries.
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        doc = Page(response.text)
        assert doc.find("main").attrs["data-page"] == page
        nav = doc.by_id("nav")
        assert {a.attrs["data-nav"] for a in nav.find_all("a")} == set(PAGES)
        assert {a.attrs["data-ns"] for a in doc.find_all("a", data_ns=True)} == {ns, f"{ns}-b"}
        assert doc.find_all(id="flash")
        # No inline script: the only one is the shipped file.
        assert [s.attrs.get("src", "").split("?")[0] for s in doc.scripts()] == ["/static/qw.js"]
        live = doc.find(data_live=True).attrs["data-live"]
        fragment = await web.get(live)
        assert fragment.status_code == 200
        assert "<main" not in fragment.text


async def test_root_redirects_to_the_first_namespace_and_healthz_answers(
    web: Web, store: Store
) -> None:
    response = await web.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == f"/ns/{store.namespace}/"
    health = await web.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok")


async def test_overview_counts_and_switches(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue([NewJob("emails", task("app.send", i)) for i in range(3)])
    client.enqueue_one("reports", task("app.report"))
    fail_one(client, "reports", {"why": "boom"})
    (running,) = client.claim(["emails"], worker="w1")
    doc = await web.page(Urls.ns(store.namespace))
    emails = doc.find("tr", data_queue="emails")
    counts = {td.attrs["data-count"]: td.text for td in emails.find_all("td", data_count=True)}
    assert counts == {
        "queued": "2",
        "running": "1",
        "waiting": "0",
        "succeeded": "0",
        "failed": "0",
        "cancelled": "0",
    }
    reports = doc.find("tr", data_queue="reports")
    assert reports.find("td", data_count="failed").text == "1"
    assert emails.find("td", data_switch=True).text.strip() == "ON"
    assert doc.by_id("ns-switch").text.strip() == "ON"
    assert emails.find_all("button", data_action="pause")
    assert doc.find_all("button", data_action="pause-all")
    client.complete(running.lease)


async def test_pause_and_resume_a_queue(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue_one("emails", task("app.send"))
    ns = store.namespace
    await web.page(Urls.ns(ns))
    response = await web.post(Urls.queue_action(ns, "emails", "pause"), {"next": Urls.ns(ns)})
    assert response.status_code == 303
    assert response.headers["location"] == Urls.ns(ns)
    assert client.is_enabled("emails") is False
    # A paused queue is not claimed from: the store says so, not only the page.
    assert client.claim(["emails"], worker="w1") == []
    doc = await web.page(Urls.ns(ns))
    row = doc.find("tr", data_queue="emails")
    assert row.find("td", data_switch=True).text.strip() == "OFF"
    assert row.find_all("button", data_action="resume")
    assert "emails paused" in doc.by_id("flash").text
    # The flash is shown once.
    again = await web.page(Urls.ns(ns))
    assert again.by_id("flash").text == ""
    await web.post(Urls.queue_action(ns, "emails", "resume"))
    assert client.is_enabled("emails") is True
    doc = await web.page(Urls.ns(ns))
    assert doc.find("tr", data_queue="emails").find("td", data_switch=True).text.strip() == "ON"


async def test_pause_and_resume_the_namespace(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue_one("emails", task("app.send"))
    ns = store.namespace
    await web.page(Urls.ns(ns))
    assert (await web.post(Urls.ns_action(ns, "pause"))).status_code == 303
    assert client.is_enabled() is False
    doc = await web.page(Urls.ns(ns))
    assert doc.by_id("ns-switch").text.strip() == "OFF"
    assert doc.find_all("button", data_action="resume-all")
    # The other namespace is untouched.
    with store.open(f"{ns}-b") as other:
        assert other.is_enabled() is True
    await web.post(Urls.ns_action(ns, "resume"))
    assert client.is_enabled() is True


async def test_jobs_filters_by_queue_status_and_key(
    web: Web, store: Store, client: qw.Client
) -> None:
    a = client.enqueue_one("emails", task("app.send", 1)).id
    b = client.enqueue_one("emails", task("app.send", 2), limit_key="user:7").id
    c = client.enqueue_one("reports", task("app.report")).id
    failed = fail_one(client, "reports", "nope")
    assert failed == c
    ns = store.namespace

    async def ids(**params: str) -> set[str]:
        doc = await web.page(Urls.jobs(ns, **params))
        return {tr.attrs["data-job-id"] for tr in doc.find_all("tr", data_job_id=True)}

    assert await ids() == {a, b, c}
    assert await ids(queue="emails") == {a, b}
    assert await ids(status="failed") == {c}
    assert await ids(queue="emails", status="queued") == {a, b}
    assert await ids(key="user:7") == {b}
    doc = await web.page(Urls.jobs(ns, status="failed"))
    row = doc.find("tr", data_job_id=c)
    assert row.find("td", data_field="status").text == "failed"
    assert row.find("td", data_field="queue").text == "reports"
    assert row.find("td", data_field="task").text == "app.report"
    assert row.find("td", data_field="attempts").text == "1 / 3"
    assert row.find("a").attrs["href"] == Urls.job(ns, c)
    form = doc.by_id("job-filter")
    assert {el.attrs["name"] for el in form.find_all("select")} == {"queue", "status"}
    assert {el.attrs["name"] for el in form.find_all("input")} == {"key", "q"}


async def test_a_bad_filter_is_an_error_page_not_a_traceback(web: Web, store: Store) -> None:
    response = await web.get(Urls.jobs(store.namespace, status="exploded"))
    assert response.status_code == 400
    doc = Page(response.text)
    assert "unknown status 'exploded'" in doc.by_id("error-message").text
    assert "Traceback" not in response.text
    response = await web.get(Urls.jobs(store.namespace, queue="no spaces allowed"))
    assert response.status_code == 400
    assert "InvalidName" in response.text


async def test_search_by_id_opens_the_job_or_lists_by_prefix(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    client.enqueue([NewJob("emails", task("app.send"), id=f"order-{i}") for i in (1, 2, 30)])
    client.enqueue_one("emails", task("app.send"), id="other-1")
    response = await web.get(Urls.jobs(ns, q="order-2"))
    assert response.status_code == 303
    assert response.headers["location"] == Urls.job(ns, "order-2")
    doc = await web.page(Urls.jobs(ns, q="order-3"))
    assert "order-3" in doc.by_id("not-found").text
    assert [tr.attrs["data-job-id"] for tr in doc.find_all("tr", data_job_id=True)] == ["order-30"]
    doc = await web.page(Urls.jobs(ns, q="nothing-like-it"))
    assert doc.find_all(id="no-jobs")


async def test_jobs_are_paged(web: Web, store: Store, client: qw.Client) -> None:
    ns = store.namespace
    ids = sorted(e.id for e in client.enqueue([NewJob("bulk", None) for _ in range(57)]))
    doc = await web.page(Urls.jobs(ns, queue="bulk"))
    first = [tr.attrs["data-job-id"] for tr in doc.find_all("tr", data_job_id=True)]
    assert first == ids[:50]
    nxt = doc.by_id("next-page").attrs["href"]
    doc = await web.page(nxt)
    second = [tr.attrs["data-job-id"] for tr in doc.find_all("tr", data_job_id=True)]
    assert second == ids[50:]
    assert not doc.find_all(id="next-page")


async def test_job_page_shows_payload_result_error_attempts_and_timing(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    job_id = client.enqueue_one("emails", task("app.send", "a@example.com"), max_attempts=3).id
    doc = await web.page(Urls.job(ns, job_id))
    assert doc.by_id("job-id").text == job_id
    assert doc.by_id("job-status").text.strip() == "queued"
    assert doc.by_id("job-queue").text == "emails"
    assert doc.by_id("job-attempts").text == "0 / 3"
    assert '"a@example.com"' in doc.by_id("job-payload").text
    assert '"task": "app.send"' in doc.by_id("job-payload").text
    assert doc.by_id("job-result").text == "null"
    timing = doc.by_id("job-timing").text
    for when in ("Created", "Run at", "Started", "Finished"):
        assert when in timing
    assert doc.find_all("button", data_action="cancel")
    assert not doc.find_all("button", data_action="retry")
    (claim,) = client.claim(["emails"], worker="w1")
    if client.capabilities.progress:
        client.set_progress(claim.lease, 0.5, "half way")
        doc = await web.page(Urls.job(ns, job_id))
        assert "50% half way" in doc.by_id("job-progress").text
    client.fail(claim.lease, {"type": "SMTPError", "message": "mailbox full"}, retry_in=0)
    doc = await web.page(Urls.job(ns, job_id))
    assert doc.by_id("job-attempts").text == "1 / 3"
    assert '"mailbox full"' in doc.by_id("job-error").text
    (claim,) = client.claim(["emails"], worker="w1")
    client.complete(claim.lease, {"sent": True})
    doc = await web.page(Urls.job(ns, job_id))
    assert doc.by_id("job-status").text.strip() == "succeeded"
    assert doc.by_id("job-result").text == '{\n  "sent": true\n}'
    assert not doc.find_all("button", data_action="cancel")


async def test_cancel_a_queued_and_a_running_job(web: Web, store: Store, client: qw.Client) -> None:
    ns = store.namespace
    queued = client.enqueue_one("emails", task("app.send")).id
    await web.page(Urls.job(ns, queued))
    response = await web.post(Urls.job(ns, queued, "cancel"))
    assert response.status_code == 303
    assert response.headers["location"] == Urls.job(ns, queued)
    assert client.get(queued).status is JobStatus.CANCELLED
    doc = await web.page(Urls.job(ns, queued))
    assert "cancelled" in doc.by_id("flash").text
    running = client.enqueue_one("emails", task("app.send")).id
    (claim,) = client.claim(["emails"], worker="w1")
    await web.post(Urls.job(ns, running, "cancel"))
    job = client.get(running)
    assert job.status is JobStatus.RUNNING
    assert job.cancel_requested
    client.abort(claim.lease)


async def test_retry_a_failed_job(web: Web, store: Store, client: qw.Client) -> None:
    if not getattr(client.capabilities, "retry", False):
        pytest.skip(f"{store.backend} does not declare the retry capability yet")
    ns = store.namespace
    client.enqueue_one("emails", task("app.send"), max_attempts=1)
    job_id = fail_one(client, "emails", "boom")
    doc = await web.page(Urls.job(ns, job_id))
    assert doc.find_all("button", data_action="retry")
    response = await web.post(Urls.job(ns, job_id, "retry"))
    assert response.status_code == 303
    assert client.get(job_id).status is JobStatus.QUEUED
    doc = await web.page(Urls.job(ns, job_id))
    assert "retried" in doc.by_id("flash").text
    assert doc.by_id("job-status").text.strip() == "queued"
    # And it runs again.
    (claim,) = client.claim(["emails"], worker="w1")
    assert claim.job.id == job_id
    client.complete(claim.lease)


async def test_retry_is_hidden_for_a_workflow_step(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    client.create_workflow("wf-r", [NewJob("steps", task("app.a"), id="wf-r:a", max_attempts=1)])
    fail_one(client, "steps", "boom")
    doc = await web.page(Urls.job(ns, "wf-r:a"))
    assert doc.by_id("job-status").text.strip() == "failed"
    assert not doc.find_all("button", data_action="retry")
    assert doc.by_id("job-workflow").text == "wf-r"


async def test_unknown_things_are_404_pages(web: Web, store: Store) -> None:
    ns = store.namespace
    for path in (
        Urls.job(ns, "no-such-job"),
        Urls.workflow(ns, "no-such-workflow"),
        "/ns/not-served/",
        "/no/such/route",
    ):
        response = await web.get(path)
        assert response.status_code == 404, path
        assert Page(response.text).find("main").attrs["data-page"] == "error"
    await web.page(Urls.ns(ns))
    response = await web.post(Urls.job(ns, "no-such-job", "cancel"))
    assert response.status_code == 404


async def test_workers_page(web: Web, store: Store, client: qw.Client) -> None:
    client.heartbeat(WorkerInfo("w-7", queues=("emails", "reports"), host="box", pid=42))
    doc = await web.page(Urls.ns(store.namespace, "workers"))
    row = doc.find("tr", data_worker_id="w-7")
    assert "emails, reports" in row.text
    assert "box" in row.text
    assert row.find("td", data_field="state").text == "live"


async def test_events_page_is_newest_first_and_never_acks(
    web: Web, store: Store, client: qw.Client
) -> None:
    for i in range(3):
        client.enqueue_one("emails", task("app.send", i))
        (claim,) = client.claim(["emails"], worker="w1")
        client.complete(claim.lease, i, event=EventSpec("mail.sent", {"n": i}))
    before = client.fetch_events(100)
    assert len(before) >= 3
    doc = await web.page(Urls.ns(store.namespace, "events"))
    cursors = [int(tr.attrs["data-cursor"]) for tr in doc.find_all("tr", data_cursor=True)]
    assert cursors == sorted((e.cursor for e in before), reverse=True)
    assert [e.cursor for e in client.fetch_events(100)] == [e.cursor for e in before]


async def test_workflow_list_and_dag(web: Web, store: Store, client: qw.Client) -> None:
    ns = store.namespace
    steps = [
        NewJob("steps", task("app.fetch"), id="wf-d:fetch"),
        NewJob("steps", task("app.left"), id="wf-d:left", parents=("wf-d:fetch",)),
        NewJob("steps", task("app.right"), id="wf-d:right", parents=("wf-d:fetch",)),
        NewJob("steps", task("app.join"), id="wf-d:join", parents=("wf-d:left", "wf-d:right")),
    ]
    client.create_workflow("wf-d", steps, output="wf-d:join")
    (claim,) = client.claim(["steps"], worker="w1")
    client.complete(claim.lease, {"ok": 1})
    doc = await web.page(Urls.workflows(ns))
    row = doc.find("tr", data_workflow_id="wf-d")
    assert row.find("td", data_field="state").text.strip() == "running"
    assert row.find("a").attrs["href"] == Urls.workflow(ns, "wf-d")
    doc = await web.page(Urls.workflow(ns, "wf-d"))
    assert doc.by_id("workflow-state").text.strip() == "running"
    dag = doc.by_id("dag")
    steps_drawn = {g.attrs["data-step-id"]: g.attrs["data-status"] for g in dag.find_all("g")}
    assert steps_drawn == {
        "wf-d:fetch": "succeeded",
        "wf-d:left": "queued",
        "wf-d:right": "queued",
        "wf-d:join": "waiting",
    }
    drawn = dag.find_all("path", class_="edge")
    edges = {(p.attrs["data-from"], p.attrs["data-to"]) for p in drawn}
    assert edges == {
        ("wf-d:fetch", "wf-d:left"),
        ("wf-d:fetch", "wf-d:right"),
        ("wf-d:left", "wf-d:join"),
        ("wf-d:right", "wf-d:join"),
    }
    fetch = dag.find("g", data_step_id="wf-d:fetch")
    assert fetch.find("a").attrs["href"] == Urls.job(ns, "wf-d:fetch")
    assert len(doc.by_id("steps").find_all("tr", data_step_id=True)) == 4
    spans = doc.by_id("workflow-counts").find_all("span", data_count=True)
    counts = {s.attrs["data-count"]: s.find("b").text for s in spans}
    assert counts == {
        "waiting": "1",
        "queued": "2",
        "running": "0",
        "succeeded": "1",
        "failed": "0",
        "cancelled": "0",
    }
    # Filtered by state.
    doc = await web.page(Urls.workflows(ns, state="succeeded"))
    assert not doc.find_all("tr", data_workflow_id=True)
    # Cancel it.
    await web.post(Urls.workflow(ns, "wf-d", "cancel"))
    assert client.get_workflow("wf-d").state.value == "cancelled"
    doc = await web.page(Urls.workflow(ns, "wf-d"))
    assert doc.by_id("workflow-state").text.strip() == "cancelled"


async def test_limits_page_lists_keys(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue_one("sync", task("app.sync"), limit_key="user:1", limit=Limit(concurrency=2))
    client.set_limit("tenant:acme", Limit(concurrency=0))
    doc = await web.page(Urls.ns(store.namespace, "limits"))
    rows = {tr.attrs["data-key"]: tr for tr in doc.find_all("tr", data_key=True)}
    assert set(rows) == {"user:1", "tenant:acme"}
    assert rows["user:1"].find("td", data_field="queued").text == "1"
    assert rows["user:1"].find("td", data_field="limit").text == "2 running"
    assert rows["tenant:acme"].find("td", data_field="state").text == "paused"


async def test_the_second_namespace_is_its_own(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue_one("emails", task("app.send"))
    other = f"{store.namespace}-b"
    doc = await web.page(Urls.ns(other))
    assert not doc.find_all("tr", data_queue="emails")
    assert doc.find("a", data_ns=other).attrs.get("aria-current") == "true"


def test_urls_quote_every_segment() -> None:
    assert Urls.job("ns", "a/b?c#d e") == "/ns/ns/jobs/a%2Fb%3Fc%23d%20e"
    assert Urls.job("ns", "..") == "/ns/ns/job?id=.."
    assert Urls.job("ns", ".", "cancel") == "/ns/ns/job/cancel?id=."
    assert Urls.jobs("ns", queue="q", status="", key=None) == "/ns/ns/jobs?queue=q"
    assert seg("<script>") == "%3Cscript%3E"


async def test_ids_holding_slashes_and_dots_are_reachable(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    for job_id in ("a/b/retry", "..", ".", "x y?z#w", "trailing/"):
        client.enqueue_one("odd", task("app.odd"), id=job_id)
        doc = await web.page(Urls.job(ns, job_id))
        assert doc.by_id("job-id").text == job_id
        response = await web.post(Urls.job(ns, job_id, "cancel"))
        assert response.status_code == 303, (job_id, response.text[:300])
        assert client.get(job_id).status is JobStatus.CANCELLED, job_id


async def test_a_worker_style_error_shows_its_summary_and_traceback_as_lines(
    web: Web, store: Store, client: qw.Client
) -> None:
    client.enqueue_one("emails", task("app.send"), max_attempts=1)
    trace = 'Traceback (most recent call last):\n  File "app.py", line 3\nValueError: <b>bad</b>\n'
    job_id = fail_one(
        client, "emails", {"type": "ValueError", "message": "bad", "traceback": trace}
    )
    response = await web.get(Urls.job(store.namespace, job_id))
    assert "<b>bad</b>" not in response.text
    doc = Page(response.text)
    assert doc.by_id("job-error-summary").text == "ValueError: bad"
    assert doc.find("pre", data_error_field="traceback").text == trace
    assert "\\n" in doc.by_id("job-error").text  # the JSON itself stays JSON


async def test_a_refreshed_prefix_search_stays_a_listing(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    doc = await web.page(Urls.jobs(ns, q="late"))
    live = doc.find(data_live=True).attrs["data-live"]
    # The job with exactly that id appears after the page was rendered.
    client.enqueue_one("emails", task("app.send"), id="late")
    client.enqueue_one("emails", task("app.send"), id="late-2")
    response = await web.get(live)
    assert response.status_code == 200
    fragment = Page(response.text)
    assert [tr.attrs["data-job-id"] for tr in fragment.find_all("tr", data_job_id=True)] == [
        "late-2"
    ]


async def test_what_the_store_cannot_do_is_not_offered(sqlite_store: Store) -> None:
    """A store without retry, limits or per-queue switches: no button, a 'not supported' page."""

    def opener(url: str, namespace: str) -> qw.Client:
        client = qw.open(url, namespace=namespace)
        # The real SQLite store, declaring less than it can: what the pages read.
        client.backend.capabilities = dataclasses.replace(  # type: ignore[misc]
            client.capabilities, retry=False, limits=False, queue_switch=False
        )
        return client

    with sqlite_store.open() as client:
        client.enqueue_one("emails", task("app.send"), max_attempts=1)
        failed = fail_one(client, "emails", "boom")
    app = create_app(sqlite_store.url, namespaces=["shop"], opener=opener)
    async for web in web_for(app):
        doc = await web.page(Urls.job("shop", failed))
        assert doc.by_id("job-status").text.strip() == "failed"
        assert not doc.find_all("button", data_action="retry")
        doc = await web.page(Urls.ns("shop", "limits"))
        assert "not supported" in doc.by_id("limits-unsupported").text
        assert not doc.find_all("table", id="keys")
        doc = await web.page(Urls.ns("shop"))
        row = doc.find("tr", data_queue="emails")
        assert not row.find_all("button", data_action="pause")
        assert row.find("td", data_switch=True).text.strip() == "ON"
        # The namespace's switch still works.
        assert doc.find_all("button", data_action="pause-all")


async def test_an_action_the_store_refuses_comes_back_as_an_error_flash(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    await web.page(Urls.ns(ns))
    response = await web.post(Urls.queue_action(ns, "not a queue name", "pause"))
    assert response.status_code == 303
    doc = await web.page(response.headers["location"])
    flash = doc.by_id("flash")
    assert "error" in flash.attrs["class"].split()
    assert flash.text.startswith("InvalidName: ")
    assert "Traceback" not in doc.html


async def test_clients_open_on_first_use_and_close_at_shutdown(sqlite_store: Store) -> None:
    app = create_app(sqlite_store.url, namespaces=["shop", "billing"])
    dash = app.state.dashboard
    async for web in web_for(app):
        assert dash.opened == ()
        await web.page(Urls.ns("billing"))
        assert dash.opened == ("billing",)
        await web.page(Urls.ns("billing", "jobs"))
        await web.page(Urls.ns("shop"))
        assert set(dash.opened) == {"shop", "billing"}
    assert dash.opened == ()
