"""The Redis structures agree with each other after every kind of transition.

The contract suite checks ``counts()`` against ``list_jobs()``; this checks
the layer below: the counts hash, the status indexes, the ready/scheduled/
running sets and the dedupe hash, against the status column itself.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

import qw
from qw.contract import Abort, Complete, Fail, Outcome, Release
from qw.model import EventSpec, JobStatus, NewJob, ParentFailure
from qw_redis.keys import Keyspace, lua_prelude, packed_queue
from qw_redis.scripts import NAMES, source
from qw_testkit.base import new_namespace

from .servers import drop_namespaces


def _raw(url: str) -> Any:
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url(
            url.replace("redis+cluster://", "redis://"), decode_responses=True
        )
    return redis.Redis.from_url(url, decode_responses=True)


TERMINAL = {s.value for s in JobStatus if s.is_terminal}
LIVE = {s.value for s in JobStatus if s.is_live}


def check_invariants(r: Any, keys: Keyspace, queues: list[str]) -> None:
    status = r.hgetall(keys.column("status"))
    queue = {i: packed_queue(v) for i, v in r.hgetall(keys.column("job")).items()}
    flow = r.hgetall(keys.column("wf"))
    assert set(status) == set(queue) == set(r.zrange(keys.key("ids"), 0, -1))
    recount = Counter(f"{queue[i]}:{s}" for i, s in status.items())
    assert {k: int(v) for k, v in r.hgetall(keys.key("counts")).items()} == dict(recount)
    for s in JobStatus:
        indexed = set(r.zrange(keys.key(f"st_{s.value}"), 0, -1))
        assert indexed == {i for i, v in status.items() if v == s.value}, s
    placed: set[str] = set()
    parked = parked_jobs(r, keys)
    for q in queues:
        ready_key, sched_key = keys.queue_keys([q])
        ready = {member_id(m) for m in r.zrange(ready_key, 0, -1)}
        sched = set(r.zrange(sched_key, 0, -1))
        here = {i for i, (pq, _k) in parked.items() if pq == q}
        assert not ready & sched
        assert not (ready | sched) & here
        assert all(queue[i] == q for i in ready | sched)
        placed |= ready | sched | here
    # Only queued jobs are where claim looks (or parked): never a waiting step.
    assert placed == {i for i, v in status.items() if v == "queued"}
    assert set(r.zrange(keys.key("running"), 0, -1)) == {
        i for i, v in status.items() if v == "running"
    }
    # Steps are purged with their workflow, so only plain jobs are in 'done'.
    assert set(r.zrange(keys.key("done"), 0, -1)) == {
        i for i, v in status.items() if v in TERMINAL and i not in flow
    }
    for dkey, holder in r.hgetall(keys.key("dedupe")).items():
        assert status.get(holder) in LIVE, dkey
    check_workflows(r, keys, status, queue, flow)
    check_flow_control(r, keys, status, queue, parked)


def member_id(member: str) -> str:
    """The job id of a ready-set member (common.lua's ready_member_of)."""
    return member[33:] if member.startswith(":") else member[16:]


def parked_jobs(r: Any, keys: Keyspace) -> dict[str, tuple[str, str]]:
    """Parked job id -> (queue, key), from K.parked's members."""
    found: dict[str, tuple[str, str]] = {}
    for m in r.zrange(keys.key("parked"), 0, -1):
        q, k, _own, rest = m.split("\n", 3)
        found[member_id(rest[10:])] = (q, k)
    return found


def check_flow_control(
    r: Any,
    keys: Keyspace,
    status: dict[str, str],
    queue: dict[str, str],
    parked: dict[str, tuple[str, str]],
) -> None:
    """The key indexes follow the statuses; parked jobs are queued, of their key, marked."""
    lim = r.hgetall(keys.column("lim"))
    assert set(lim) <= set(status)
    key_of = {i: v.split(" ", 3)[3] for i, v in lim.items()}

    def members(name: str) -> set[str]:
        return set(r.zrange(keys.key(name), 0, -1))

    assert members("kjobs") == {f"{k}\n{i}" for i, k in key_of.items()}
    for name, wanted in (("lq", "queued"), ("lrun", "running")):
        assert members(name) == {f"{k}\n{i}" for i, k in key_of.items() if status[i] == wanted}
    for i, (q, k) in parked.items():
        assert (status[i], queue[i], key_of[i]) == ("queued", q, k), i
    pkq = members("pkq")
    assert {f"{k}\n{q}" for q, k in parked.values()} <= pkq
    # Only keys with parked jobs are logged as freed; timed marks agree with their times.
    assert set(r.zrange(keys.key("kfree"), 0, -1)) <= {m.split("\n")[0] for m in pkq}
    marks = {}
    for m in members("pwake"):
        q, t, k = m.split("\n")
        marks[f"{q}\n{k}"] = t
    assert marks == r.hgetall(keys.key("pwt"))


def check_workflows(
    r: Any, keys: Keyspace, status: dict[str, str], queue: dict[str, str], flow: dict[str, str]
) -> None:
    """The step columns and the workflow records agree with the steps' statuses."""
    col = {c: r.hgetall(keys.column(c)) for c in ("parents", "children", "opf", "fparents")}
    pending = r.hgetall(keys.column("pending"))
    assert set(flow) <= set(status)
    for c, values in [*col.items(), ("pending", pending)]:
        assert set(values) <= set(flow), c
    # Only the policy that is not the default is stored.
    assert set(col["opf"].values()) <= {ParentFailure.RUN.value}
    members = set(r.zrange(keys.key("wsteps"), 0, -1))
    assert members == {f"{w} {i}" for i, w in flow.items()}
    recount = Counter(f"{w}:{status[i]}" for i, w in flow.items())
    assert {k: int(v) for k, v in r.hgetall(keys.key("wcounts")).items()} == dict(recount)
    parents = {i: col["parents"].get(i, "").split() for i in flow}
    children = {i: col["children"].get(i, "").split() for i in flow}
    for i, ps in parents.items():
        for p in ps:
            assert flow[p] == flow[i], (p, i)
            assert children[p].count(i) == 1, (p, i)
        ended = [p for p in ps if status[p] in TERMINAL]
        failed = col["fparents"].get(i, "").split()
        if status[i] == "waiting":
            assert int(pending.get(i, 0)) == len(ps) - len(ended) > 0, i
            assert sorted(failed) == sorted(p for p in ended if status[p] != "succeeded"), i
        else:
            assert i not in pending, i
            assert set(failed) <= {p for p in ps if status[p] in ("failed", "cancelled")}, i
    records = r.hgetall(keys.key("wrec"))
    assert set(records) == set(r.zrange(keys.key("wf_ids"), 0, -1))
    assert set(flow.values()) <= set(records)
    num = {k: int(v) for k, v in r.hgetall(keys.key("wnum")).items()}
    wqueues = r.hgetall(keys.key("wqueues"))
    assert set(wqueues) == set(records)
    done = dict(r.zrange(keys.key("wdone"), 0, -1, withscores=True))
    for w, rec in records.items():
        state, _cancel, _created, finished, _output = rec.split(" ")
        steps = [i for i, f in flow.items() if f == w]
        assert {queue[i] for i in steps} <= set(wqueues[w].split())
        live = sum(status[i] not in TERMINAL for i in steps)
        assert num.get(f"{w}:live", 0) == live, w
        for s in ("failed", "cancelled"):
            assert num.get(f"{w}:{s}", 0) == sum(status[i] == s for i in steps), (w, s)
        for st in ("running", "succeeded", "failed", "cancelled"):
            assert (w in r.zrange(keys.key(f"ws_{st}"), 0, -1)) is (state == st), (w, st)
        assert (state == "running") is (live > 0) is (finished == "-") is (w not in done), w


def test_structures_agree_after_a_mixed_workload(url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    queues = ["a", "b"]
    client = qw.open(url, namespace=namespace)
    r = _raw(url)
    try:
        answers = client.enqueue(
            [NewJob(q, i, dedupe_key=f"k{i}" if i < 5 else None) for i in range(40) for q in queues]
        )
        assert sum(a.created for a in answers) == 75
        client.enqueue([NewJob("a", "later", delay=0.3), NewJob("b", "much later", delay=600)])
        check_invariants(r, keys, queues)
        claims = client.claim(queues, worker="w", lease_s=0.2, limit=12)
        outcomes: list[Outcome] = [
            Complete(claims[0].lease, 1, EventSpec("done")),
            Fail(claims[1].lease, "x", retry_in=0),
            Fail(claims[2].lease, "x", retry_in=60),
            Fail(claims[3].lease, "x"),
            Abort(claims[4].lease, "stop", EventSpec("aborted")),
            Release(claims[5].lease),
        ]
        assert all(s is not None for s in client.finish(outcomes))
        # Repeats and stale tokens change nothing.
        assert client.finish(outcomes[:1]) == [JobStatus.SUCCEEDED]
        client.finish(outcomes[1:])
        check_invariants(r, keys, queues)
        client.cancel(claims[6].job.id)  # running: flagged only
        queued = client.list_jobs(status=JobStatus.QUEUED, limit=3)
        for job in queued:
            client.cancel(job.id)
        check_invariants(r, keys, queues)
        time.sleep(0.35)  # leases of claims[6:] expire; "later" falls due
        assert client.reclaim_expired() == 6
        check_invariants(r, keys, queues)
        while batch := client.claim(queues, worker="w", limit=50):
            client.finish([Complete(c.lease) for c in batch])
            check_invariants(r, keys, queues)
        assert client.purge(0).jobs > 0
        check_invariants(r, keys, queues)
        assert client.counts() == {"b": {s: int(s is JobStatus.QUEUED) for s in JobStatus}}
    finally:
        client.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_structures_agree_through_workflows(url: str) -> None:
    namespace = new_namespace()
    keys = Keyspace(namespace)
    queues = ["a", "b", "c", "s"]
    client = qw.open(url, namespace=namespace)
    other = qw.open(url, namespace=namespace)  # finishes with no claim of its own
    r = _raw(url)
    run = ParentFailure.RUN

    def step(w: str, name: str, queue: str, *parents: str, **options: Any) -> NewJob:
        return NewJob(
            queue, name, id=f"{w}.{name}", parents=tuple(f"{w}.{p}" for p in parents), **options
        )

    try:
        client.enqueue([NewJob("a", i) for i in range(5)])
        # A diamond over three queues; a fan-out whose middle fails; a chain cancelled.
        client.create_workflow(
            "d",
            [
                step("d", "top", "a"),
                step("d", "l", "b", "top"),
                step("d", "r", "c", "top", dedupe_key="dk"),
                step("d", "end", "a", "l", "r"),
            ],
            output="d.end",
        )
        client.create_workflow(
            "f",
            [
                step("f", "src", "a"),
                *(step("f", f"m{i}", "b", "src") for i in range(3)),
                step("f", "m3", "s", "src", max_attempts=1),
                step("f", "join", "c", *(f"m{i}" for i in range(4))),
                step("f", "after", "a", "join", on_parent_failure=run),
                step("f", "late", "b", "after", delay=600),
            ],
        )
        client.create_workflow(
            "c", [step("c", "1", "a"), step("c", "2", "b", "1"), step("c", "3", "c", "2")]
        )
        check_invariants(r, keys, queues)
        assert client.get_workflow("c").counts == {JobStatus.QUEUED: 1, JobStatus.WAITING: 2}
        running = {c.job.id: c for c in client.claim(["a"], worker="w", limit=10)}
        assert {"d.top", "f.src", "c.1"} <= set(running)
        # The diamond's top is finished by another object (its queues unknown there).
        assert other.finish([Complete(running["d.top"].lease, 1)]) == [JobStatus.SUCCEEDED]
        client.complete(running["f.src"].lease, 2)
        check_invariants(r, keys, queues)
        # A step adds steps to its own workflow, in a queue the workflow had not used.
        assert client.add_steps(running["c.1"].lease, "c", [step("c", "x", "x", "1")])
        queues.append("x")
        client.cancel("c.2")  # waiting: cancelled; c.3 is settled cancelled too
        check_invariants(r, keys, queues)
        claims = {c.job.id: c for c in client.claim(["b", "c"], worker="w", limit=10)}
        client.complete(claims["d.l"].lease)
        client.fail(claims["f.m0"].lease, "no")
        for i in (1, 2):
            client.complete(claims[f"f.m{i}"].lease)
        check_invariants(r, keys, queues)
        client.finish([Complete(claims["d.r"].lease)])
        client.complete(running["c.1"].lease)
        check_invariants(r, keys, queues)
        # Two leases expire: m3 has no attempt left (failed: the join is cancelled
        # and "after" queued), the added step has (queued again, in a cancelled workflow).
        short = client.claim(["s", "x"], worker="w", lease_s=0.1, limit=2)
        assert sorted(c.job.id for c in short) == ["c.x", "f.m3"]
        client.cancel_workflow("c")
        check_invariants(r, keys, queues)
        time.sleep(0.2)
        assert other.reclaim_expired() == 2
        check_invariants(r, keys, queues)
        assert [j.status if j else None for j in client.get_many(["c.x", "f.m3", "f.join"])] == [
            JobStatus.QUEUED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        ]
        while batch := client.claim(queues, worker="w", limit=50):
            client.finish([Complete(c.lease) for c in batch])
        check_invariants(r, keys, queues)
        states = {w.id: w.state.value for w in client.list_workflows()}
        assert states == {"c": "cancelled", "d": "succeeded", "f": "running"}
        assert client.get("f.join").status is JobStatus.CANCELLED
        assert client.cancel_workflow("f").state.value == "cancelled"
        check_invariants(r, keys, queues)
        plain = [c.lease for i, c in running.items() if "." not in i]
        assert len(plain) == 5
        client.finish([Complete(lease) for lease in plain])
        assert client.purge(0).jobs == 5 + 4 + 8 + 4
        check_invariants(r, keys, queues)
        assert client.list_workflows() == []
        assert client.counts() == {}
    finally:
        client.close()
        other.close()
        r.close()
        if not url.startswith("redis+cluster://"):
            drop_namespaces(url, {namespace})


def test_every_script_that_changes_a_status_flushes_its_index_and_counts() -> None:
    for name in NAMES:
        code = source(name, "PUBLISH")
        if "local function flush()" not in code:
            # Composed without flush (scripts.reached): it cannot reach set_status either.
            assert "set_status(" not in code, name
            continue
        after = code.split("local function flush()", 1)[1].split("\nend\n", 1)[1]
        if "set_status(" in after:
            assert re.search(r"\bflush\(\)", after), name


def test_a_script_reaching_a_key_it_does_not_declare_fails_before_touching_it(
    redis_url: str,
) -> None:
    # Scripts are sent only the keys their code reaches (scripts.key_names);
    # a name outside those must be a loud script error, never a nil key.
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keyspace(new_namespace())
    names = ("seq", "f:job")
    body = "redis.call('INCR', K.seq) return redis.call('HGET', F.job, 'x') or 'none'"
    script = r.register_script(lua_prelude("PUBLISH", keys=names) + body)
    try:
        assert script(keys=keys.script_keys(names), args=[0]) == "none"
        for reach in ("K.ids", "F.status", "ST.queued"):
            bad = r.register_script(lua_prelude("PUBLISH", keys=names) + f"return {reach}")
            with pytest.raises(redis.ResponseError, match="does not declare key"):
                bad(keys=keys.script_keys(names), args=[0])
    finally:
        r.delete(*keys.script_keys(names))
        r.close()
