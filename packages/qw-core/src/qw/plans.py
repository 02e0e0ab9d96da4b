"""Drivers for operations a backend writes once, as generators, and serves blocking or awaited.

A *plan* is a generator: it yields each request it needs answered (a
statement, a script call), is sent each answer, and returns the call's
answer. A sync backend drives it with :func:`drive`, its async twin with
:func:`adrive`, so the deciding, retries and parsing exist once. An error
raised while serving a request is thrown into the plan at that request: the
plan handles what it expects (a dedupe race) and lets the rest through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["adrive", "drive"]

R = TypeVar("R")
T = TypeVar("T")


def drive(plan: Generator[R, Any, T], serve: Callable[[R], Any]) -> T:
    """Run ``plan`` to its answer, serving each request by ``serve``."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            request = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        error = None
        try:
            reply = serve(request)
        except Exception as exc:
            error, reply = exc, None


async def adrive(plan: Generator[R, Any, T], serve: Callable[[R], Awaitable[Any]]) -> T:
    """:func:`drive`, each request's answer awaited."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            request = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        error = None
        try:
            reply = await serve(request)
        except Exception as exc:
            error, reply = exc, None
