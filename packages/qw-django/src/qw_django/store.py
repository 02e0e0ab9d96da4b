# mypy: allow-subclassing-any, no-warn-unused-ignores
# Django ships no type information and is absent from the workspace's 3.11
# type-check venv: its imports carry both codes, and an unused one is fine.
"""Where a task backend keeps its jobs: its OPTIONS checked, its qw URL, its shared client.

By default the store is the project's own database, the ``DATABASES``
alias OPTIONS["DATABASE"] names: its qw URL is derived from that alias's
settings each time a client is opened (so a test runner's test database is
followed), and enqueues inside a transaction on the alias join it. An
explicit OPTIONS["URL"] puts the jobs anywhere qw can (Redis, another
database); they then cannot join the project's transactions.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from django.core.exceptions import (  # type: ignore[import-not-found,import-untyped]
    ImproperlyConfigured,
)

import qw
from qw.display import redact_url
from qw.validation import MAX_ATTEMPTS, is_int_in, validate_namespace

__all__ = ["StoreConfig", "client_for", "close_clients", "derived_url"]

_KNOWN_OPTIONS = frozenset(
    {"DATABASE", "URL", "STORE_OPTIONS", "NAMESPACE", "ENQUEUE_ON_COMMIT", "MAX_ATTEMPTS"}
)
_POSTGRES_ENGINES = frozenset({"django.db.backends.postgresql"})
_SQLITE_ENGINES = frozenset({"django.db.backends.sqlite3"})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A task backend's OPTIONS, checked.

    Attributes:
        database: the ``DATABASES`` alias whose transactions enqueues follow.
        url: an explicit qw URL, or None for the alias's own database.
        store_options: qw URL options added to a derived URL
            (``{"schema": "jobs"}`` on PostgreSQL).
        namespace: the qw namespace the jobs live in.
        enqueue_on_commit: write each job only once the alias's current
            transaction commits (``transaction.on_commit``), not inside it.
        max_attempts: how many times a task that raises is run in all.
    """

    database: str = "default"
    url: str | None = None
    store_options: Mapping[str, str] = field(default_factory=dict)
    namespace: str = "default"
    enqueue_on_commit: bool = False
    max_attempts: int = 1

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> StoreConfig:
        """Check task backend ``alias``'s OPTIONS; raise ImproperlyConfigured on a bad one."""
        where = f"TASKS[{alias!r}]['OPTIONS']"
        if not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"{where} must be a dict, not {options!r}")
        unknown = sorted(set(options) - _KNOWN_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"{where} has unknown keys {unknown}; known: {sorted(_KNOWN_OPTIONS)}"
            )
        database = options.get("DATABASE", "default")
        url = options.get("URL")
        store_options = options.get("STORE_OPTIONS", {})
        namespace = options.get("NAMESPACE", "default")
        on_commit = options.get("ENQUEUE_ON_COMMIT", False)
        max_attempts = options.get("MAX_ATTEMPTS", 1)
        if not isinstance(database, str) or not database:
            raise ImproperlyConfigured(f"{where}['DATABASE'] must name a DATABASES alias")
        if url is not None and (not isinstance(url, str) or not url):
            raise ImproperlyConfigured(f"{where}['URL'] must be a qw URL string")
        if not isinstance(store_options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in store_options.items()
        ):
            raise ImproperlyConfigured(
                f"{where}['STORE_OPTIONS'] must map qw URL option names to plain values"
            )
        if url is not None and store_options:
            raise ImproperlyConfigured(
                f"{where}: STORE_OPTIONS go with a derived URL; put them in the URL itself"
            )
        if not isinstance(namespace, str):
            raise ImproperlyConfigured(f"{where}['NAMESPACE'] must be a string")
        try:
            validate_namespace(namespace)
        except qw.QwError as exc:
            raise ImproperlyConfigured(f"{where}['NAMESPACE']: {exc}") from None
        if not isinstance(on_commit, bool):
            raise ImproperlyConfigured(f"{where}['ENQUEUE_ON_COMMIT'] must be True or False")
        if not is_int_in(max_attempts, 1, MAX_ATTEMPTS):
            raise ImproperlyConfigured(
                f"{where}['MAX_ATTEMPTS'] must be an int in [1, {MAX_ATTEMPTS}]"
            )
        return cls(
            database=database,
            url=url,
            store_options={k: _text(v) for k, v in store_options.items()},
            namespace=namespace,
            enqueue_on_commit=on_commit,
            max_attempts=max_attempts,
        )

    @property
    def transactional(self) -> bool:
        """Whether the jobs live in the ``database`` alias itself (no explicit URL)."""
        return self.url is None

    def resolve_url(self) -> str:
        """The qw URL of the store: the explicit one, or one derived from the alias now."""
        if self.url is not None:
            return self.url
        from django.db import connections  # type: ignore[import-not-found,import-untyped]

        if self.database not in connections.settings:
            raise ImproperlyConfigured(
                f"the task backend's DATABASE {self.database!r} is not in DATABASES"
            )
        settings_dict: Mapping[str, Any] = connections[self.database].settings_dict
        return derived_url(settings_dict, self.store_options)


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def derived_url(settings_dict: Mapping[str, Any], store_options: Mapping[str, str]) -> str:
    """The qw URL of the database a ``DATABASES`` entry describes.

    PostgreSQL (psycopg 3): ``postgresql://user:password@host:port/name``
    with the entry's libpq OPTIONS; SQLite: the database file, with
    ``shared=true`` (qw's tables live beside the project's, and the file
    must be in WAL mode: ``manage.py qw_migrate`` sets it).
    """
    engine = settings_dict.get("ENGINE", "")
    if engine in _POSTGRES_ENGINES:
        return _postgres_url(settings_dict, store_options)
    if engine in _SQLITE_ENGINES:
        return _sqlite_url(settings_dict, store_options)
    raise ImproperlyConfigured(
        f"qw_django derives a store from PostgreSQL and SQLite databases, not {engine!r}: "
        "give the task backend OPTIONS['URL'] instead"
    )


