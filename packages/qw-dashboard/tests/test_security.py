"""Who may act and how: CSRF, origins, the token, login, read-only, hosts; and escaping."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import qw
from qw.model import EventSpec, NewJob, WorkerInfo
from qw_dashboard import create_app
from qw_dashboard.security import SESSION_COOKIE, Signer, is_loopback_host, safe_next
from qw_dashboard.urls import Urls

from .conftest import BASE, Page, Store, Web, web_for

pytestmark = pytest.mark.anyio

XSS = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.pwned=1">'


async def _csrf(web: Web, path: str) -> str:
    await web.page(path)
    assert web.csrf
    return web.csrf


# -- CSRF and origins ---------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    web: Web, store: Store, client: qw.Client
) -> None:
    client.enqueue_one("emails", None)
    ns = store.namespace
    for data in ({}, {"csrf": "forged"}, {"csrf": ""}):
        response = await web.post(Urls.queue_action(ns, "emails", "pause"), data, csrf=False)
        assert response.status_code == 403
        assert "CSRF" in Page(response.text).by_id("error-message").text
    assert client.is_enabled("emails") is True


async def test_a_cross_origin_post_is_refused_even_with_the_csrf_token(
    web: Web, store: Store, client: qw.Client
) -> None:
    job_id = client.enqueue_one("emails", None).id
    ns = store.namespace
    await _csrf(web, Urls.ns(ns))
    path = Urls.job(ns, job_id, "cancel")
    for headers in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:9999"},
        {"referer": "http://evil.example/page"},
    ):
        response = await web.post(path, headers=headers)
        assert response.status_code == 403, headers
        assert "cross-origin" in response.text
    assert client.get(job_id).status.value == "queued"
    # Same origin, or no Origin and no Referer at all (a script, not a browser): allowed.
    assert (await web.post(path, headers={"referer": f"{BASE}/ns/{ns}/"})).status_code == 303
    assert client.get(job_id).status.value == "cancelled"


async def test_every_form_carries_the_csrf_token(web: Web, store: Store, client: qw.Client) -> None:
    client.enqueue_one("emails", None)
    doc = await web.page(Urls.ns(store.namespace))
    forms = doc.find_all("form", method="post")
    assert forms
    for form in forms:
        assert form.find("input", name="csrf").attrs["value"] == web.csrf


# -- the token ---------------------------------------------------------------------


@pytest.fixture
async def token_web(sqlite_store: Store) -> AsyncIterator[Web]:
    app = create_app(sqlite_store.url, namespaces=["shop"], token="s3cret-token")
    async for w in web_for(app):
        yield w


async def test_with_a_token_actions_need_it(token_web: Web, sqlite_store: Store) -> None:
    with sqlite_store.open() as client:
        client.enqueue_one("emails", None)
        doc = await token_web.page(Urls.ns("shop"))
        # Reading is open on loopback; the buttons are there; acting is not.
        assert doc.find_all("button", data_action="pause")
        assert doc.by_id("login-link")
        response = await token_web.post(Urls.queue_action("shop", "emails", "pause"))
        assert response.status_code == 401
        assert client.is_enabled("emails") is True
        # A wrong token logs no one in.
        started = time.monotonic()
        bad = await token_web.post("/login", {"token": "guess", "next": "/ns/shop/"})
        assert bad.status_code == 401
        assert time.monotonic() - started >= 0.4
        assert SESSION_COOKIE not in bad.cookies
        # The right one does, and then actions work.
        good = await token_web.post("/login", {"token": "s3cret-token", "next": "/ns/shop/"})
        assert good.status_code == 303
        assert good.headers["location"] == "/ns/shop/"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        response = await token_web.post(Urls.queue_action("shop", "emails", "pause"))
        assert response.status_code == 303
        assert client.is_enabled("emails") is False
        # Logging out ends it.
        await token_web.post("/logout")
        token_web.http.cookies.clear()
        response = await token_web.post(Urls.queue_action("shop", "emails", "resume"))
        assert response.status_code == 401
        assert client.is_enabled("emails") is False


async def test_a_forged_session_cookie_is_not_a_login(token_web: Web, sqlite_store: Store) -> None:
    with sqlite_store.open() as client:
        client.enqueue_one("emails", None)
    other = Signer(b"k" * 32).sign("session", "ok")
    for value in (other, "ok", "", "x.y"):
        token_web.http.cookies.set(SESSION_COOKIE, value)
        response = await token_web.post(Urls.queue_action("shop", "emails", "pause"))
        assert response.status_code == 401, value


async def test_the_bearer_header_acts_without_a_form(token_web: Web, sqlite_store: Store) -> None:
    with sqlite_store.open() as client:
        client.enqueue_one("emails", None)
        path = Urls.queue_action("shop", "emails", "pause")
        wrong = await token_web.http.post(path, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 403  # no CSRF token, and no valid bearer to excuse it
        right = await token_web.http.post(path, headers={"authorization": "Bearer s3cret-token"})
        assert right.status_code == 303
        assert client.is_enabled("emails") is False


async def test_a_private_dashboard_needs_the_token_to_read(sqlite_store: Store) -> None:
    app = create_app(sqlite_store.url, namespaces=["shop"], token="t0k", private=True)
    async for web in web_for(app):
        response = await web.get("/ns/shop/jobs")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Fns%2Fshop%2Fjobs"
        assert (await web.get("/healthz")).status_code == 200
        assert (await web.get("/login")).status_code == 200
        assert (await web.get(Urls.static("qw.css"))).status_code == 200
        await web.post("/login", {"token": "t0k"})
        assert (await web.get("/ns/shop/jobs")).status_code == 200
        bearer = await web.http.get("/ns/shop/", headers={"authorization": "Bearer t0k"})
        assert bearer.status_code == 200


def test_a_private_dashboard_without_a_token_is_refused(sqlite_store: Store) -> None:
    with pytest.raises(qw.errors.InvalidInput, match="needs a token"):
        create_app(sqlite_store.url, private=True)


async def test_read_only_offers_no_actions_and_refuses_posts(sqlite_store: Store) -> None:
    with sqlite_store.open() as client:
        job_id = client.enqueue_one("emails", None).id
        app = create_app(sqlite_store.url, namespaces=["shop"], read_only=True)
        async for web in web_for(app):
            for path in (Urls.ns("shop"), Urls.job("shop", job_id)):
                doc = await web.page(path)
                assert not doc.find_all("form", method="post"), path
                assert not doc.find_all("button", data_action=True), path
            web.csrf = "irrelevant"
            response = await web.post(Urls.job("shop", job_id, "cancel"))
            assert response.status_code == 403
            assert "read-only" in response.text
        assert client.get(job_id).status.value == "queued"


async def test_a_loopback_dashboard_answers_loopback_names_only(sqlite_store: Store) -> None:
    app = create_app(sqlite_store.url, namespaces=["shop"])
    async for web in web_for(app):
        for host in ("evil.example", "evil.example:8470", "10.0.0.1"):
            response = await web.http.get("/healthz", headers={"host": host})
            assert response.status_code == 421, host
        for host in ("localhost:8470", "127.0.0.1", "[::1]:8470"):
            response = await web.http.get("/healthz", headers={"host": host})
            assert response.status_code == 200, host


def test_redirect_targets_stay_on_the_site() -> None:
    assert safe_next("/ns/shop/jobs?queue=a", "/") == "/ns/shop/jobs?queue=a"
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x", ""):
        assert safe_next(bad, "/fallback") == "/fallback", bad
    assert safe_next(None, "/x") == "/x"


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "example.com", "localhost.example.com"):
        assert not is_loopback_host(host), host


def test_signed_values_expire_and_resist_tampering() -> None:
    signer = Signer(b"x" * 32)
    value = signer.sign("flash", ["ok", "hi"])
    assert signer.unsign("flash", value, 60) == ["ok", "hi"]
    assert signer.unsign("session", value, 60) is None
    body, _, mac = value.rpartition(".")
    assert signer.unsign("flash", body + "." + mac[::-1], 60) is None
    assert signer.unsign("flash", value, -1) is None


# -- errors ---------------------------------------------------------------------------


async def test_an_unreachable_store_is_an_error_page_with_its_message(tmp_path: Path) -> None:
    app = create_app("redis://127.0.0.1:1/0", namespaces=["shop"])
    async for web in web_for(app):
        response = await web.get("/ns/shop/")
        assert response.status_code in (502, 503)
        doc = Page(response.text)
        assert "BackendUnavailable" in doc.by_id("error-title").text
        assert "Traceback" not in response.text
        # And it recovers nothing from a cache: every request tries again.
        assert (await web.get("/ns/shop/")).status_code in (502, 503)


# -- escaping ---------------------------------------------------------------------------


def _no_injected_markup(html: str, *, fragment: bool = False) -> None:
    """No raw payload markup anywhere, and no script but the shipped one (none in a fragment)."""
    assert XSS not in html
    assert "<img src=x" not in html
    scripts = re.findall(r"<script\b[^>]*>", html)
    if fragment:
        assert scripts == []
    else:
        assert len(scripts) == 1
        assert 'src="/static/qw.js' in scripts[0]


async def test_store_held_text_renders_as_text(web: Web, store: Store, client: qw.Client) -> None:
    ns = store.namespace
    job_id = XSS
    hostile = {"task": XSS, "args": [IMG], "note": "</pre><script>x()</script>"}
    client.enqueue([NewJob("emails", hostile, id=job_id, limit_key=IMG)])
    # A second, left queued, keeps the limit key live for the limits page.
    client.enqueue([NewJob("later", hostile, id=XSS + "2", limit_key=IMG)])
    (claim,) = client.claim(["emails"], worker=XSS)
    if client.capabilities.progress:
        client.set_progress(claim.lease, 0.3, XSS)
    client.heartbeat(WorkerInfo(XSS, queues=("emails",), host=IMG))
    running = await web.page(Urls.job(ns, job_id))
    assert running.by_id("job-worker").text == XSS
    if client.capabilities.progress:
        assert XSS in running.by_id("job-progress").text
    client.fail(claim.lease, {"message": XSS, "html": IMG}, event=EventSpec("job.failed", XSS))
    pages = [
        Urls.ns(ns),
        Urls.jobs(ns),
        Urls.jobs(ns, key=IMG),
        Urls.job(ns, job_id),
        Urls.ns(ns, "workers"),
        Urls.ns(ns, "events"),
        Urls.ns(ns, "limits"),
    ]
    for path in pages:
        response = await web.get(path)
        assert response.status_code == 200, path
        _no_injected_markup(response.text)
        fragment = await web.get(Page(response.text).find(data_live=True).attrs["data-live"])
        _no_injected_markup(fragment.text, fragment=True)
    doc = await web.page(Urls.job(ns, job_id))
    assert doc.by_id("job-id").text == XSS
    assert doc.by_id("job-task").text == XSS
    assert XSS in doc.by_id("job-error").text
    assert IMG.replace('"', '\\"') in doc.by_id("job-payload").text
    assert "</pre><script>x()</script>" in doc.by_id("job-payload").text
    if client.capabilities.progress:
        assert XSS in doc.by_id("job-progress").text
    jobs = await web.page(Urls.jobs(ns))
    row = jobs.find("tr", data_job_id=XSS)
    assert row.find("a").text == XSS
    assert row.find("a").attrs["href"] == f"/ns/{ns}/jobs/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    workers = await web.page(Urls.ns(ns, "workers"))
    assert workers.find("tr", data_worker_id=XSS)
    events = await web.page(Urls.ns(ns, "events"))
    assert XSS in events.find("td", data_field="data").text
    limits = await web.page(Urls.ns(ns, "limits"))
    assert limits.find("tr", data_key=IMG)


async def test_a_workflow_step_with_markup_in_its_task_is_drawn_as_text(
    web: Web, store: Store, client: qw.Client
) -> None:
    ns = store.namespace
    client.create_workflow(
        "wf-x",
        [
            NewJob("steps", {"task": XSS}, id="wf-x:a"),
            NewJob("steps", {"task": IMG}, id="wf-x:b", parents=("wf-x:a",)),
        ],
    )
    response = await web.get(Urls.workflow(ns, "wf-x"))
    _no_injected_markup(response.text)
    dag = Page(response.text).by_id("dag")
    titles = [t.text for t in dag.find_all("title")]
    assert any(XSS in t for t in titles)
    assert any(IMG in t for t in titles)


async def test_reflected_input_is_escaped(web: Web, store: Store) -> None:
    ns = store.namespace
    for path in (
        Urls.jobs(ns, queue=XSS),
        Urls.jobs(ns, q=XSS),
        Urls.jobs(ns, status=XSS),
        Urls.workflow(ns, XSS),
        Urls.workflows(ns, state=XSS),
        "/ns/" + "%3Cscript%3E" + "/",
        "/login?next=" + httpx.QueryParams({"x": XSS})["x"],
        f"/ns/{ns}/limits?after={XSS}",
    ):
        response = await web.get(path)
        assert response.status_code in (200, 303, 400, 404), (path, response.status_code)
        _no_injected_markup(response.text)


async def test_disguising_characters_are_shown_as_escapes(
    web: Web, store: Store, client: qw.Client
) -> None:
    job_id = "invoice-\u202egpj.exe"
    client.enqueue([NewJob("emails", {"task": "app.send\u200f", "note": "a\u2066b"}, id=job_id)])
    response = await web.get(Urls.job(store.namespace, job_id))
    assert response.status_code == 200
    for char in ("\u202e", "\u200f", "\u2066"):
        assert char not in response.text
    doc = Page(response.text)
    assert doc.by_id("job-id").text == "invoice-\\u202egpj.exe"
    assert doc.by_id("job-task").text == "app.send\\u200f"
    assert "a\\u2066b" in doc.by_id("job-payload").text
