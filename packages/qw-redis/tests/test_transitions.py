"""The scripts apply transitions that qw.transitions decided; they decide none.

The contract suite checks the behaviour; this checks the Redis side of the
split: the Lua spells no status, event or reason of its own, the statuses
it needs are generated from :class:`~qw.model.JobStatus`, and the
optimistic enqueue plans again when the live dedupe keys are not what it
planned with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from importlib.resources import files
from typing import Any

import pytest

import qw
from qw import transitions
from qw.errors import DuplicateJob, LeaseLost
from qw.model import JobStatus, NewJob
from qw_redis import RedisBackend
from qw_redis.keys import COMMON, lua_prelude
from qw_testkit.base import new_namespace

from .servers import drop_namespaces


def _lua_sources() -> dict[str, str]:
    folder = files("qw_redis").joinpath("lua")
    return {
        p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".lua")
    }


def test_the_prelude_spells_every_status_from_the_model() -> None:
    prelude = lua_prelude("PUBLISH")
    for status in JobStatus:
        assert f"{status.name} = '{status.value}'" in prelude
    terminal = re.search(r"local TERMINAL = \{(.*)\}", prelude)
    assert terminal is not None
    assert set(re.findall(r"(\w+) = true", terminal.group(1))) == {
        s.value for s in JobStatus if s.is_terminal
    }
    assert {n[3:] for n in COMMON if n.startswith("st_")} == {s.value for s in JobStatus}


def test_no_script_spells_a_status_an_event_or_a_reason() -> None:
    words = [s.value for s in JobStatus]
    words += [*transitions.EVENT_TYPES, transitions.REASON_CANCELLED]
    words += [transitions.REASON_LEASE_EXPIRED, transitions.LEASE_EXPIRED_ERROR]
    for name, text in _lua_sources().items():
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        for word in words:
            assert f"'{word}'" not in code, (name, word)
            assert f'"{word}"' not in code, (name, word)
        # No attempt rule either: plan_finish and plan_reclaim decide retries.
        assert not re.search(r"[<>]=?\s*tonumber\(get\('max'", code), name


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    url = str(request.getfixturevalue("redis_url" if request.param == "single" else "cluster_url"))
    namespace = new_namespace()
    backend = RedisBackend.from_url(url, namespace=namespace)
    try:
        yield backend
    finally:
        backend.close()
        if request.param == "single":
            drop_namespaces(url, {namespace})


def _count_scripts(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    run = backend._run

    def counted(name: str, *args: Any) -> Any:
        calls.append(name)
        return run(name, *args)

    monkeypatch.setattr(backend, "_run", counted)
    return calls


def test_enqueue_is_one_script_unless_a_live_job_holds_a_key(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    calls = _count_scripts(backend, monkeypatch)
    client.enqueue([NewJob("q", 1), NewJob("q", 2)])
    held = client.enqueue_one("q", 3, dedupe_key="k")
    assert calls == ["enqueue", "enqueue"]
    calls.clear()
    answers = client.enqueue(
        [
            NewJob("q", 4, dedupe_key="k"),
            NewJob("r", 5, dedupe_key="k2"),
            NewJob("q", 6, dedupe_key="k"),
        ]
    )
    # The first plan assumed no live holder; the script found one and said so.
    assert calls == ["enqueue", "enqueue"]
    assert [(a.id, a.created) for a in answers] == [
        (held.id, False),
        (answers[1].id, True),
        (held.id, False),
    ]
    assert client.get(answers[1].id) is not None
    counts = client.counts()
    assert (counts["q"][JobStatus.QUEUED], counts["r"][JobStatus.QUEUED]) == (3, 1)


def test_enqueue_plans_again_when_a_holder_finished_meanwhile(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = qw.Client(backend)
    held = client.enqueue_one("q", 1, dedupe_key="k")
    claim = client.claim(["q"], worker="w")[0]
    calls: list[str] = []
    run = backend._run

    def finishing_after_the_first_plan(name: str, *args: Any) -> Any:
        calls.append(name)
        reply = run(name, *args)
        if name == "enqueue" and calls.count("enqueue") == 1:
            client.complete(claim.lease)  # the key is free again before the retry
        return reply

    monkeypatch.setattr(backend, "_run", finishing_after_the_first_plan)
    new = client.enqueue_one("q", 2, dedupe_key="k")
    # Planned with no holder (found k held), then with k held (found it free).
    assert calls.count("enqueue") == 3
    assert new.created
    assert new.id != held.id
    assert client.get(new.id) is not None


def test_a_duplicate_id_is_refused_even_when_dedupe_answers_it(backend: RedisBackend) -> None:
    client = qw.Client(backend)
    held = client.enqueue_one("q", 1, dedupe_key="k")
    with pytest.raises(DuplicateJob):
        client.enqueue([NewJob("q", 2, id=held.id, dedupe_key="k")])


def test_renew_is_fenced_by_the_attempt_too(backend: RedisBackend) -> None:
    client = qw.Client(backend)
    client.enqueue_one("q", 1, max_attempts=3)
    lease = client.claim(["q"], worker="w")[0].lease
    with pytest.raises(LeaseLost):
        client.renew(replace(lease, attempt=2))
    assert client.renew(lease).attempt == 1
