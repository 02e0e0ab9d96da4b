"""Who may act, and from where: the token, the session cookie, CSRF, origins, hosts, headers.

The model (docs/dashboard.md has it in full):

- Reading needs nothing on a loopback dashboard; ``private=True`` (the CLI
  sets it with ``--expose``) makes every page but ``/healthz``, ``/login``
  and the static files need the token too.
- Acting (every POST) needs, in this order: a dashboard that is not
  read-only; a same-origin ``Origin`` (or, without one, ``Referer``) when
  the browser sends one; the per-process CSRF token in the form's ``csrf``
  field, unless the request carries ``Authorization: Bearer <token>``
  (which no other site can make a browser send); and, when a token is set,
  that token — as the bearer header or as the signed session cookie
  ``/login`` hands out.
- A loopback dashboard answers only requests whose ``Host`` is a loopback
  name, so that a page on another site cannot reach it by DNS rebinding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = [
    "LOOPBACK_HOSTS",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "FLASH_COOKIE",
    "Guard",
    "Refused",
    "SecurityMiddleware",
    "Signer",
    "is_loopback_host",
    "safe_next",
]

log = logging.getLogger("qw.dashboard")

SESSION_COOKIE = "qw_session"
FLASH_COOKIE = "qw_flash"
#: A login lasts this long (seconds).
SESSION_TTL_S = 12 * 3600
#: A flash message not shown within this long is dropped.
FLASH_TTL_S = 120
#: The Host names a loopback dashboard answers to (a port, if any, is stripped first).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to anything.
        return False


class Refused(Exception):
    """A request the security rules turn away: shown as an error page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Signer:
    """HMAC-SHA256 signed, time-limited values for cookies, keyed per process."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, purpose: str, value: object) -> str:
        body = base64.urlsafe_b64encode(
            json.dumps([purpose, int(time.time()), value], separators=(",", ":")).encode()
        ).decode()
        return f"{body}.{self._mac(body)}"

    def unsign(self, purpose: str, text: str | None, max_age: float) -> object | None:
        """The signed value; None when ``text`` is absent, forged, for another purpose or stale."""
        if not text or "." not in text:
            return None
        body, _, mac = text.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            kind, at, value = json.loads(base64.urlsafe_b64decode(body.encode()))
        except (ValueError, TypeError):
            return None
        if kind != purpose or not isinstance(at, int) or time.time() - at > max_age:
            return None
        found: object = value
        return found

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def safe_next(value: str | None, default: str) -> str:
    """``value`` if it is a path on this site (``/…``, not ``//…``), else ``default``.

    Redirect targets come from form fields; only local paths are followed, so
    that a form cannot send the browser to another site.
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return default
    return value


def _origin_netloc(value: str) -> str | None:
    """``host[:port]`` of an Origin or Referer, default ports dropped; None if unusable."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{host}]" if ":" in host else host
    return host if port in (None, default) else f"{host}:{port}"


def _host_netloc(host_header: str) -> str:
    """The Host header as ``host[:port]``, lower case, ports 80 and 443 dropped."""
    host = host_header.strip().lower()
    for default in (":80", ":443"):
        if host.endswith(default):
            return host[: -len(default)]
    return host


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True, slots=True)
class Guard:
    """The rules of one dashboard: its token, CSRF token, signing key and modes."""

    token: str | None
    csrf: str
    signer: Signer
    read_only: bool = False
    private: bool = False

    @classmethod
    def create(cls, token: str | None, *, read_only: bool, private: bool) -> Guard:
        return cls(
            token=token or None,
            csrf=secrets.token_urlsafe(32),
            signer=Signer(secrets.token_bytes(32)),
            read_only=read_only,
            private=private,
        )

    # -- who is asking ----------------------------------------------------

    def _bearer(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def bearer_ok(self, request: Request) -> bool:
        """Whether the request carries the right token as ``Authorization: Bearer``."""
        given = self._bearer(request)
        return self.token is not None and given is not None and self.token_matches(given)

    def token_matches(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    def authenticated(self, request: Request) -> bool:
        """Whether the request may act: no token is set, or it proves the token."""
        if self.token is None:
            return True
        if self.bearer_ok(request):
            return True
        session = self.signer.unsign("session", request.cookies.get(SESSION_COOKIE), SESSION_TTL_S)
        return session == "ok"

    def session_cookie(self) -> str:
        return self.signer.sign("session", "ok")

    # -- the checks ---------------------------------------------------------

    def check_read(self, request: Request) -> None:
        """Refuse reading a private dashboard without the token."""
        if self.private and not self.authenticated(request):
            raise Refused(401, "this dashboard needs its token to be read: log in first")

    def check_origin(self, request: Request) -> None:
        """Refuse a POST a browser says came from another site."""
        own = _host_netloc(request.headers.get("host", ""))
        for header in ("origin", "referer"):
            value = request.headers.get(header)
            if value is None:
                continue
            if _origin_netloc(value) != own:
                raise Refused(403, f"refused: a cross-origin request ({header} is not this site)")
            # Origin, when sent, is the stronger signal; Referer is the fallback.
            return

    def check_csrf(self, request: Request, form: MutableMapping[str, Any]) -> None:
        """Refuse a POST whose form lacks this process's CSRF token (bearer requests excepted)."""
        if self.bearer_ok(request):
            return
        given = form.get("csrf")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode(), self.csrf.encode()
        ):
            raise Refused(
                403, "refused: the form's CSRF token is missing or wrong; reload the page"
            )

    async def check_action(self, request: Request) -> MutableMapping[str, Any]:
        """Every rule a POST must pass; the parsed form when it does."""
        if self.read_only:
            raise Refused(403, "this dashboard is read-only")
        self.check_origin(request)
        form = dict(await request.form())
        self.check_csrf(request, form)
        if not self.authenticated(request):
            raise Refused(401, "actions on this dashboard need its token: log in first")
        return form

    async def check_login(self, request: Request) -> MutableMapping[str, Any]:
        """The origin and CSRF rules for the login form itself (no login CSRF)."""
        self.check_origin(request)
        form = dict(await request.form())
        self.check_csrf(request, form)
        return form


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class SecurityMiddleware:
    """Adds the security headers to every response, checks Host, and hides tracebacks.

    Pure ASGI (not BaseHTTPMiddleware), so that it wraps streaming and error
    responses alike. An exception no handler took becomes a plain 500 page;
    the traceback goes to the log, never to the browser.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        if self.allowed is not None:
            host = ""
            for key, value in scope.get("headers", []):
                if key == b"host":
                    host = value.decode("latin-1")
            if _host_name(host) not in self.allowed:
                await _plain(send_with_headers, 421, _UNKNOWN_HOST)
                return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("qw dashboard: unhandled error on %s", scope.get("path"))
            if started:
                raise
            await _plain(send_with_headers, 500, "internal error: see the dashboard's log")


_OURS = {name for name, _ in SECURITY_HEADERS}
_UNKNOWN_HOST = (
    "unknown Host: this dashboard answers to its loopback names only (localhost, 127.0.0.1)"
)


async def _plain(send: Callable[[Any], Awaitable[None]], status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
