"""Tasks the runtime tests run, in-process and in worker subprocesses.

Names are explicit so that every process agrees on them. Tasks that the
tests count write one line per event to files under a directory they are
given, because a subprocess worker cannot share memory with the test.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import qw
from qw.worker import Backoff


def note(directory: str, name: str, line: str) -> None:
    """Append ``line`` to ``directory/name`` in one write (atomic for short lines)."""
    fd = os.open(Path(directory) / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Unprintable(Exception):
    """An exception whose message cannot be built: ``str()`` of it raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class Hostile(dict):  # type: ignore[type-arg]
    """A result that breaks whoever looks inside it (not a refusal: a crash)."""

    def items(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("hostile result")


def register(app: qw.App) -> None:
    """Register the test tasks on ``app``."""

    @app.task(name="rt.add", queue="rt")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="rt.aadd", queue="rt")
    async def aadd(a: int, b: int) -> int:
        await asyncio.sleep(0.001)
        return a + b

    @app.task(name="rt.flaky", queue="rt", max_attempts=3, backoff=Backoff(0.2, 2.0, 5.0))
    def flaky(directory: str) -> None:
        note(directory, "attempts", f"{qw.current_job().attempt} {time.monotonic()}")
        raise ValueError("always fails")

    @app.task(name="rt.fatal", queue="rt", max_attempts=5, no_retry=(KeyError,))
    def fatal() -> None:
        raise KeyError("not worth retrying")

    @app.task(name="rt.not_json", queue="rt")
    def not_json() -> object:
        return {1, 2}

    @app.task(name="rt.sync_slow", queue="rt", timeout=0.3, max_attempts=2, backoff=0.05)
    def sync_slow(directory: str) -> str:
        note(directory, "started", qw.current_job().id)
        time.sleep(1.0)
        note(directory, "returned", qw.current_job().id)
        return "late"

    @app.task(name="rt.async_slow", queue="rt", timeout=0.3, max_attempts=2, backoff=0.05)
    async def async_slow() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.task(name="rt.async_wait", queue="rt")
    async def async_wait() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.task(name="rt.sync_cooperative", queue="rt")
    def sync_cooperative() -> str:
        job = qw.current_job()
        for _ in range(300):
            job.raise_if_cancelled()
            time.sleep(0.05)
        return "never cancelled"

    @app.task(name="rt.sync_oblivious", queue="rt")
    def sync_oblivious(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    @app.task(name="rt.record", queue="rt")
    def record(directory: str, seconds: float) -> str:
        job = qw.current_job()
        note(directory, "started", f"{job.id} {job.attempt} {os.getpid()}")
        time.sleep(seconds)
        note(directory, "finished", f"{job.id} {job.attempt} {os.getpid()}")
        return job.id

    @app.task(name="rt.slow_first", queue="rt", max_attempts=3)
    def slow_first(directory: str) -> str:
        # The first attempt hangs (its worker gets killed); a retry is quick.
        job = qw.current_job()
        note(directory, "started", f"{job.id} {job.attempt} {os.getpid()}")
        if job.attempt == 1:
            time.sleep(120)
        note(directory, "finished", f"{job.id} {job.attempt} {os.getpid()}")
        return "ok"

    @app.task(name="rt.count", queue="rt")
    def count(directory: str, n: int) -> int:
        job = qw.current_job()
        note(directory, "runs", f"{job.id} {job.attempt}")
        return n

    @app.task(name="rt.surrogate", queue="rt", max_attempts=3)
    def surrogate(directory: str) -> str:
        job = qw.current_job()
        note(directory, "runs", f"{job.id} {job.attempt}")
        return "x\ud800"

    @app.task(name="rt.asurrogate", queue="rt", max_attempts=3)
    async def asurrogate() -> str:
        return "x\ud800"

    @app.task(name="rt.unprintable", queue="rt", max_attempts=1)
    def unprintable(directory: str) -> None:
        job = qw.current_job()
        note(directory, "runs", f"{job.id} {job.attempt}")
        raise Unprintable

    @app.task(name="rt.aunprintable", queue="rt", max_attempts=1)
    async def aunprintable() -> None:
        raise Unprintable

    @app.task(name="rt.hostile", queue="rt", max_attempts=3)
    def hostile() -> object:
        return Hostile(a=1)

    @app.task(name="rt.greet", queue="rt", max_attempts=3)
    def greet(name: str = "nobody") -> str:
        return f"hello {name}"

    @app.task(name="rt.timed", queue="rt", max_attempts=5)
    def timed(directory: str, first: float, later: float) -> str:
        # Wall-clock stamps: runs in different processes are compared.
        job = qw.current_job()
        note(directory, "started", f"{job.id} {job.attempt} {os.getpid()} {time.time()}")
        time.sleep(first if job.attempt == 1 else later)
        note(directory, "finished", f"{job.id} {job.attempt} {os.getpid()} {time.time()}")
        return f"{os.getpid()}"

    # -- workflow steps ----------------------------------------------------

    @app.task(name="rt.wf.echo", queue="rt", max_attempts=100, backoff=0.01)
    def echo(directory: str, *inputs: object) -> str:
        """Record the start (wall clock, for other processes), check the inputs, return the id.

        A step passed its parents (in ``after`` order, all of them as refs)
        must get exactly their ids, which is what each parent returned.
        """
        job = qw.current_job()
        note(directory, "starts", f"{job.id} {job.attempt} {os.getpid()} {time.time()}")
        flat = [i for x in inputs for i in (x if isinstance(x, list) else [x])]
        if flat != list(job.parents):
            note(directory, "mismatch", f"{job.id} {flat} {list(job.parents)}")
        time.sleep(0.01)
        return job.id

    @app.task(name="rt.wf.fetch", queue="rt")
    def fetch_user(user_id: int) -> dict[str, object]:
        return {"id": user_id, "name": f"user {user_id}"}

    @app.task(name="rt.wf.score", queue="rt")
    def score(user: dict[str, int], bonus: int = 0) -> int:
        return user["id"] * 2 + bonus

    @app.task(name="rt.wf.ascore", queue="rt")
    async def ascore(user: dict[str, int]) -> int:
        await asyncio.sleep(0.001)
        return user["id"] * 3

    @app.task(name="rt.wf.welcome", queue="rt")
    def welcome(directory: str, user: dict[str, object]) -> None:
        note(directory, "welcomed", str(user["name"]))

    @app.task(name="rt.wf.report", queue="rt")
    def report(scores: list[int]) -> str:
        return f"{len(scores)} scores, total {sum(scores)}"

    @app.task(name="rt.wf.boom", queue="rt", no_retry=(KeyError,))
    def boom() -> None:
        raise KeyError("boom")

    @app.task(name="rt.wf.survey", queue="rt")
    def survey(value: object) -> dict[str, object]:
        job = qw.current_job()
        return {"value": value, "failed": list(job.failed_parents)}

    @app.task(name="rt.wf.once_flaky", queue="rt", max_attempts=3, backoff=0.05)
    def once_flaky(directory: str) -> str:
        job = qw.current_job()
        note(directory, "flaky", f"{job.id} {job.attempt}")
        if job.attempt == 1:
            raise ValueError("first attempt fails")
        return f"attempt {job.attempt}"

    @app.task(name="rt.wf.crawl", queue="rt", max_attempts=3, backoff=0.05)
    def crawl(directory: str, pages: int, fail_first: bool = False) -> int:
        job = qw.current_job()
        more = job.extend()
        found = more.map(score, [{"id": i} for i in range(pages)])
        more.add(report, found)
        handle = more.enqueue()
        note(directory, "crawl", f"{job.attempt} {handle.created}")
        if fail_first and job.attempt == 1:
            raise ValueError("crashed after adding its steps")
        return pages


#: The app a subprocess worker loads (``runtime_app:app``); URL and namespace
#: come from the command line.
app = qw.App()
register(app)
