"""A real Django project (qwdj_project, app qwdj_shop) on a new SQLite file and PostgreSQL database.

The places are chosen here, before Django is set up, and handed to the
settings (and to every worker subprocess) by environment. PostgreSQL comes
from ``QW_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``):
a database ``qwdj_<random>`` is created on that server for the run and
dropped after it. When the server does not answer, its cases skip, unless
``QW_REQUIRE_BACKENDS`` names postgres (or all): then they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get("QW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _required(name: str) -> bool:
    names = {n.strip() for n in os.environ.get("QW_REQUIRE_BACKENDS", "").split(",")}
    return name in names or "all" in names


def _create_pg_database() -> tuple[dict[str, Any] | None, str]:
    """A fresh database on the test server, as Django settings; or None and why not."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg is not installed ({exc})"
    parts = urlsplit(PG_URL)
    name = f"qwdj_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        return None, f"PostgreSQL at {parts.hostname}:{parts.port} does not answer ({exc})"
    return {
        "NAME": name,
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
    }, ""


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_tmp = tempfile.TemporaryDirectory(prefix="qwdj-")
PG, PG_SKIP_REASON = _create_pg_database()
ENV = {
    "DJANGO_SETTINGS_MODULE": "qwdj_project.settings",
    "QWDJ_SQLITE_PATH": str(Path(_tmp.name) / "project.sqlite3"),
    **({"QWDJ_PG": json.dumps(PG)} if PG else {}),
}
os.environ.update(ENV)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import django  # noqa: E402  (after the environment the settings read)

django.setup()

#: The task backend aliases the cases run on: (alias, database alias).
SQLITE = ("default", "default")
POSTGRES = ("pg", "pg")
STORES = [
    pytest.param(SQLITE, id="sqlite"),
    pytest.param(
        POSTGRES,
        id="postgres",
        marks=[]
        if PG or _required("postgres")
        else [pytest.mark.skip(reason=f"no PostgreSQL for qw-django: {PG_SKIP_REASON}")],
    ),
]
ON_COMMIT = {"default": "sqlite_on_commit", "pg": "pg_on_commit"}
RETRY = {"default": "sqlite_retry", "pg": "pg_retry"}


@pytest.fixture(scope="session", autouse=True)
def project() -> Iterator[None]:
    """Migrate the project's databases and qw's tables; drop it all afterwards."""
    from django.core.management import call_command
    from django.db import connections

    from qw_django.store import close_clients

    call_command("migrate", database="default", verbosity=0)
    call_command("qw_migrate", backend="default", verbosity=0)
    if PG:
        call_command("migrate", database="pg", verbosity=0)
        call_command("qw_migrate", backend="pg", verbosity=0)
    yield
    close_clients()
    connections.close_all()
    if PG:
        _drop_pg_database(PG["NAME"])
    _tmp.cleanup()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(task backend alias, database alias) of one store."""
    if request.param == POSTGRES and not PG:
        pytest.fail(f"QW_REQUIRE_BACKENDS requires postgres: {PG_SKIP_REASON}")
    alias, database = request.param
    return alias, database


class WorkerProcess:
    """``manage.py qw_worker`` as a real subprocess of the test project."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qw_worker", *args],
            cwd=HERE,
            env={**os.environ, **ENV, "PYTHONPATH": str(HERE)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, then its exit code and what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"worker did not stop within {timeout} s:\n{err}") from None
        return self.proc.returncode, err


@pytest.fixture
def start_worker() -> Iterator[Any]:
    """Start workers with ``start_worker(*args)``; each is stopped (and must stop cleanly)."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(*args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        code, err = worker.stop()
        assert code == 0, f"qw_worker {worker.args} exited {code}:\n{err}"
