"""``qw dashboard``: a real server process on port 0, and the rules on what it may bind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import qw
from qw_testkit.servers import require_server, server_url

from .conftest import _probe_postgres

SERVING = re.compile(r"qw dashboard: serving on (http://\S+/)")
START_TIMEOUT_S = 20


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QW_URL", "QW_DASHBOARD_TOKEN")}
    env.update(extra)
    return env


def _qw(*args: str) -> list[str]:
    return [sys.executable, "-c", "from qw.cli import main; main()", *args]


@contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Run ``qw dashboard ARGS --port 0``; yield its URL and its stdout lines so far."""
    proc = subprocess.Popen(
        _qw("dashboard", *args, "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            found = SERVING.search(line)
            if found:
                yield found.group(1), lines
                return
        err = proc.stderr.read() if proc.stderr else ""
        pytest.fail(f"no 'serving on' line; stdout={lines!r} stderr={err[-2000:]!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serves_on_a_free_port_and_answers_healthz(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with qw.open(url, namespace="shop") as client:
        client.enqueue_one("emails", {"task": "app.send"})
    with serving("--url", url, "-n", "shop", "-n", "billing") as (base, lines):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)
        assert not base.endswith(":0/")
        health = httpx.get(base + "healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok")
        home = httpx.get(base, timeout=5)
        assert home.status_code == 303
        assert home.headers["location"] == "/ns/shop/"
        overview = httpx.get(base + "ns/shop/", timeout=5)
        assert 'data-queue="emails"' in overview.text
        assert 'data-ns="billing"' in overview.text
        # The static files come from the installed package.
        css = httpx.get(base + "static/qw.css", timeout=5)
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert any("namespaces shop, billing" in line for line in lines)


def test_the_store_url_is_printed_redacted() -> None:
    base = require_server("postgres", server_url("postgres"), _probe_postgres)
    # The local server trusts every login, so a password it ignores shows the redaction.
    secret = base.replace("postgres@", "postgres:hunter2@", 1)
    assert "hunter2" in secret
    with serving("--url", secret) as (_, lines):
        text = "\n".join(lines)
        assert "hunter2" not in text
        assert "postgres:***@" in text


def test_a_token_from_the_environment_guards_actions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with qw.open(url) as client:
        client.enqueue_one("emails", None)
    with serving("--url", url, env=_env(QW_DASHBOARD_TOKEN="env-token")) as (base, lines):
        assert any("actions need the token" in line for line in lines)
        page = httpx.get(base + "ns/default/", timeout=5).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        pause = base + "ns/default/queues/emails/pause"
        origin = {"origin": base.rstrip("/")}
        refused = httpx.post(pause, data={"csrf": csrf.group(1)}, headers=origin, timeout=5)
        assert refused.status_code == 401
        ok = httpx.post(pause, headers={"authorization": "Bearer env-token"}, timeout=5)
        assert ok.status_code == 303
    with qw.open(url) as client:
        assert client.is_enabled("emails") is False


def test_expose_makes_reading_need_the_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = ("--url", url, "--expose", "--token", "t")
    with serving(*args) as (base, _):
        response = httpx.get(base + "ns/default/", timeout=5)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
        # Exposed, it answers whatever name it is reached by.
        other = httpx.get(base + "healthz", headers={"host": "dash.example"}, timeout=5)
        assert other.status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host", "0.0.0.0"), "not a loopback address"),
        (("--host", "192.0.2.1"), "Add --expose"),
        (("--expose",), "--expose needs a token"),
        (("--host", "0.0.0.0", "--expose"), "--expose needs a token"),
        (("--refresh-ms", "-5"), "refresh-ms"),
        (("--refresh-ms", "10"), "refresh_ms must be 0"),
    ],
)
def test_unsafe_or_bad_options_are_refused(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    done = subprocess.run(
        _qw("dashboard", "--url", url, "--port", "0", *args),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "serving on" not in done.stdout


def test_a_url_no_backend_takes_fails_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        _qw("dashboard", "--url", "nosuchstore://x", "--port", "0"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "BackendNotFound" in done.stderr


def test_qw_help_lists_the_command() -> None:
    done = subprocess.run(_qw("--help"), capture_output=True, text=True, env=_env(), timeout=30)
    assert done.returncode == 0
    assert "dashboard" in done.stdout
