"""qw.display: URLs shown without secrets, store-held text shown inert."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import qw
from qw.cli import main
from qw.display import escape_json, escape_text, redact_url

PW = "Sup3rSecretPW"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:PW@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("redis://:PW@h:6379/0", "redis://:***@h:6379/0"),
        ("sqlite:///tmp/a.db", "sqlite:///tmp/a.db"),
        ("sqlite:////abs/a.db?busy_timeout=9", "sqlite:////abs/a.db?busy_timeout=9"),
        ("memory://", "memory://"),
        (
            "postgresql://u@h/db?password=PW&sslmode=off",
            "postgresql://u@h/db?password=***&sslmode=off",
        ),
        ("postgresql://h/db?sslpassword=PW#frag", "postgresql://h/db?sslpassword=***#***"),
        ("redis://h/0?ssl_password=PW", "redis://h/0?ssl_password=***"),
        ("postgresql://u:PW@h/db?schema=a&schema=b", "postgresql://u:***@h/db?schema=a&schema=b"),
        ("postgresql://u:PW@[::1/db", "postgresql://u:***@[::1/db"),
        ("redis://:PW@127.0.0.1:99999/0", "redis://:***@127.0.0.1:99999/0"),
        ("redis://u:P/W@h/0", "redis://u:***@h/0"),
        ("redis://u:P@W@h/0", "redis://u:***@h/0"),
        ("u:PW@host", "u:***@host"),
        ("[::1?token=PW&a=b", "[::1?token=***&a=b"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url", ["http://[", "a://u:b:c@[x", "\x00://:PW@", "://:PW@h", "?password", "%zz://u:PW@h"]
)
def test_redact_url_never_raises_and_hides_the_password(url: str) -> None:
    assert "PW" not in redact_url(url)


def test_escape_text_makes_control_and_bidi_characters_visible() -> None:
    assert escape_text("plain é ✓") == "plain é ✓"
    assert escape_text("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"
    assert escape_text("\rqw: error: forged\n\t") == "\\rqw: error: forged\\n\\t"
    assert escape_text("a\\x1b") == "a\\\\x1b"  # a literal backslash cannot pose as an escape
    assert (
        escape_text("\x7f\x9b\u202e\u2066\u2028\udcff") == "\\x7f\\x9b\\u202e\\u2066\\u2028\\udcff"
    )


def test_escape_json_keeps_valid_json_for_the_same_value() -> None:
    value = {"k": "\x9b\u202e\udcff é \x1b"}
    text = escape_json(json.dumps(value, ensure_ascii=False))
    assert not any(c in text for c in "\x9b\u202e\udcff\x1b")
    assert json.loads(text) == value


# -- every URL the user may see, through real qw.open calls and real CLI runs --

# The postgres and redis probes live with those backends' tests.
LEAKY_URLS = [
    f"sqlite:///x.db?token={PW}",
    f"sqlite:///x.db?busy_timeout=1#{PW}",
    f"u:{PW}@host",
]


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_qw_open_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(qw.ConfigurationError) as caught:
        qw.open(url)
    assert PW not in str(caught.value)
    assert PW[4:] not in str(caught.value)


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_cli_errors_never_show_the_password(url: str) -> None:
    result = CliRunner().invoke(main, ["status", "--url", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("qw: error: ConfigurationError: ")
    assert PW[4:] not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_registry_errors_redact_the_url() -> None:
    with pytest.raises(qw.ConfigurationError) as caught:
        qw.registry.backend_name_for(f"u:{PW}@host/x")
    assert PW not in str(caught.value)


# -- terminal output of store-held text -------------------------------------

HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J", "\rqw: error: forged", "\u202eevil\x9b"]


def _raw_controls(text: str) -> list[str]:
    """Characters a terminal would act on (a newline between lines is fine)."""
    bad = set("\x1b\r\x07\x9b\u202e\t")
    return sorted({c for c in text if c in bad or (ord(c) < 32 and c != "\n")})


def seed_hostile(url: str) -> str:
    """Put jobs, a worker and an event with hostile text into the store at ``url``."""
    with qw.open(url, namespace="hostile") as client:
        for i, text in enumerate(HOSTILE):
            client.enqueue_one(
                "q",
                {"task": f"t{text}", "args": [text]},
                id=f"id{i}{text}",
                dedupe_key=f"dk{text}",
            )
        client.heartbeat(qw.WorkerInfo(id=f"w{HOSTILE[0]}", host=f"h{HOSTILE[2]}", queues=("q",)))
        [claim] = client.claim(["q"], worker=f"w{HOSTILE[0]}", lease_s=30)
        client.complete(claim.lease, result=HOSTILE[1], event=qw.EventSpec("done", HOSTILE[3]))
        return claim.job.id


def assert_inert_cli_output(url: str, job_id: str) -> None:
    runs = [
        ["jobs", "list"],
        ["jobs", "show", job_id],
        ["status"],
        ["events", "tail"],
        ["jobs", "list", "--json"],
        ["events", "tail", "--json"],
        ["status", "--json"],
        ["jobs", "show", "nosuch\x1b[2J\rqw: error: forged"],
    ]
    for args in runs:
        result = CliRunner().invoke(main, [*args, "--url", url, "--namespace", "hostile"])
        assert result.exit_code in (0, 4), (args, result.output)
        out = result.stdout + result.stderr
        assert _raw_controls(out) == [], (args, out)
        assert "\nqw: error: forged" not in out
    listed = CliRunner().invoke(
        main, ["jobs", "show", job_id, "--url", url, "--namespace", "hostile"]
    )
    assert escape_text(job_id) in listed.stdout


def test_cli_output_of_a_sqlite_store_holds_no_raw_control_characters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    job_id = seed_hostile(url)
    assert_inert_cli_output(url, job_id)


def test_a_file_with_foreign_tables_shows_its_names_escaped(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "evil\x1b[2J" (id)')
    result = CliRunner().invoke(main, ["status", "--url", f"sqlite:///{path}"])
    assert result.exit_code == 3
    assert "\x1b" not in result.stderr
    assert "evil\\x1b[2J" in result.stderr


def test_an_apps_repr_hides_the_urls_secrets() -> None:
    app = qw.App(f"postgresql://u:{PW}@h/db?password={PW}", namespace="shop")
    assert PW not in repr(app)
    assert "u:***@h/db?password=***" in repr(app)


@pytest.mark.parametrize("setting", [{"url": ""}, {"url": "  "}, {"namespace": ""}])
def test_configuring_an_app_with_an_empty_value_is_an_error(setting: dict[str, str]) -> None:
    app = qw.App("memory://", namespace="shop")
    with pytest.raises((qw.ConfigurationError, qw.InvalidName)):
        app.configure(**setting)
    assert (app.url, app.namespace) == ("memory://", "shop")