def _libpq_keywords() -> frozenset[str]:
    import psycopg  # qw-postgres depends on it; only a PostgreSQL project gets here

    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def _postgres_url(settings_dict: Mapping[str, Any], store_options: Mapping[str, str]) -> str:
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    host = settings_dict.get("HOST") or ""
    port = settings_dict.get("PORT") or ""
    name = settings_dict.get("NAME") or ""
    query: dict[str, str] = {}
    # Django's own OPTIONS (pool, isolation_level, ...) are not libpq's; the
    # connection keywords among them (sslmode, service, ...) are.
    known = _libpq_keywords()
    for key, value in (settings_dict.get("OPTIONS") or {}).items():
        if key in known and isinstance(value, str | int):
            query[key] = str(value)
    netloc = ""
    if user:
        netloc = quote(str(user), safe="")
        if password:
            netloc += ":" + quote(str(password), safe="")
        netloc += "@"
    if host.startswith("/"):
        # A Unix socket directory cannot sit in the URL's authority.
        query["host"] = host
    elif host:
        netloc += f"[{host}]" if ":" in host else host
    if port:
        if host.startswith("/") or not host:
            query["port"] = str(port)
        else:
            netloc += f":{port}"
    query.update(store_options)
    tail = f"?{urlencode(query, quote_via=quote)}" if query else ""
    return f"postgresql://{netloc}/{quote(str(name), safe='')}{tail}"


def _sqlite_url(settings_dict: Mapping[str, Any], store_options: Mapping[str, str]) -> str:
    name = str(settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
        raise ImproperlyConfigured(
            f"qw_django keeps jobs in the SQLite database file itself, and {name!r} is not "
            "a file that other processes (the worker) can open; give the database a file "
            "NAME (also TEST['NAME'] under the test runner) or the task backend an "
            "OPTIONS['URL']"
        )
    query = {"shared": "true", **store_options}
    path = quote(str(Path(name).absolute()))
    # Four slashes in all: the absolute path keeps its own.
    return f"sqlite:///{path}?{urlencode(query, quote_via=quote)}"


# One client per store URL and namespace per process: django.tasks keeps a
# backend instance per thread, and a qw client (a connection pool) is
# thread-safe, so the threads share it rather than each opening a pool.
_clients: dict[tuple[int, str, str], qw.Client] = {}
_clients_lock = threading.Lock()


def client_for(config: StoreConfig) -> qw.Client:
    """The process's client on ``config``'s store, opened on first use."""
    url = config.resolve_url()
    # The pid too: a forked child must not use its parent's connections.
    key = (os.getpid(), url, config.namespace)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                try:
                    client = qw.open(url, namespace=config.namespace)
                except qw.ConfigurationError as exc:
                    raise ImproperlyConfigured(
                        f"qw_django: cannot open store {redact_url(url)}: {exc}"
                    ) from exc
                _clients[key] = client
    return client


def close_clients() -> None:
    """Close this process's clients (at exit; tests between databases)."""
    with _clients_lock:
        mine = [k for k in _clients if k[0] == os.getpid()]
        clients = [_clients.pop(k) for k in mine]
    for client in clients:
        client.close()


atexit.register(close_clients)
