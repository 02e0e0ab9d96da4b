"""``qw schedules``: the records in the store, with last and next tick, and ``remove``.

Run through click on memory and a real SQLite file (where its backend
declares ``schedules``); the records are written by a client, as a worker
writes them, so the command needs no app.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from unit_helpers import run

import qw
from qw.cli._common import EXIT_NOT_FOUND
from qw.model import Schedule
from qw.schedule import timing

HEADERS = ["NAME", "SPEC", "TZ", "TASK", "QUEUE", "LAST TICK", "NEXT TICK"]


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, memory_url: str, tmp_path: Path) -> str:
    found = memory_url if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    with qw.open(found, namespace="probe") as client:
        if not client.capabilities.schedules:
            pytest.skip(f"SKIPPED LOUDLY: backend {request.param} does not declare schedules yet")
    return found


@pytest.fixture
def ns() -> str:
    return f"cli{secrets.token_hex(4)}"


def qw_cli(url: str, ns: str, *args: str, code: int = 0) -> Result:
    result = run(*args, "--url", url, "--namespace", ns)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def rows(output: str) -> dict[str, list[str]]:
    lines = output.splitlines()
    assert lines[0].split() == [
        "NAME",
        "SPEC",
        "TZ",
        "TASK",
        "QUEUE",
        "LAST",
        "TICK",
        "NEXT",
        "TICK",
    ]
    starts = [lines[0].index(h) for h in HEADERS]
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        found[cells[0]] = cells[1:]
    return found


def test_an_empty_store_has_no_schedules(url: str, ns: str) -> None:
    assert qw_cli(url, ns, "schedules").output == "no schedules\n"
    assert json.loads(qw_cli(url, ns, "schedules", "--json").output) == []


def test_schedules_are_listed_with_their_last_and_next_tick(url: str, ns: str) -> None:
    with qw.open(url, namespace=ns) as client:
        now = client.now()
        client.save_schedule(Schedule("nightly", "30 2 * * *", "Europe/Paris", "reports", "r.b"))
        client.save_schedule(Schedule("fast", "every 20s", "UTC", "q", "t.fast"))
        client.save_schedule(Schedule("future", "every fortnight", "UTC", "q", "t.x"))
        # One a scheduler moved just now, and one whose latest tick is not enqueued yet.
        fast_tick = timing("every 20s").latest(now)
        assert fast_tick is not None
        assert client.advance_schedule("fast", fast_tick)
        assert client.advance_schedule("future", now - timedelta(days=1))
        client.save_schedule(Schedule("behind", "* * * * *", "UTC", "q", "t.b"))
        assert client.advance_schedule("behind", now.replace(second=0) - timedelta(minutes=5))

    listed = {d["name"]: d for d in json.loads(qw_cli(url, ns, "schedules", "--json").output)}
    assert sorted(listed) == ["behind", "fast", "future", "nightly"]
    nightly = listed["nightly"]
    upcoming = timing("30 2 * * *", "Europe/Paris").next_after(now)
    assert upcoming is not None
    assert nightly == {
        "name": "nightly",
        "spec": "30 2 * * *",
        "tz": "Europe/Paris",
        "task": "r.b",
        "queue": "reports",
        "last_tick": None,
        "next_tick": upcoming.isoformat(),
        "pending": False,
        "valid": True,
    }
    assert listed["fast"]["last_tick"] == fast_tick.astimezone(UTC).isoformat()
    next_fast = datetime.fromisoformat(listed["fast"]["next_tick"])
    assert fast_tick < next_fast <= fast_tick + timedelta(seconds=40)
    assert listed["behind"]["pending"] is True
    assert (listed["future"]["valid"], listed["future"]["next_tick"]) == (False, None)

    table = rows(qw_cli(url, ns, "schedules").output)
    assert table["nightly"][:4] == ["30 2 * * *", "Europe/Paris", "r.b", "reports"]
    assert table["nightly"][4] == "-"
    # Wall-clock time in the schedule's own zone, with its offset.
    local = upcoming.astimezone(qw.schedule.zone_of("Europe/Paris"))
    assert table["nightly"][5] == f"{local:%Y-%m-%d %H:%M:%S%z}"
    assert table["behind"][5].endswith("(a tick is due)")
    assert table["future"][5] == "? (spec not understood)"
    # The subcommand lists the same.
    assert qw_cli(url, ns, "schedules", "list").output == qw_cli(url, ns, "schedules").output


def test_remove_forgets_a_schedule_and_says_when_there_is_none(url: str, ns: str) -> None:
    with qw.open(url, namespace=ns) as client:
        client.save_schedule(Schedule("gone", "@hourly", "UTC", "q", "t"))
    assert qw_cli(url, ns, "schedules", "remove", "gone").output == "schedule gone removed\n"
    missing = qw_cli(url, ns, "schedules", "remove", "gone", code=EXIT_NOT_FOUND)
    assert "no schedule 'gone'" in missing.output
    assert qw_cli(url, ns, "schedules").output == "no schedules\n"
    # Store options given to the group reach the subcommand.
    group_first = run("schedules", "--url", url, "--namespace", ns, "remove", "gone")
    assert group_first.exit_code == EXIT_NOT_FOUND


def test_a_bad_name_is_refused_as_bad_input(url: str, ns: str) -> None:
    bad = qw_cli(url, ns, "schedules", "remove", "no spaces\x1b[2J", code=2)
    assert "\x1b" not in bad.output
    assert "invalid schedule name" in bad.output
