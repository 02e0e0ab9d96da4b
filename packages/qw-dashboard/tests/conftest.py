"""Fixtures: real stores (SQLite, PostgreSQL, Redis), the dashboard app, an HTTP client on it."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import qw
from qw_dashboard import create_app
from qw_testkit.servers import require_server, server_url

BASE = "http://127.0.0.1"
BACKENDS = ("sqlite", "postgres", "redis")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _probe_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def _probe_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=3).ping()


@dataclass
class Store:
    """A real store for one test: its URL and a namespace nobody else uses."""

    backend: str
    url: str
    namespace: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def open(self, namespace: str | None = None) -> qw.Client:
        return qw.open(self.url, namespace=namespace or self.namespace)


def _postgres(tmp: Path) -> Store:
    import psycopg
    from psycopg import sql

    base = require_server("postgres", server_url("postgres"), _probe_postgres)
    schema = f"qw_test_dash_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in base else "?"
    store = Store("postgres", f"{base}{sep}schema={schema}", f"ns-{uuid.uuid4().hex[:8]}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    store.cleanups.append(drop)
    return store


def _redis(tmp: Path) -> Store:
    import redis

    url = require_server("redis", server_url("redis"), _probe_redis)
    store = Store("redis", url, f"dash-{uuid.uuid4().hex[:10]}")

    def drop() -> None:
        conn = redis.Redis.from_url(url)
        for ns in (store.namespace, f"{store.namespace}-b"):
            keys = list(conn.scan_iter(match=f"qw:{{{ns}}}:*", count=1000))
            if keys:
                conn.delete(*keys)
        conn.close()

    store.cleanups.append(drop)
    return store


def make_store(backend: str, tmp: Path) -> Store:
    if backend == "sqlite":
        return Store("sqlite", f"sqlite:///{tmp / 'jobs.db'}", "shop")
    if backend == "postgres":
        return _postgres(tmp)
    return _redis(tmp)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each test once per real store."""
    made = make_store(request.param, tmp_path)
    yield made
    for cleanup in made.cleanups:
        cleanup()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    """A SQLite store only: for the rules that do not depend on the store."""
    return make_store("sqlite", tmp_path)


@pytest.fixture
def client(store: Store) -> Iterator[qw.Client]:
    """The test's own client on the store (the dashboard opens its own)."""
    with store.open() as c:
        yield c


class Web:
    """An HTTP client on the app that reads pages and posts their forms like a browser."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf: str | None = None

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        response = await self.http.get(path, **kw)
        found = re.search(r'name="csrf" value="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def page(self, path: str) -> Page:
        response = await self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return Page(response.text)

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kw: Any
    ) -> httpx.Response:
        if csrf and self.csrf is None:
            await self.get("/login")
        form = dict(data or {})
        if csrf:
            assert self.csrf is not None
            form.setdefault("csrf", self.csrf)
        headers = kw.setdefault("headers", {})
        if "origin" not in headers and "referer" not in headers:
            headers["origin"] = BASE
        return await self.http.post(path, data=form, **kw)


async def web_for(app: Starlette) -> AsyncIterator[Web]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE, follow_redirects=False
        ) as http,
    ):
        yield Web(http)


@pytest.fixture
def app(store: Store) -> Starlette:
    return create_app(store.url, namespaces=[store.namespace, f"{store.namespace}-b"])


@pytest.fixture
async def web(app: Starlette) -> AsyncIterator[Web]:
    async for w in web_for(app):
        yield w


# -- reading HTML -----------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = None

    @property
    def text(self) -> str:
        """The text content, as a browser's ``textContent`` (entities decoded)."""
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str | bool) -> list[Element]:
        """Descendants with ``tag`` and ``attrs`` (``True``: present; ``data_x``: ``data-x``)."""
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        out = []
        for el in self.iter():
            if tag is not None and el.tag != tag:
                continue
            ok = True
            for name, value in want.items():
                if name == "class":
                    ok = ok and str(value) in el.attrs.get("class", "").split()
                elif value is True:
                    ok = ok and name in el.attrs
                else:
                    ok = ok and el.attrs.get(name) == value
            if ok:
                out.append(el)
        return out

    def find(self, tag: str | None = None, **attrs: str | bool) -> Element:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}>"
        return found[0]

    def by_id(self, id_: str) -> Element:
        return self.find(id=id_)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.at = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, parent=self.at)
        self.at.children.append(el)
        if tag not in _VOID:
            self.at = el

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.at.children.append(Element(tag, {k: v or "" for k, v in attrs}, parent=self.at))

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.children.append(data)


class Page(Element):
    """A parsed page."""

    def __init__(self, html: str) -> None:
        builder = _Builder()
        builder.feed(html)
        builder.close()
        super().__init__("#root", {}, builder.root.children)
        self.html = html

    def scripts(self) -> list[Element]:
        return self.find_all("script")
