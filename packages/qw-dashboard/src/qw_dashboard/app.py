"""The Starlette application: routes, rendering, actions, and the per-namespace clients.

Store calls block (``qw.Client``), so every one runs in Starlette's thread
pool (:func:`starlette.concurrency.run_in_threadpool`) rather than on the
event loop. The synchronous client rather than ``qw.open_async``: it is the
one API every backend has natively (the async client runs most stores on a
thread pool of its own anyway), and a dashboard's few requests a second do
not need native async I/O. A backend that is not ``thread_safe`` gets one
lock per namespace around its calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qw.client import Client
from qw.display import redact_url
from qw.errors import (
    BackendError,
    BackendUnavailable,
    InvalidInput,
    JobNotFound,
    QwError,
    Unsupported,
    WorkflowNotFound,
)
from qw.model import JobStatus
from qw.opening import resolve_namespace, resolve_url
from qw_dashboard import views
from qw_dashboard.security import (
    FLASH_COOKIE,
    FLASH_TTL_S,
    LOOPBACK_HOSTS,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Guard,
    Refused,
    SecurityMiddleware,
    safe_next,
)
from qw_dashboard.urls import Urls, query

__all__ = ["Dashboard", "create_app"]

log = logging.getLogger("qw.dashboard")
T = TypeVar("T")

HERE = Path(__file__).parent
NAV = (
    ("overview", "Overview", ""),
    ("jobs", "Jobs", "jobs"),
    ("workers", "Workers", "workers"),
    ("events", "Events", "events"),
    ("workflows", "Workflows", "workflows"),
    ("limits", "Limits", "limits"),
)
#: The least and most a refresh interval may be (milliseconds); 0 turns refreshing off.
MIN_REFRESH_MS = 250
MAX_REFRESH_MS = 3_600_000
#: A wrong token at /login costs the guesser this long.
LOGIN_FAILURE_PAUSE_S = 0.5


class Dashboard:
    """One dashboard's state: the store, its namespaces, their clients, the rules."""

    def __init__(
        self,
        url: str,
        namespaces: Sequence[str],
        guard: Guard,
        refresh_ms: int,
        opener: Callable[[str, str], Client],
    ) -> None:
        self.url = url
        self.namespaces = tuple(namespaces)
        self.guard = guard
        self.refresh_ms = refresh_ms
        self._opener = opener
        self._clients: dict[str, tuple[Client, threading.Lock | None]] = {}
        self._lock = threading.Lock()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            # Every template, whatever its name: store-held text is always escaped.
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=views.inert,
        )
        self.env.globals.update(u=Urls, ago=views.age_text, nav_items=NAV)
        self.env.filters["dt"] = _dt

    def client(self, ns: str) -> tuple[Client, threading.Lock | None]:
        """The namespace's client (opened on first use) and its call lock, if it needs one."""
        with self._lock:
            found = self._clients.get(ns)
            if found is None:
                client = self._opener(self.url, ns)
                lock = None if client.capabilities.thread_safe else threading.Lock()
                found = self._clients[ns] = (client, lock)
            return found

    async def run(self, ns: str, fn: Callable[[Client], T]) -> T:
        """``fn(client)`` for namespace ``ns``, in a worker thread."""

        def call() -> T:
            client, lock = self.client(ns)
            if lock is None:
                return fn(client)
            with lock:
                return fn(client)

        return await run_in_threadpool(call)

    @property
    def opened(self) -> tuple[str, ...]:
        """The namespaces whose clients are open now."""
        with self._lock:
            return tuple(self._clients)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client, _ in clients:
            try:
                client.close()
            except Exception:
                log.exception("qw dashboard: closing a client failed")

    @property
    def store(self) -> str:
        return redact_url(self.url)


