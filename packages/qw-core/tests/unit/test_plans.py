"""qw.plans: one operation, driven blocking and awaited, with errors thrown back into it."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from qw.plans import adrive, drive


class Busy(Exception):
    pass


def _plan(log: list[str]) -> Generator[str, Any, int]:
    first = yield "a"
    try:
        yield "busy"
    except Busy:
        log.append("handled")
    second = yield "b"
    return int(first) + int(second)


def _serve(request: str) -> str:
    if request == "busy":
        raise Busy
    return {"a": "1", "b": "2"}[request]


async def _aserve(request: str) -> str:
    await asyncio.sleep(0)
    return _serve(request)


def test_both_drivers_answer_alike_and_throw_errors_into_the_plan() -> None:
    sync_log: list[str] = []
    async_log: list[str] = []
    assert drive(_plan(sync_log), _serve) == 3
    assert asyncio.run(adrive(_plan(async_log), _aserve)) == 3
    assert sync_log == async_log == ["handled"]


def test_an_error_the_plan_does_not_handle_comes_out_unchanged() -> None:
    def plan() -> Generator[str, Any, None]:
        yield "busy"

    with pytest.raises(Busy):
        drive(plan(), _serve)
    with pytest.raises(Busy):
        asyncio.run(adrive(plan(), _aserve))
