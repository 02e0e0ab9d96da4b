"""Periodic jobs: schedule specs, tick arithmetic, and the leader-free scheduler.

A schedule is a cron expression in an IANA time zone (``"*/5 * * * *"``,
``"Europe/Paris"``) or an interval (``"every 30s"``). Its *ticks* are the
instants it fires; every scheduler computes the same ticks from the spec,
so any number of them may run at once (one in each worker) with no leader:

* the tick due now is ``T``, the latest tick at or before the store's clock;
* if the stored ``last_tick`` is ``T`` or later, nothing is to do;
* else the job is enqueued with the id ``NAME@T`` (``DuplicateJob``: another
  scheduler enqueued it first) and ``last_tick`` is moved to ``T`` by the
  store's atomic compare-and-set (:meth:`qw.Client.advance_schedule`).

The id makes a second insert of a tick fail while its job is in the store;
the stored tick keeps it from being enqueued again once its job is purged.
Ticks missed while no scheduler ran are not caught up one by one: the
latest of them runs once (``missed="latest"``, the default), or none does
(``missed="skip"``). See ``docs/periodic.md``.

Cron expressions are parsed and iterated by ``cronsim`` (small, typed,
maintained, and it handles DST the way Debian's cron does); the tick
arithmetic around it (:class:`CronTiming`) only checks its answers move
forward and chooses the latest tick consistently with the forward ones.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from qw.errors import DuplicateJob, InvalidInput, QwError
from qw.model import JSONValue, NewJob, Schedule
from qw.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_DELAY_S,
    MAX_SCHEDULE_SPEC_CHARS,
    check_schedule_name,
    validate_new_jobs,
    validate_queue,
)

if TYPE_CHECKING:
    from qw.client import Client
    from qw.tasks import Task

__all__ = [
    "MISSED_POLICIES",
    "CronTiming",
    "FakeClock",
    "IntervalTiming",
    "Missed",
    "Periodic",
    "Scheduler",
    "Timing",
    "every_spec",
    "job_id",
    "tick_of",
    "timing",
    "zone_of",
]

log = logging.getLogger("qw.schedule")

Missed = Literal["latest", "skip"]
#: What happens to ticks missed while no scheduler ran (see :class:`Periodic`).
MISSED_POLICIES: tuple[Missed, ...] = ("latest", "skip")
#: ``missed="skip"`` enqueues a tick only if a scheduler sees it within this
#: long (at most half the schedule's period).
SKIP_GRACE_S = 60.0
#: A scheduler sleeps at most this long (real seconds) between passes, so it
#: sees a changed record or a moved clock soon enough.
MAX_SLEEP_S = 30.0
#: The shortest sleep between passes, so a clock read just before a tick does
#: not spin.
MIN_SLEEP_S = 0.005
#: A pass whose store read is older than this (a paused process, a slow
#: store) reads again before it enqueues: acting on a stale ``last_tick``
#: could insert a tick whose job another scheduler enqueued, ran, and had
#: purged in the meantime.
STALE_READ_S = 2.0
# Reads of the records in one pass, at most (see STALE_READ_S).
_READS = 3
#: After a store error, the scheduler retries after this, doubling up to MAX_SLEEP_S.
_RETRY_S = 0.5
# How often a sleeping scheduler looks at its stop condition.
_STOP_POLL_S = 0.1

_TICK_FORMAT = "%Y%m%dT%H%M%SZ"
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_EVERY = re.compile(r"every\s+((?:\d+\s*[dhms]\s*)+)", re.IGNORECASE)
_EVERY_PART = re.compile(r"(\d+)\s*([dhms])", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


# -- ticks -----------------------------------------------------------------


class Timing(Protocol):
    """The ticks of a schedule: UTC instants, whole seconds."""

    def next_after(self, when: datetime) -> datetime | None:
        """The first tick strictly after ``when`` (None: it never fires again)."""
        ...

    def latest(self, now: datetime) -> datetime | None:
        """The latest tick at or before ``now`` (None: none in reach)."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalTiming:
    """Every ``seconds`` seconds, counted from the Unix epoch in UTC.

    Anchored on the epoch, so every scheduler agrees on the ticks with no
    shared start time: ``every 1h`` fires on the hour, ``every 1d`` at UTC
    midnight. Elapsed time, so daylight saving time does not move it.
    """

    seconds: int

    def latest(self, now: datetime) -> datetime | None:
        period = timedelta(seconds=self.seconds)
        return _EPOCH + ((now - _EPOCH) // period) * period

    def next_after(self, when: datetime) -> datetime | None:
        period = timedelta(seconds=self.seconds)
        return _EPOCH + ((when - _EPOCH) // period + 1) * period


@dataclass(frozen=True, slots=True)
class CronTiming:
    """A five-field cron expression in a time zone, iterated by ``cronsim``.

    Daylight saving time, as Debian's cron (and cronsim) treats it: an
    expression with a fixed minute and hour fires at the first existing
    minute after a wall-clock time the spring change skips (``30 2 * * *``
    fires at 03:00 that day), and once, at the first occurrence, in the hour
    the autumn change repeats. One with a wildcard or step hour runs on
    elapsed time there: a skipped hour has no ticks, a repeated hour has
    them twice (at each real instant whose wall-clock time matches).
    """

    expression: str
    zone: tzinfo

    def next_after(self, when: datetime) -> datetime | None:
        # cronsim ends its iteration when nothing matches within 50 years.
        for tick in CronSim(self.expression, when.astimezone(self.zone)):
            utc = tick.astimezone(UTC)
            # cronsim drops the fold of a start in a repeated hour and can
            # answer a time before it; the tick after ``when`` follows.
            if utc > when:
                return utc
        return None

    def latest(self, now: datetime) -> datetime | None:
        """The latest tick at or before ``now``, consistent with :meth:`next_after`.

        cronsim's reverse iteration gives a hint; the answer is the last
        forward tick from just before the hint that is not after ``now``, so
        both directions agree even around DST changes. If the hint is not
        a forward tick, earlier and earlier starts are tried.
        """
        base = now.replace(microsecond=0)
        hint: datetime | None
        try:
            # A start with microseconds is taken as a tick itself (cronsim
            # skips its first step back), so a tick at ``base`` counts.
            back = CronSim(self.expression, base.astimezone(self.zone).replace(microsecond=1), True)
            hint = next(back).astimezone(UTC)
        except StopIteration:
            hint = None
        spans = [timedelta(0), timedelta(hours=2), timedelta(days=2), timedelta(days=62)]
        spans += [timedelta(days=400 * 2**k) for k in range(6)]
        start = min(hint, base) if hint is not None else base
        for span in spans:
            found = self._last_until(start - span - _SECOND, now)
            if found is not None:
                return found
        return None

    def _last_until(self, start: datetime, now: datetime) -> datetime | None:
        tick = self.next_after(start)
        if tick is None or tick > now:
            return None
        while True:
            following = self.next_after(tick)
            if following is None or following > now:
                return tick
            tick = following


def timing(spec: str, tz: str = "UTC") -> Timing:
    """The ticks of ``spec`` (cron, ``@daily``-style alias, or ``every 30s``) in zone ``tz``.

    Raises :class:`~qw.errors.InvalidInput` for a spec or zone it cannot
    use, and for a zone other than UTC given with an interval.
    """
    text = _normalized(spec)
    zone = zone_of(tz)
    interval = _EVERY.fullmatch(text)
    if interval is not None:
        if zone is not UTC:
            raise InvalidInput(
                f"an interval schedule ({text!r}) runs on elapsed time, so it takes no time "
                f"zone (not {tz!r}); use a cron expression for wall-clock times"
            )
        return IntervalTiming(_interval_seconds(interval.group(1), text))
    if text.lower().startswith("every"):
        raise InvalidInput(f"not an interval: {text!r} (use e.g. 'every 30s', 'every 1h30m')")
    expression = _ALIASES.get(text.lower(), text)
    if len(expression.split()) != 5:
        raise InvalidInput(
            f"a cron expression has five fields (minute hour day month weekday), not {text!r}"
        )
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as exc:
        raise InvalidInput(f"invalid cron expression {text!r}: {exc}") from None
    return CronTiming(expression, zone)


def every_spec(every: timedelta | float | str) -> str:
    """The spec of an interval given as a timedelta, seconds or text: ``every 1h30m``."""
    if isinstance(every, str):
        text = _normalized(every)
        found = _EVERY.fullmatch(text) or _EVERY.fullmatch(f"every {text}")
        if found is None:
            raise InvalidInput(f"not an interval: {every!r} (use e.g. '30s', '1h30m')")
        seconds = _interval_seconds(found.group(1), text)
    else:
        if isinstance(every, bool) or not isinstance(every, (timedelta, int, float)):
            raise InvalidInput(f"every takes a timedelta or seconds, not {every!r}")
        total = every.total_seconds() if isinstance(every, timedelta) else float(every)
        if not (1 <= total <= MAX_DELAY_S and total == int(total)):
            raise InvalidInput(
                f"an interval is a whole number of seconds in [1, {MAX_DELAY_S}], not {every!r}"
            )
        seconds = int(total)
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "every " + "".join(parts)


def _interval_seconds(parts: str, text: str) -> int:
    seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _EVERY_PART.findall(parts))
    if not 1 <= seconds <= MAX_DELAY_S:
        raise InvalidInput(f"an interval is 1 s to {MAX_DELAY_S} s, not {text!r}")
    return seconds


def _normalized(spec: object) -> str:
    if not isinstance(spec, str):
        raise InvalidInput(f"a schedule spec is a string, not {spec!r}")
    text = " ".join(spec.split())
    if not 1 <= len(text) <= MAX_SCHEDULE_SPEC_CHARS:
        raise InvalidInput(f"a schedule spec is 1 to {MAX_SCHEDULE_SPEC_CHARS} characters")
    return text


def zone_of(tz: object) -> tzinfo:
    """The time zone named ``tz`` (an IANA name; ``UTC`` needs no tz database)."""
    if not isinstance(tz, str) or not tz:
        raise InvalidInput(f"a time zone is an IANA name such as 'Europe/Paris', not {tz!r}")
    if tz == "UTC":
        # Without the tz database too (a bare container): UTC needs none.
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {tz!r} (an IANA name such as 'Europe/Paris'; "
            "without a system tz database, install the tzdata package)"
        ) from None


def job_id(name: str, tick: datetime) -> str:
    """The id of schedule ``name``'s job for ``tick``: ``NAME@20260329T010000Z``."""
    return f"{name}@{tick.astimezone(UTC):{_TICK_FORMAT}}"


def tick_of(job: str) -> datetime | None:
    """The tick a periodic job's id names (None: not a periodic job's id)."""
    _, sep, stamp = job.rpartition("@")
    if not sep:
        return None
    try:
        return datetime.strptime(stamp, _TICK_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


# -- definitions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Periodic:
    """One periodic schedule of an app: which task, with which arguments, when.

    Made by :meth:`qw.App.periodic`. ``spec`` is normalized (whitespace
    collapsed; intervals as ``every 1h30m``). ``missed`` is what happens to
    ticks missed while no scheduler ran: ``"latest"`` enqueues the latest of
    them once, as soon as a scheduler runs again; ``"skip"`` enqueues a tick
    only when a scheduler sees it on time (within a minute, or half the
    period if shorter), so a missed tick never runs late.
    """

    name: str
    spec: str
    tz: str
    task: Task[Any, Any]
    args: tuple[JSONValue, ...] = ()
    kwargs: Mapping[str, JSONValue] = field(default_factory=dict)
    queue: str | None = None
    missed: Missed = "latest"
    timing: Timing = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_schedule_name(self.name)
        spec = _normalized(self.spec)
        interval = _EVERY.fullmatch(spec)
        if interval is not None:
            spec = every_spec(interval.group(1))
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "timing", timing(spec, self.tz))
        if self.queue is not None:
            validate_queue(self.queue)
        if self.missed not in MISSED_POLICIES:
            raise InvalidInput(f"missed must be one of {MISSED_POLICIES}, not {self.missed!r}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        # The arguments are checked now, not at the first tick hours later.
        validate_new_jobs([self.job(_EPOCH)], limit=DEFAULT_MAX_PAYLOAD_BYTES)

    @property
    def job_queue(self) -> str:
        """The queue its jobs go to."""
        return self.queue or self.task.queue

    def record(self) -> Schedule:
        """The schedule as the store records it."""
        return Schedule(
            name=self.name, spec=self.spec, tz=self.tz, queue=self.job_queue, task=self.task.name
        )

    def job(self, tick: datetime) -> NewJob:
        """The job for ``tick``: the task called with the schedule's arguments, id ``NAME@TICK``."""
        call = self.task.options(queue=self.queue, job_id=job_id(self.name, tick))
        return call.job(*self.args, **self.kwargs)

    def grace(self, tick: datetime) -> float:
        """How late (seconds) a tick may be enqueued under ``missed="skip"``."""
        following = self.timing.next_after(tick)
        period = SKIP_GRACE_S * 2 if following is None else (following - tick).total_seconds()
        return min(SKIP_GRACE_S, period / 2)


# -- clocks ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeClock:
    """Store time mapped onto a shifted, faster time: for testing schedules only.

    At store time ``anchor`` the fake time is ``start``; it then runs
    ``speedup`` times as fast. Every scheduler given the same values sees
    the same fake time, since each reads the store's clock. Workers take it
    from ``$QW_FAKE_CLOCK`` = ``ANCHOR,START,SPEEDUP`` (ISO 8601 times).
    """

    anchor: datetime
    start: datetime
    speedup: float

    def at(self, store_now: datetime) -> datetime:
        """The fake time at store time ``store_now``."""
        return self.start + (store_now - self.anchor) * self.speedup

    @classmethod
    def parse(cls, text: str) -> FakeClock:
        """Read ``ANCHOR,START,SPEEDUP``."""
        try:
            anchor, start, speedup = (part.strip() for part in text.split(","))
            clock = cls(
                datetime.fromisoformat(anchor), datetime.fromisoformat(start), float(speedup)
            )
        except ValueError:
            raise InvalidInput(f"a fake clock is ANCHOR,START,SPEEDUP, not {text!r}") from None
        if clock.anchor.utcoffset() is None or clock.start.utcoffset() is None:
            raise InvalidInput(f"a fake clock's times carry their UTC offset: {text!r}")
        if not 0 < clock.speedup <= 1e6:
            raise InvalidInput(f"a fake clock's speedup is in (0, 1e6], not {speedup!r}")
        return clock


# -- the scheduler ---------------------------------------------------------


class Scheduler:
    """Enqueues the jobs of ``schedules`` as their ticks come, through ``client``.

    Any number of schedulers may run the same schedules on one store: each
    tick is enqueued once (see the module's docstring). ``clock`` reads the
    time ticks are computed on (default: the store's clock); ``speedup``
    says how much faster than real time it runs, for sleeping.
    """

    def __init__(
        self,
        client: Client,
        schedules: Sequence[Periodic],
        *,
        clock: Callable[[], datetime] | None = None,
        speedup: float = 1.0,
        max_sleep: float = MAX_SLEEP_S,
    ) -> None:
        names = [p.name for p in schedules]
        if len(set(names)) != len(names):
            raise InvalidInput(f"schedule names repeat: {sorted(names)}")
        self._client = client
        self._schedules = list(schedules)
        self._clock = clock or client.now
        self._speedup = speedup
        self._max_sleep = max_sleep
        self._saved = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: How many jobs this scheduler enqueued (ticks it won), and passes it made.
        self.enqueued = 0
        self.passes = 0

    @property
    def schedules(self) -> list[Periodic]:
        return list(self._schedules)

    def save(self) -> None:
        """Record every schedule's definition in the store (stored ticks are kept)."""
        for periodic in self._schedules:
            self._client.save_schedule(periodic.record())
        self._saved = True

    def run_once(self) -> float:
        """One pass: enqueue every tick that is due; return real seconds until the next one."""
        if not self._saved:
            self.save()
        for attempt in range(_READS):
            read_at = time.monotonic()
            stored = {s.name: s for s in self._client.schedules()}
            now = self._clock()
            # A store slower than STALE_READ_S per call would never get past
            # the check: the last read is acted on however old it is.
            if self._pass(stored, now, read_at if attempt < _READS - 1 else None):
                break
        if not self.passes:
            names = ", ".join(p.name for p in self._schedules)
            log.info("scheduler: first pass at %s, for %s", _shown(now), names)
        self.passes += 1
        return self._sleep_for(self._clock())

    def _pass(self, stored: dict[str, Schedule], now: datetime, read_at: float | None) -> bool:
        """Act on one read of the records; False if it went stale and must be read again.

        ``read_at`` is when the read began (monotonic); None: never stale.
        """
        client = self._client
        for periodic in self._schedules:
            record = stored.get(periodic.name)
            if record is None:
                # Removed by an operator: not run until a worker saves it again.
                continue
            tick = periodic.timing.latest(now)
            last = record.last_tick
            if tick is None or (last is not None and last >= tick):
                continue
            name = periodic.name
            if last is None:
                # A new schedule fires from its next tick on, not for one already past.
                if client.advance_schedule(name, tick):
                    log.info("schedule %s: starts after %s", name, _shown(tick))
                continue
            late = (now - tick).total_seconds()
            if periodic.missed == "skip" and late > periodic.grace(tick):
                if client.advance_schedule(name, tick):
                    log.info("schedule %s: skipped tick %s (%.0f s late)", name, _shown(tick), late)
                continue
            if read_at is not None and time.monotonic() - read_at > STALE_READ_S:
                return False
            job = periodic.job(tick)
            try:
                created = client.enqueue([job])[0].created
            except DuplicateJob:
                created = False
            # Also after a duplicate: the scheduler that inserted it may have
            # died before moving the tick.
            client.advance_schedule(name, tick)
            if created:
                self.enqueued += 1
                log.info("schedule %s: enqueued %s", name, job.id)
        return True

    def _sleep_for(self, now: datetime) -> float:
        """Real seconds from ``now`` to the next tick of any schedule, bounded."""
        upcoming = [t for p in self._schedules if (t := p.timing.next_after(now)) is not None]
        if not upcoming:
            return self._max_sleep
        ahead = (min(upcoming) - now).total_seconds() / self._speedup
        return min(max(ahead, MIN_SLEEP_S), self._max_sleep)

    # -- a thread of its own -------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Pass after pass until :meth:`stop` or ``should_stop()``; store errors are retried."""
        retry = _RETRY_S
        while not (self._stop.is_set() or should_stop()):
            try:
                delay = self.run_once()
                retry = _RETRY_S
            except Exception as exc:
                # A store error is expected (store down); anything else is a
                # bug, logged in full. Either way the scheduler goes on.
                if isinstance(exc, QwError):
                    log.warning("scheduler pass failed (%r); retrying in %.1f s", exc, retry)
                else:
                    log.exception("scheduler pass failed unexpectedly; retrying in %.1f s", retry)
                delay, retry = retry, min(retry * 2, self._max_sleep)
            until = time.monotonic() + delay
            while not should_stop():
                left = until - time.monotonic()
                if left <= 0 or self._stop.wait(min(left, _STOP_POLL_S)):
                    break

    def start(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(
            target=self.run, args=(should_stop,), name="qw-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pass under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _shown(tick: datetime) -> str:
    return f"{tick.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