def _dt(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _state(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def _namespace(request: Request) -> str:
    dash = _state(request)
    ns = request.path_params.get("ns", "")
    if ns not in dash.namespaces:
        raise HTTPException(
            404,
            f"namespace {ns!r} is not served here (this dashboard serves: "
            f"{', '.join(dash.namespaces)})",
        )
    return str(ns)


# -- rendering -----------------------------------------------------------------


def _flash(request: Request) -> dict[str, str] | None:
    value = _state(request).guard.signer.unsign(
        "flash", request.cookies.get(FLASH_COOKIE), FLASH_TTL_S
    )
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return {"kind": value[0], "text": value[1]}
    return None


def _live_url(request: Request) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "fragment"]
    params.append(("fragment", "1"))
    return f"{request.url.path}?{urlencode(params)}"


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    page: str,
    ns: str | None = None,
    status: int = 200,
) -> Response:
    """The page (or, with ``?fragment=1``, only its live region) with the shared context."""
    dash = _state(request)
    guard = dash.guard
    fragment = request.query_params.get("fragment") == "1" and page not in ("error", "login")
    flash = None if fragment else _flash(request)
    ctx = {
        "ns": ns or dash.namespaces[0],
        "namespaces": dash.namespaces,
        "page": page,
        "csrf": guard.csrf,
        "flash": flash,
        "refresh_ms": dash.refresh_ms,
        "can_act": not guard.read_only,
        "read_only": guard.read_only,
        "token_set": guard.token is not None,
        "authed": guard.authenticated(request),
        "store": dash.store,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "live_url": _live_url(request),
        **context,
    }
    name = template.replace(".html", "_live.html") if fragment else template
    html = dash.env.get_template(name).render(ctx)
    response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def _redirect_with_flash(request: Request, to: str, kind: str, text: str) -> Response:
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        _state(request).guard.signer.sign("flash", [kind, text]),
        max_age=FLASH_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _error_status(exc: QwError) -> int:
    if isinstance(exc, (JobNotFound, WorkflowNotFound)):
        return 404
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, Unsupported):
        return 501
    if isinstance(exc, BackendUnavailable):
        return 503
    if isinstance(exc, BackendError):
        return 502
    return 500


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    dash = _state(request)
    ns = request.path_params.get("ns")
    ctx = {"status": status, "title": title, "message": message}
    return render(
        request,
        "error.html",
        ctx,
        page="error",
        ns=ns if ns in dash.namespaces else None,
        status=status,
    )


async def on_qw_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QwError)
    status = _error_status(exc)
    # The typed error's message, never a traceback.
    return _error_page(request, status, type(exc).__name__, str(exc))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    return _error_page(
        request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail)
    )


async def on_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    if exc.status == 401 and request.method == "GET":
        target = query("/login", next=request.url.path)
        return RedirectResponse(target, status_code=303)
    title = "Log in first" if exc.status == 401 else "Refused"
    return _error_page(request, exc.status, title, exc.message)


# -- pages --------------------------------------------------------------------


