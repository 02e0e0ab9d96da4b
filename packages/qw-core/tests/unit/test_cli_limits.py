"""``qw limits``, the limit keys of ``qw status``, and ``qw jobs list --key``.

Run through click on memory, a real SQLite file and the real PostgreSQL
server, each only where its backend declares ``limits`` (a loud skip names
the backend otherwise); a store without it is a real installed plugin.
"""

from __future__ import annotations

import importlib
import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import Result
from unit_helpers import run

import qw
from qw.cli._common import EXIT_BACKEND, EXIT_USAGE
from qw.cli.status import DEFAULT_SHOWN_KEYS
from qw.model import JobStatus, JSONValue, Limit, NewJob
from qw_testkit.servers import require_server, server_url

# The module, not the group of the same name that ``qw.cli`` imports from it.
limits_cli = importlib.import_module("qw.cli.limits")

HOSTILE = "evil\x1b]0;pwned\x07\r\n\u202ekey"
HOSTILE_SHOWN = "evil\\x1b]0;pwned\\x07\\r\\n\\u202ekey"
KEY_HEADERS = ["KEY", "QUEUED", "RUNNING", "LIMIT", "STARTED", "STATE", "OVERRIDE"]


def _probe(url: str) -> None:
    qw.open(url, namespace="probe").close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, memory_url: str, tmp_path: Path) -> str:
    if request.param == "memory":
        found = memory_url
    elif request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'limits.db'}"
    else:
        found = require_server("postgres", server_url("postgres"), _probe)
    with qw.open(found, namespace="probe") as client:
        if not client.capabilities.limits:
            pytest.skip(f"SKIPPED LOUDLY: backend {request.param} does not declare limits yet")
    return found


@pytest.fixture
def ns() -> str:
    # The PostgreSQL database is shared: every test has a namespace of its own.
    return f"lim{secrets.token_hex(5)}"


@pytest.fixture
def client(url: str, ns: str) -> Iterator[qw.Client]:
    with qw.open(url, namespace=ns) as c:
        yield c


def qw_cli(url: str, ns: str, *args: str, code: int = 0) -> Result:
    result = run(*args, "--url", url, "--namespace", ns)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def job(key: str | None, limit: Limit | None = None, queue: str = "q") -> NewJob:
    payload: JSONValue = {"task": "t", "args": [], "kwargs": {}}
    return NewJob(queue, payload, limit_key=key, limit=limit)


