"""Schedules: records of periodic jobs, and their tick moved forward by one compare-and-set.

What is checked, in the contract's words (the schedules section of
:class:`qw.contract.Backend`): ``save_schedule`` creates or replaces a
definition and keeps the stored ``last_tick``; ``advance_schedule`` moves the
tick only forward, and of any number of callers racing with one tick, from
threads or processes, exactly one is told True; schedules are per namespace.
Ticks are whole seconds, UTC.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

import qw
from qw.model import Schedule
from qw_testkit.base import ContractBase, OpenClient, new_namespace, race_processes, snapshot
from qw_testkit.children import advance_ticks
from qw_testkit.gates import requires
from qw_testkit.suite.limits import Declaring, NoIO

THREADS = 8
PROCESSES = 4
#: Ticks every racer tries, in order, in the racing tests.
RACE_TICKS = 40
#: Seconds a race may take before the kit gives up on it (a failure, not a hang).
DEADLINE = 90.0
#: A whole second, so that every store keeps it exactly.
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def tick(n: int) -> datetime:
    """The ``n``-th tick: ``n`` minutes after T0."""
    return T0 + timedelta(minutes=n)


def sched(name: str = "nightly", **fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "spec": "0 3 * * *",
        "tz": "Europe/Paris",
        "queue": "q",
        "task": "app.tasks:nightly",
    }
    values.update(fields)
    return Schedule(name, **values)


def last_ticks(client: qw.Client) -> dict[str, datetime | None]:
    return {s.name: s.last_tick for s in client.schedules()}


def is_utc(when: datetime | None) -> bool:
    return when is not None and when.utcoffset() == timedelta(0)


def _bad_schedule(**fields: Any) -> Callable[[qw.Client], object]:
    return lambda c: c.save_schedule(sched(**fields))


#: Calls the client must refuse, by name.
BAD_INPUT: dict[str, Callable[[qw.Client], object]] = {
    "name-empty": _bad_schedule(name=""),
    "name-space": _bad_schedule(name="has space"),
    "name-too-long": _bad_schedule(name="n" * 41),
    "name-int": _bad_schedule(name=5),
    "spec-empty": _bad_schedule(spec=""),
    "spec-newline": _bad_schedule(spec="0 3 * * *\n"),
    "spec-too-long": _bad_schedule(spec="*" * 201),
    "tz-empty": _bad_schedule(tz=""),
    "tz-int": _bad_schedule(tz=1),
    "queue-bad": _bad_schedule(queue="a/b"),
    "task-empty": _bad_schedule(task=""),
    "last_tick-naive": _bad_schedule(last_tick=datetime(2030, 1, 1)),
    "not-a-schedule": lambda c: c.save_schedule(cast(Any, {"name": "x"})),
    "advance-naive-tick": lambda c: c.advance_schedule("nightly", datetime(2030, 1, 1)),
    "advance-not-a-datetime": lambda c: c.advance_schedule("nightly", cast(Any, "2030-01-01")),
    "advance-before-1970": lambda c: c.advance_schedule(
        "nightly", datetime(1969, 12, 31, tzinfo=UTC)
    ),
    "advance-bad-name": lambda c: c.advance_schedule("bad name", T0),
    "remove-bad-name": lambda c: c.remove_schedule(""),
}


class ScheduleTests(ContractBase):
    def url_or_skip(self) -> str:
        url = self.backend_url()
        if url is None:
            pytest.skip(
                f"{type(self).__name__}.backend_url() returns None, so child processes "
                "cannot open the store"
            )
        return url

    # -- records -------------------------------------------------------------

    @requires("schedules")
    def test_save_creates_and_replaces_listed_by_name(self, client: qw.Client) -> None:
        assert client.schedules() == []
        client.save_schedule(sched("zeta"))
        client.save_schedule(sched("alpha", spec="every 30s", tz="UTC", queue="q2", task="t:a"))
        assert client.schedules() == [
            sched("alpha", spec="every 30s", tz="UTC", queue="q2", task="t:a"),
            sched("zeta"),
        ]
        client.save_schedule(sched("zeta", spec="*/5 * * * *", task="t:z"))
        assert client.schedules()[1] == sched("zeta", spec="*/5 * * * *", task="t:z")
        assert len(client.schedules()) == 2

    @requires("schedules")
    def test_advance_moves_the_tick_only_forward(self, client: qw.Client) -> None:
        client.save_schedule(sched())
        assert client.advance_schedule("nightly", tick(5))
        assert last_ticks(client) == {"nightly": tick(5)}
        assert is_utc(client.schedules()[0].last_tick)
        assert not client.advance_schedule("nightly", tick(5)), "the same tick moves nothing"
        assert not client.advance_schedule("nightly", tick(4)), "an earlier tick moves nothing"
        assert not client.advance_schedule("nightly", tick(5) - timedelta(seconds=1))
        assert last_ticks(client) == {"nightly": tick(5)}
        assert client.advance_schedule("nightly", tick(5) + timedelta(seconds=1))
        assert client.advance_schedule("nightly", tick(60 * 24 * 365))
        assert last_ticks(client) == {"nightly": tick(60 * 24 * 365)}

    @requires("schedules")
    def test_ticks_in_any_order_move_forward_only(self, client: qw.Client) -> None:
        client.save_schedule(sched())
        order = list(range(50))
        random.Random(7).shuffle(order)
        latest = -1
        for n in order:
            assert client.advance_schedule("nightly", tick(n)) is (n > latest), n
            latest = max(latest, n)
        assert last_ticks(client) == {"nightly": tick(latest)}

    @requires("schedules")
    def test_a_tick_in_another_zone_is_the_same_instant(self, client: qw.Client) -> None:
        client.save_schedule(sched())
        paris_summer = timezone(timedelta(hours=2))
        assert client.advance_schedule("nightly", tick(10).astimezone(paris_summer))
        assert not client.advance_schedule("nightly", tick(10)), "the same instant, in UTC"
        assert not client.advance_schedule("nightly", tick(9) + timedelta(seconds=59))
        (stored,) = client.schedules()
        assert stored.last_tick == tick(10)
        assert client.advance_schedule("nightly", tick(11).astimezone(paris_summer))
        assert client.schedules()[0].last_tick == tick(11)

    @requires("schedules")
    def test_save_keeps_the_stored_tick(self, client: qw.Client) -> None:
        client.save_schedule(sched(last_tick=tick(3)))
        assert last_ticks(client) == {"nightly": None}, "a new schedule has no tick yet"
        assert client.advance_schedule("nightly", tick(7))
        client.save_schedule(sched(spec="*/10 * * * *"))
        client.save_schedule(sched(spec="*/10 * * * *", last_tick=tick(1)))
        client.save_schedule(sched(spec="*/10 * * * *", last_tick=tick(99)))
        assert client.schedules() == [sched(spec="*/10 * * * *", last_tick=tick(7))]
        assert not client.advance_schedule("nightly", tick(7))
        assert client.advance_schedule("nightly", tick(8))

    @requires("schedules")
    def test_remove_forgets_a_schedule_and_its_tick(self, client: qw.Client) -> None:
        client.save_schedule(sched("a"))
        client.save_schedule(sched("b"))
        assert client.advance_schedule("a", tick(5))
        assert client.remove_schedule("a")
        assert not client.remove_schedule("a")
        assert not client.remove_schedule("never")
        assert [s.name for s in client.schedules()] == ["b"]
        assert not client.advance_schedule("a", tick(6)), "an unknown name never moves"
        assert [s.name for s in client.schedules()] == ["b"], "advance creates nothing"
        client.save_schedule(sched("a"))
        assert last_ticks(client) == {"a": None, "b": None}, "saved again: a fresh record"
        assert client.advance_schedule("a", tick(1))

    @requires("schedules")
    def test_advance_of_an_unknown_schedule_is_false(self, client: qw.Client) -> None:
        assert not client.advance_schedule("nobody", T0)
        assert client.schedules() == []

    @requires("schedules")
    def test_schedules_are_per_namespace(self, client: qw.Client, open_client: OpenClient) -> None:
        other = open_client(new_namespace())
        client.save_schedule(sched("shared", task="mine"))
        assert other.schedules() == []
        assert not other.advance_schedule("shared", tick(1))
        other.save_schedule(sched("shared", task="theirs"))
        assert other.advance_schedule("shared", tick(2))
        assert client.advance_schedule("shared", tick(1)), "their tick is not mine"
        assert client.schedules() == [sched("shared", task="mine", last_tick=tick(1))]
        assert other.schedules() == [sched("shared", task="theirs", last_tick=tick(2))]
        assert other.remove_schedule("shared")
        assert [s.name for s in client.schedules()] == ["shared"]
        assert not other.remove_schedule("shared")

    # -- racing ----------------------------------------------------------------

    def _check_once(self, client: qw.Client, won: list[datetime], name: str) -> None:
        ticks = [tick(n) for n in range(RACE_TICKS)]
        per_tick = Counter(won)
        twice = sorted(t.isoformat() for t, n in per_tick.items() if n > 1)
        assert not twice, f"{len(twice)} ticks were won by more than one caller: {twice[:5]}"
        never = sorted(t.isoformat() for t in ticks if per_tick[t] == 0)
        assert not never, f"{len(never)} ticks were won by nobody: {never[:5]}"
        assert last_ticks(client) == {name: ticks[-1]}

    @requires("schedules", "thread_safe")
    def test_racing_threads_advance_each_tick_exactly_once(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        client.save_schedule(sched())
        clients = [open_client(client.namespace) for _ in range(THREADS)]
        start = threading.Barrier(THREADS)
        won: list[datetime] = []
        errors: list[BaseException] = []

        def race(c: qw.Client) -> None:
            try:
                start.wait()
                for n in range(RACE_TICKS):
                    if c.advance_schedule("nightly", tick(n)):
                        won.append(tick(n))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        assert not errors, errors
        self._check_once(client, won, "nightly")

    @requires("schedules", "multi_process")
    def test_racing_processes_advance_each_tick_exactly_once(self, client: qw.Client) -> None:
        url = self.url_or_skip()
        client.save_schedule(sched())
        ticks = [tick(n) for n in range(RACE_TICKS)]
        reports = race_processes(
            advance_ticks,
            lambda start, results: (url, client.namespace, "nightly", ticks, start, results),
            count=PROCESSES,
            timeout=DEADLINE + 60,
        )
        self._check_once(client, [t for _, part in reports for t in part], "nightly")

    # -- bad input, a store without the capability -------------------------------

    @pytest.mark.parametrize("call", sorted(BAD_INPUT))
    @requires("schedules")
    def test_bad_schedules_are_refused_before_any_io(self, client: qw.Client, call: str) -> None:
        make = BAD_INPUT[call]
        with pytest.raises(qw.InvalidInput):
            make(qw.Client(cast("qw.Backend", NoIO(client.backend))))
        client.save_schedule(sched())
        client.advance_schedule("nightly", tick(1))
        before = (snapshot(client), client.schedules())
        with pytest.raises(qw.InvalidInput):
            make(client)
        assert (snapshot(client), client.schedules()) == before, "a refused call wrote something"

    def test_a_store_without_schedules_refuses_them(self, client: qw.Client) -> None:
        refusing = client
        if client.capabilities.schedules:
            # The client refuses before the store is asked: shown with this store,
            # declared without the capability.
            refusing = qw.Client(cast("qw.Backend", Declaring(client.backend, schedules=False)))
        before = snapshot(client)
        calls: list[Callable[[], object]] = [
            lambda: refusing.save_schedule(sched()),
            lambda: refusing.advance_schedule("nightly", T0),
            lambda: refusing.schedules(),
            lambda: refusing.remove_schedule("nightly"),
        ]
        for call in calls:
            with pytest.raises(qw.Unsupported, match="schedules"):
                call()
        assert snapshot(client) == before


# ``pytest -k Schedule`` selects this module's tests in a backend's subclass:
# -k matches the names set on a test function, and a subclass's node ids do
# not name the mixin class.
for _name, _test in list(vars(ScheduleTests).items()):
    if _name.startswith("test_") and callable(_test):
        _test.ScheduleTests = True
