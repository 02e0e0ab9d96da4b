"""The server clock: measured, followed monotonically, never the client's wall clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from qw_mongodb.clock import ServerClock, as_utc, to_millis

SERVER = datetime(2001, 1, 1, tzinfo=UTC)  # far from this machine's clock on purpose


def test_now_follows_the_server_not_the_client() -> None:
    clock = ServerClock(lambda: SERVER, samples=1)
    first = clock.now()
    assert abs(first - SERVER) < timedelta(seconds=1)
    time.sleep(0.05)
    later = clock.now()
    assert timedelta(milliseconds=40) <= later - first < timedelta(seconds=1)
    assert later.tzinfo is UTC
    assert later.microsecond % 1000 == 0


def test_the_shortest_round_trip_sample_wins_and_time_never_goes_back() -> None:
    calls = []

    def stamp() -> datetime:
        calls.append(1)
        if len(calls) == 2:
            time.sleep(0.05)  # a slow sample: must not be the one kept
            return SERVER + timedelta(hours=1)
        return SERVER

    clock = ServerClock(stamp, samples=3, refresh_s=0.0)
    clock.measure()
    assert clock.uncertainty_s < 0.025
    a = clock.now()  # refresh_s=0: measures again, and must not go backwards
    b = clock.now()
    assert a < SERVER + timedelta(minutes=1)
    assert b >= a


def test_naive_bson_dates_are_utc() -> None:
    naive = datetime(2020, 5, 6, 7, 8, 9, 123456)
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    assert to_millis(naive).microsecond == 123000