def table(output: str, header: str = "KEY") -> dict[str, list[str]]:
    """The rows of the table whose header starts with ``header``, by first cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header + " "))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line or line.startswith("…"):
            break
        # Cells are separated by two spaces at least; a LIMIT cell has one inside.
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        rows[cells[0]] = cells[1:]
    return rows


# -- qw limits set | list | clear ----------------------------------------------


def test_set_list_and_clear_persist_in_the_store(url: str, ns: str) -> None:
    out = qw_cli(url, ns, "limits", "set", "user:1", "--concurrency", "2", "--rate", "10/min")
    assert (
        out.output
        == "user:1: 2 running, 10/60s (operators' limit; replaces what its jobs declare)\n"
    )
    qw_cli(url, ns, "limits", "set", "user:2", "--rate", "5/30s")
    # Read back through a client of its own: the limit is in the store, not the CLI.
    with qw.open(url, namespace=ns) as other:
        assert other.limits() == {
            "user:1": Limit(concurrency=2, rate=10, per=60.0),
            "user:2": Limit(rate=5, per=30.0),
        }
    listed = json.loads(qw_cli(url, ns, "limits", "list", "--json").output)
    assert listed == [
        {"key": "user:1", "concurrency": 2, "rate": 10, "per": 60.0},
        {"key": "user:2", "concurrency": None, "rate": 5, "per": 30.0},
    ]
    assert table(qw_cli(url, ns, "limits", "list").output) == {
        "user:1": ["2 running, 10/60s"],
        "user:2": ["5/30s"],
    }
    # A second set replaces the first whole: the rate it leaves out is gone.
    qw_cli(url, ns, "limits", "set", "user:1", "-c", "3")
    with qw.open(url, namespace=ns) as other:
        assert other.limits()["user:1"] == Limit(concurrency=3)

    cleared = qw_cli(url, ns, "limits", "clear", "user:1")
    assert cleared.output == "user:1: operators' limit cleared; its jobs' own limits apply\n"
    assert (
        qw_cli(url, ns, "limits", "clear", "user:1").output == "user:1: had no operators' limit\n"
    )
    again = json.loads(qw_cli(url, ns, "limits", "clear", "user:2", "--json").output)
    assert again == {"key": "user:2", "cleared": True}
    assert qw_cli(url, ns, "limits", "list").output == "no operators' limits\n"
    assert json.loads(qw_cli(url, ns, "limits", "list", "--json").output) == []


def test_pause_holds_the_keys_jobs_back_until_cleared(url: str, ns: str, client: qw.Client) -> None:
    held, free = client.enqueue([job("tenant:a", Limit(concurrency=5)), job(None)])
    set_out = json.loads(qw_cli(url, ns, "limits", "set", "tenant:a", "--pause", "--json").output)
    assert set_out == {
        "key": "tenant:a",
        "limit": {"concurrency": 0, "rate": None, "per": None},
    }
    claims = client.claim(["q"], worker="w", limit=10)
    assert [c.job.id for c in claims] == [free.id]
    assert client.get(held.id).status is JobStatus.QUEUED

    rows = table(qw_cli(url, ns, "status").output)
    assert rows["tenant:a"] == ["1", "0", "paused", "paused", "yes"]
    qw_cli(url, ns, "limits", "clear", "tenant:a")
    assert [c.job.id for c in client.claim(["q"], worker="w", limit=10)] == [held.id]


# -- the limit keys in qw status, and qw limits keys ----------------------------------


def _busy(client: qw.Client) -> None:
    """``a`` full at 1 running, ``b`` under its limit, ``r`` rated, ``p`` paused by operators."""
    client.enqueue([job("a", Limit(concurrency=1)) for _ in range(3)])
    client.enqueue([job("b", Limit(concurrency=4)) for _ in range(2)])
    client.enqueue([job("r", Limit(rate=100, per=60.0))])
    assert len(client.claim(["q"], worker="w", limit=10)) == 4
    client.enqueue([job("a", Limit(concurrency=1))])
    client.set_limit("p", Limit(concurrency=0))


def test_status_shows_the_keys_running_against_their_limits(
    url: str, ns: str, client: qw.Client
) -> None:
    _busy(client)
    out = qw_cli(url, ns, "status").output
    lines = out.splitlines()
    queues = lines.index(next(x for x in lines if x.startswith("QUEUE ")))
    header = lines.index(next(x for x in lines if x.startswith("KEY ")))
    workers = lines.index("no workers")
    # After the queues, before the workers.
    assert queues < header < workers
    assert lines[header].split() == KEY_HEADERS
    rows = table(out)
    # Paused first, then throttled, then the busiest: what an operator looks at.
    assert list(rows) == ["p", "a", "b", "r"]
    assert rows["p"] == ["0", "0", "paused", "paused", "yes"]
    assert rows["a"] == ["3", "1", "1 running", "throttled", "no"]
    assert rows["b"] == ["0", "2", "4 running", "ok", "no"]
    assert rows["r"] == ["0", "1", "100/60s", "1", "ok", "no"]

    data = json.loads(qw_cli(url, ns, "status", "--json").output)
    keys = {k["key"]: k for k in data["keys"]}
    assert keys["a"] == {
        "key": "a",
        "state": "throttled",
        "queued": 3,
        "running": 1,
        "started": 0,
        "limit": {"concurrency": 1, "rate": None, "per": None},
        "overridden": False,
        "throttled": True,
    }
    assert keys["r"]["started"] == 1
    assert keys["r"]["limit"] == {"concurrency": None, "rate": 100, "per": 60.0}
    assert keys["p"]["state"] == "paused"
    assert keys["p"]["overridden"] is True
    assert (data["keys_more"], data["keys_more_exact"]) == (0, True)


def test_status_shows_at_most_twenty_keys_and_says_how_many_more(
    url: str, ns: str, client: qw.Client
) -> None:
    client.enqueue([job(f"k{i:02d}", Limit(concurrency=2)) for i in range(25)])
    out = qw_cli(url, ns, "status").output
    assert len(table(out)) == DEFAULT_SHOWN_KEYS == 20
    assert "… and 5 more limit keys, see `qw limits keys`" in out.splitlines()
    few = qw_cli(url, ns, "status", "--keys", "3").output
    assert list(table(few)) == ["k00", "k01", "k02"]
    assert "… and 22 more limit keys, see `qw limits keys`" in few
    data = json.loads(qw_cli(url, ns, "status", "--json", "--keys", "3").output)
    assert [k["key"] for k in data["keys"]] == ["k00", "k01", "k02"]
    assert data["keys_more"] == 22
    # All 25, through the command the line names.
    assert len(table(qw_cli(url, ns, "limits", "keys").output)) == 25


def test_status_without_keys_prints_no_key_section(url: str, ns: str, client: qw.Client) -> None:
    client.enqueue([job(None)])
    out = qw_cli(url, ns, "status").output
    assert "KEY " not in out
    assert "limit keys" not in out
    assert json.loads(qw_cli(url, ns, "status", "--json").output)["keys"] == []


def test_limits_keys_pages_through_every_key(
    url: str, ns: str, client: qw.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 3, so that 8 keys take several reads.
    monkeypatch.setattr(limits_cli, "KEYS_PAGE", 3)
    client.enqueue([job(f"k{i}", Limit(concurrency=1)) for i in range(8) for _ in range(2)])
    claims = client.claim(["q"], worker="w", limit=100)
    assert len(claims) == 8
    listed = json.loads(qw_cli(url, ns, "limits", "keys", "--json").output)
    assert [k["key"] for k in listed] == [f"k{i}" for i in range(8)]
    assert all(k["state"] == "throttled" for k in listed)
    after = json.loads(qw_cli(url, ns, "limits", "keys", "--after", "k2", "--json").output)
    assert [k["key"] for k in after] == [f"k{i}" for i in range(3, 8)]
    capped = qw_cli(url, ns, "limits", "keys", "--after", "k2", "--limit", "4").output
    assert list(table(capped)) == ["k3", "k4", "k5", "k6"]

    # Finishing k5's running job frees its slot: it is no longer throttled.
    (k5,) = [c for c in claims if c.job.limit_key == "k5"]
    client.complete(k5.lease, None)
    throttled = json.loads(qw_cli(url, ns, "limits", "keys", "--throttled", "--json").output)
    assert [k["key"] for k in throttled] == [f"k{i}" for i in range(8) if i != 5]
    assert table(qw_cli(url, ns, "limits", "keys").output)["k5"] == [
        "1",
        "0",
        "1 running",
        "ok",
        "no",
    ]


def test_limits_keys_with_none(url: str, ns: str) -> None:
    assert qw_cli(url, ns, "limits", "keys").output == "no limit keys\n"
    assert qw_cli(url, ns, "limits", "keys", "--throttled").output == "no throttled keys\n"
    assert json.loads(qw_cli(url, ns, "limits", "keys", "--json").output) == []


# -- qw jobs list --key ------------------------------------------------------------


def test_jobs_list_filters_by_key_with_the_other_filters(
    url: str, ns: str, client: qw.Client
) -> None:
    mine = client.enqueue([job("user:7", Limit(concurrency=1)) for _ in range(2)])
    other = client.enqueue([job("user:8"), job("user:7", queue="q2"), job(None)])
    (claim,) = client.claim(["q"], worker="w")
    assert claim.job.id == mine[0].id

    listed = json.loads(qw_cli(url, ns, "jobs", "list", "--key", "user:7", "--json").output)
    assert [j["id"] for j in listed] == sorted([mine[0].id, mine[1].id, other[1].id])
    assert {j["limit_key"] for j in listed} == {"user:7"}
    assert listed[0]["limit"] == {"concurrency": 1, "rate": None, "per": None}
    both = qw_cli(url, ns, "jobs", "list", "-k", "user:7", "-s", "queued", "-q", "q", "--json")
    assert [j["id"] for j in json.loads(both.output)] == [mine[1].id]

    text = qw_cli(url, ns, "jobs", "list", "--key", "user:7", "--status", "running").output
    lines = text.splitlines()
    assert lines[0].split()[-1] == "KEY"
    assert lines[1].split()[0] == mine[0].id
    assert lines[1].split()[-1] == "user:7"
    assert qw_cli(url, ns, "jobs", "list", "--key", "user:9").output == "no jobs\n"

    shown = qw_cli(url, ns, "jobs", "show", mine[0].id).output
    fields = dict(line.split(None, 1) for line in shown.splitlines())
    assert fields["limit_key"] == "user:7"
    assert fields["limit"] == "1 running"


def test_a_retried_job_keeps_its_key_and_limit(url: str, ns: str, client: qw.Client) -> None:
    (first,) = client.enqueue([NewJob("q", 1, limit_key="user:3", limit=Limit(1), fair=True)])
    (claim,) = client.claim(["q"], worker="w")
    client.fail(claim.lease, {"type": "Boom"}, retry_in=None)
    client.enqueue([job("user:3", Limit(1))])
    (busy,) = client.claim(["q"], worker="w")
    new_id = qw_cli(url, ns, "jobs", "retry", first.id, "--as-new").output.split(" -> ")[1].strip()
    retried = client.get(new_id)
    assert (retried.limit_key, retried.limit, retried.fair) == ("user:3", Limit(1), True)
    # Held to the key's limit like the first run: the key's slot is taken.
    assert client.claim(["q"], worker="w") == []
    client.complete(busy.lease, None)
    assert [c.job.id for c in client.claim(["q"], worker="w")] == [new_id]


def test_a_job_retried_in_place_is_held_to_its_keys_limit(
    url: str, ns: str, client: qw.Client
) -> None:
    (first,) = client.enqueue([NewJob("q", 1, limit_key="user:4", limit=Limit(1), fair=True)])
    (claim,) = client.claim(["q"], worker="w")
    client.fail(claim.lease, {"type": "Boom"}, retry_in=None)
    client.enqueue([job("user:4", Limit(1))])
    (busy,) = client.claim(["q"], worker="w")
    assert qw_cli(url, ns, "jobs", "retry", first.id).output == f"{first.id} queued\n"
    retried = client.get(first.id)
    assert (retried.limit_key, retried.limit, retried.fair) == ("user:4", Limit(1), True)
    # The key's one slot is taken: the retried job waits for it.
    assert client.claim(["q"], worker="w") == []
    client.complete(busy.lease, None)
    assert [c.job.id for c in client.claim(["q"], worker="w")] == [first.id]


def test_jobs_list_without_keys_keeps_its_columns(url: str, ns: str, client: qw.Client) -> None:
    client.enqueue([job(None)])
    header = qw_cli(url, ns, "jobs", "list").output.splitlines()[0]
    assert header.split() == ["ID", "QUEUE", "STATUS", "ATT", "MAX", "TASK", "CREATED"]


# -- bad input, hostile keys -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["limits", "set", "k"], "give --concurrency, --rate or --pause"),
        (["limits", "set", "k", "--rate", "3/fortnight"], "is not N/unit"),
        (["limits", "set", "k", "--rate", "0/min"], "rate must be an int in [1,"),
        (["limits", "set", "k", "--pause", "-c", "1"], "--pause is --concurrency 0"),
        (["limits", "set", "bad\x1b[2Jkey", "-c", "1"], "bad\\\\x1b[2Jkey"),
        (["limits", "set", "", "-c", "1"], "a limit key must be printable text"),
        (["limits", "clear", "x" * 201], "a limit key must be printable text"),
        (["limits", "keys", "--after", "\u202e"], "\\\\u202e"),
        (["jobs", "list", "--key", "a\rb"], "a\\\\rb"),
    ],
)
def test_bad_input_is_one_escaped_line_and_exit_2(
    url: str, ns: str, client: qw.Client, args: list[str], message: str
) -> None:
    result = qw_cli(url, ns, *args, code=EXIT_USAGE)
    assert result.stdout == ""
    assert result.stderr.startswith("qw: error: InvalidInput: ")
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not {"\x1b", "\u202e"} & set(result.stderr)
    assert client.limits() == {}


@pytest.mark.parametrize("args", [["-c", "-1"], ["-c", "1000001"], ["-c", "two"]])
def test_a_concurrency_out_of_range_is_a_usage_error(url: str, ns: str, args: list[str]) -> None:
    result = qw_cli(url, ns, "limits", "set", "k", *args, code=EXIT_USAGE)
    assert "Invalid value for '--concurrency'" in result.stderr


def test_a_hostile_key_in_the_store_prints_escaped(url: str, ns: str, client: qw.Client) -> None:
    # The client refuses such a key; a store written by other code may still hold one.
    client.backend.set_limit(HOSTILE, Limit(concurrency=0))
    for args in (["status"], ["limits", "list"], ["limits", "keys"]):
        out = qw_cli(url, ns, *args).output
        assert HOSTILE_SHOWN in out, args
        assert not {"\x1b", "\x07", "\r", "\u202e"} & set(out), args
    for args in (["status", "--json"], ["limits", "list", "--json"], ["limits", "keys", "--json"]):
        out = qw_cli(url, ns, *args).output
        assert not {"\x1b", "\x07", "\r", "\u202e"} & set(out), args
        data = json.loads(out)
        keys = data["keys"] if args[0] == "status" else data
        assert [k["key"] for k in keys] == [HOSTILE], args


# -- a backend without limits ---------------------------------------------------------

_PLUGIN = '''
"""A memory store that does not declare ``limits``: a backend written before them."""

from dataclasses import replace

from qw.backends.memory import MemoryBackend
from qw.plugin import hookimpl


class NoLimitsBackend(MemoryBackend):
    name = "nolimits"
    capabilities = replace(MemoryBackend.capabilities, limits=False, schedules=False)

    @classmethod
    def from_url(cls, url, *, namespace):
        return cls("nolimits-" + url.partition("://")[2], namespace=namespace)


@hookimpl
def qw_register_backends():
    return [NoLimitsBackend]
'''


@pytest.fixture
def nolimits_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``nolimits://`` URL, its backend installed as a real plugin distribution."""
    site = tmp_path / "site"
    info = site / "qw_test_nolimits-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "qw_test_nolimits.py").write_text(textwrap.dedent(_PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qw-test-nolimits\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[qw.backends]\nnolimits = qw_test_nolimits\n")
    monkeypatch.syspath_prepend(str(site))
    return f"nolimits://t{secrets.token_hex(4)}"