async def home(request: Request) -> Response:
    return RedirectResponse(Urls.ns(_state(request).namespaces[0]), status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok", headers={"cache-control": "no-store"})


async def overview_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    ctx = await dash.run(ns, lambda c: views.overview(c) | {"caps": c.capabilities})
    return render(request, "overview.html", ctx, page="overview", ns=ns)


async def jobs_list_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    p = request.query_params
    f = views.JobFilter(
        queue=p.get("queue") or None,
        status=p.get("status") or None,
        key=p.get("key") or None,
        q=(p.get("q") or "").strip() or None,
        after=p.get("after") or None,
    )
    fragment = request.query_params.get("fragment") == "1"
    ctx = await dash.run(ns, lambda c: views.jobs_page(c, f, full=not fragment))
    if ctx["found"] is not None:
        return RedirectResponse(Urls.job(ns, ctx["found"].id), status_code=303)
    return render(request, "jobs.html", ctx | {"f": f}, page="jobs", ns=ns)


async def _job(request: Request, job_id: str) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    ctx = await dash.run(ns, lambda c: views.job_page(c, job_id))
    return render(request, "job.html", ctx, page="job", ns=ns)


async def job_page(request: Request) -> Response:
    return await _job(request, request.path_params["job_id"])


async def job_by_query(request: Request) -> Response:
    job_id = request.query_params.get("id")
    if not job_id:
        raise HTTPException(404, "no job id given")
    return await _job(request, job_id)


async def workers_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    ctx = await dash.run(ns, views.workers_page)
    return render(request, "workers.html", ctx, page="workers", ns=ns)


async def events_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    ctx = await dash.run(ns, views.events_page)
    return render(request, "events.html", ctx, page="events", ns=ns)


async def workflows_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    state = request.query_params.get("state") or None
    after = request.query_params.get("after") or None
    ctx = await dash.run(ns, lambda c: views.workflows_page(c, state, after))
    ctx |= {"state": state or ""}
    return render(request, "workflows.html", ctx, page="workflows", ns=ns)


async def workflow_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    wf_id = request.path_params["wf_id"]
    ctx = await dash.run(ns, lambda c: views.workflow_page(c, wf_id))
    return render(request, "workflow.html", ctx, page="workflow", ns=ns)


async def limits_page(request: Request) -> Response:
    ns = _namespace(request)
    dash = _state(request)
    dash.guard.check_read(request)
    after = request.query_params.get("after") or None
    ctx = await dash.run(ns, lambda c: views.keys_page(c, after) | {"backend": c.backend.name})
    return render(request, "limits.html", ctx, page="limits", ns=ns)


# -- login --------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    nxt = safe_next(request.query_params.get("next"), "/")
    return render(request, "login.html", {"next": nxt, "error": None}, page="login")


async def login(request: Request) -> Response:
    guard = _state(request).guard
    form = await guard.check_login(request)
    nxt = safe_next(form.get("next"), "/")
    if guard.token is None:
        return _redirect_with_flash(request, nxt, "ok", "this dashboard needs no token")
    given = form.get("token")
    if not isinstance(given, str) or not guard.token_matches(given):
        await asyncio.sleep(LOGIN_FAILURE_PAUSE_S)
        return render(
            request, "login.html", {"next": nxt, "error": "wrong token"}, page="login", status=401
        )
    response = _redirect_with_flash(request, nxt, "ok", "logged in")
    response.set_cookie(
        SESSION_COOKIE,
        guard.session_cookie(),
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    guard = _state(request).guard
    form = await guard.check_login(request)
    response = _redirect_with_flash(request, safe_next(form.get("next"), "/"), "ok", "logged out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- actions ------------------------------------------------------------------


async def _act(request: Request, default_next: str, fn: Callable[[Client], str]) -> Response:
    """Check the POST, run ``fn``, and redirect back with its answer (or its error) as the flash."""
    ns = _namespace(request)
    dash = _state(request)
    form = await dash.guard.check_action(request)
    nxt = safe_next(form.get("next"), default_next)
    try:
        text = await dash.run(ns, fn)
    except (JobNotFound, WorkflowNotFound):
        raise  # the 404 page: there is nothing to go back to
    except QwError as exc:
        return _redirect_with_flash(request, nxt, "error", f"{type(exc).__name__}: {exc}")
    return _redirect_with_flash(request, nxt, "ok", text)


Endpoint = Callable[[Request], Awaitable[Response]]


def queue_switch(action: str) -> Endpoint:
    """``POST …/queues/Q/pause`` or ``…/resume``: one queue's switch."""
    enabled = action == "resume"

    async def endpoint(request: Request) -> Response:
        ns = _namespace(request)
        queue = request.path_params["queue"]

        def flip(client: Client) -> str:
            client.set_enabled(enabled, queue)
            return f"queue {queue} {'resumed (ON)' if enabled else 'paused (OFF)'}"

        return await _act(request, Urls.ns(ns), flip)

    return endpoint


def ns_switch(action: str) -> Endpoint:
    """``POST /ns/N/pause`` or ``/resume``: the whole namespace's switch."""
    enabled = action == "resume"

    async def endpoint(request: Request) -> Response:
        ns = _namespace(request)

        def flip(client: Client) -> str:
            client.set_enabled(enabled)
            return f"namespace {ns} {'resumed (ON)' if enabled else 'paused (OFF)'}"

        return await _act(request, Urls.ns(ns), flip)

    return endpoint


def _job_action(job_id: str, action: str) -> Callable[[Client], str]:
    def retry(client: Client) -> str:
        retry_call = getattr(client, "retry", None)
        if retry_call is None:
            raise Unsupported("this version of qw has no retry")
        status = JobStatus(retry_call(job_id))
        if status is JobStatus.QUEUED:
            return f"job {job_id} retried: queued"
        return f"job {job_id} is {status.value}: not retried"

    def cancel(client: Client) -> str:
        status = client.cancel(job_id)
        if status is JobStatus.CANCELLED:
            return f"job {job_id} cancelled"
        if status is JobStatus.RUNNING:
            return f"job {job_id} is running: cancel requested, its worker stops it"
        return f"job {job_id} is {status.value}: nothing to cancel"

    return retry if action == "retry" else cancel


def job_action(action: str) -> Endpoint:
    """``POST …/jobs/ID/retry`` or ``…/cancel``."""

    async def endpoint(request: Request) -> Response:
        ns = _namespace(request)
        job_id = request.path_params["job_id"]
        return await _act(request, Urls.job(ns, job_id), _job_action(job_id, action))

    return endpoint


def job_action_by_query(action: str) -> Endpoint:
    """``POST …/job/retry?id=ID``: for the ids no path can carry (``.`` and ``..``)."""

    async def endpoint(request: Request) -> Response:
        ns = _namespace(request)
        job_id = request.query_params.get("id")
        if not job_id:
            raise HTTPException(404, "no job id given")
        return await _act(request, Urls.job(ns, job_id), _job_action(job_id, action))

    return endpoint


async def workflow_cancel(request: Request) -> Response:
    ns = _namespace(request)
    wf_id = request.path_params["wf_id"]

    def cancel(client: Client) -> str:
        wf = client.cancel_workflow(wf_id)
        return f"workflow {wf_id} cancel requested: {wf.state.value}"

    return await _act(request, Urls.workflow(ns, wf_id), cancel)


# -- the application ------------------------------------------------------------


def _open(url: str, namespace: str) -> Client:
    from qw.opening import open as qw_open

    return qw_open(url, namespace=namespace)


def create_app(
    url: str | None = None,
    *,
    namespaces: Iterable[str] = (),
    token: str | None = None,
    refresh_ms: int = 2000,
    read_only: bool = False,
    private: bool = False,
    allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    opener: Callable[[str, str], Client] | None = None,
) -> Starlette:
    """The dashboard as an ASGI application on the store at ``url``.

    ``namespaces`` are the ones it serves (default: ``$QW_NAMESPACE``, else
    ``"default"``); the first is the home page's. Clients are opened per
    namespace on first use and closed at shutdown. With ``token``, actions
    need it (``/login``, or ``Authorization: Bearer``); ``private`` makes
    reading need it too. ``read_only`` offers no actions and refuses every
    POST. ``allowed_hosts`` are the Host names it answers (default: loopback
    names only, against DNS rebinding); None answers any. ``refresh_ms`` is
    how often live regions refresh (0: never). ``opener`` opens a client
    (default :func:`qw.open`).
    """
    target = resolve_url(url)
    served = tuple(dict.fromkeys(resolve_namespace(n) for n in namespaces)) or (
        resolve_namespace(None),
    )
    if refresh_ms != 0 and not MIN_REFRESH_MS <= refresh_ms <= MAX_REFRESH_MS:
        raise InvalidInput(
            f"refresh_ms must be 0 (off) or in [{MIN_REFRESH_MS}, {MAX_REFRESH_MS}], "
            f"not {refresh_ms!r}"
        )
    if private and not token:
        raise InvalidInput("a private dashboard needs a token")
    guard = Guard.create(token, read_only=read_only, private=private)
    dash = Dashboard(target, served, guard, refresh_ms, opener or _open)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(dash.close)

    ns = "/ns/{ns}"
    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route(f"{ns}/", overview_page, methods=["GET"]),
        Route(f"{ns}/jobs", jobs_list_page, methods=["GET"]),
        Route(f"{ns}/job", job_by_query, methods=["GET"]),
        Route(f"{ns}/jobs/{{job_id:path}}", job_page, methods=["GET"]),
        Route(f"{ns}/workers", workers_page, methods=["GET"]),
        Route(f"{ns}/events", events_page, methods=["GET"]),
        Route(f"{ns}/workflows", workflows_page, methods=["GET"]),
        Route(f"{ns}/workflows/{{wf_id}}", workflow_page, methods=["GET"]),
        Route(f"{ns}/limits", limits_page, methods=["GET"]),
        Route(f"{ns}/workflows/{{wf_id}}/cancel", workflow_cancel, methods=["POST"]),
    ]
    for act in ("pause", "resume"):
        routes.append(Route(f"{ns}/queues/{{queue}}/{act}", queue_switch(act), methods=["POST"]))
        routes.append(Route(f"{ns}/{act}", ns_switch(act), methods=["POST"]))
    for act in ("retry", "cancel"):
        routes.append(Route(f"{ns}/jobs/{{job_id:path}}/{act}", job_action(act), methods=["POST"]))
        routes.append(Route(f"{ns}/job/{act}", job_action_by_query(act), methods=["POST"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            QwError: on_qw_error,
            HTTPException: on_http_error,
            Refused: on_refused,
        },
    )
    app.state.dashboard = dash
    app.add_middleware(
        SecurityMiddleware,
        allowed_hosts=None if allowed_hosts is None else tuple(allowed_hosts),
    )
    return app