def test_status_on_a_backend_without_limits_has_no_key_section(nolimits_url: str) -> None:
    with qw.open(nolimits_url, namespace="n") as client:
        assert client.capabilities.limits is False
        client.enqueue([job(None)])
    out = qw_cli(nolimits_url, "n", "status").output
    assert "QUEUE " in out
    assert "KEY " not in out
    data = json.loads(qw_cli(nolimits_url, "n", "status", "--json").output)
    assert data["keys"] is None
    assert data["queues"]["q"]["counts"]["queued"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["limits", "list"],
        ["limits", "keys", "--json"],
        ["limits", "set", "k", "-c", "1"],
        ["limits", "clear", "k"],
    ],
)
def test_limits_on_a_backend_without_them_is_a_clear_error(
    nolimits_url: str, args: list[str]
) -> None:
    result = qw_cli(nolimits_url, "n", *args, code=EXIT_BACKEND)
    assert result.stdout == ""
    assert result.stderr == (
        "qw: error: Unsupported: backend 'nolimits' does not declare capability 'limits'\n"
    )


# -- secrets -----------------------------------------------------------------------


def test_status_never_prints_the_password_of_its_url(ns: str) -> None:
    url = require_server("postgres", server_url("postgres"), _probe)
    parts = urlsplit(url)
    if parts.password is not None:
        pytest.skip("the server URL has a password of its own")
    # The test server trusts local connections, so any password gets in.
    host = parts.netloc.rpartition("@")[2]
    with_password = parts._replace(netloc=f"{parts.username or 'postgres'}:hunter2@{host}").geturl()
    commands = [["status"], ["status", "--json"]]
    with qw.open(with_password, namespace=ns) as client:
        if client.capabilities.limits:
            client.enqueue([job("k", Limit(concurrency=1))])
            commands += [["limits", "keys"], ["limits", "list", "--json"]]
    for args in commands:
        out = qw_cli(with_password, ns, *args).output
        assert "hunter2" not in out, args
    assert ":***@" in qw_cli(with_password, ns, "status").output
