"""The cluster phase (issue 16, item 7): one namespace on a 3-master Redis Cluster, sharded or not.

Run on its own: ``python -m bench.run cluster [--quick] [options]`` (through
nox: ``nox -s bench -- cluster``). It starts a Redis Cluster of its own
(:data:`MASTERS` masters, no replicas, no persistence: the qw-redis tests'
launcher, ``packages/qw-redis/tests/servers.py``) on spare loopback ports,
never the shared server, and always stops it at the end.

For each shard count of :data:`SHARD_COUNTS` (``?shards=N`` in the URL; 1 is
a plain namespace, one hash tag, one master) and each worker setting, the
cluster is flushed, ``n`` no-op jobs (200,000; quick 20,000) are enqueued
round-robin over the six queues of :data:`QUEUES` (two on each shard of
three), and the real worker CLI, ``qw worker bench.cluster:app --processes P
--concurrency C``, drains them: jobs/s from the first task start to the
moment the store counts every job succeeded, and exactly ``n`` jobs ran,
once each (:func:`bench.phases.drain`, the drains' own check). Around each
drain every master's ``INFO``: CPU seconds (``used_cpu_user +
used_cpu_sys``) and commands processed, so the report shows where the load
went; and the machine's busy cores (``/proc/stat``).

The namespace of the sharded runs is picked so that its three tags
(``ns``, ``ns/1``, ``ns/2``) hash to slots of three different masters
(:func:`pick_namespace`); each drain runs as ``python -m bench.cluster
phase SPEC`` in a process group of its own with a deadline. Results:
``bench/results/<name>.{json,md}`` (``bench-cluster``; quick
``bench-cluster-quick``), rewritten after each drain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import qw
from bench import probe
from bench.config import ROOT, Setting, Stores
from bench.drivers.base import Workers, poll_until, python_cmd, spawn, stop, tail
from bench.drivers.qw_driver import QwRedis
from bench.tables import fmt, load_span, phase_result

__all__ = [
    "MASTERS",
    "QUEUES",
    "SHARD_COUNTS",
    "Sizes",
    "app",
    "main",
    "markdown",
    "pick_namespace",
    "pick_queues",
    "slot_owner",
    "summarize",
    "usage",
]

MASTERS = 3
SHARD_COUNTS = (1, 3)
TASK = "bench.cluster.noop"
#: Bulk enqueue size (one queue per call: a batch must keep to one shard).
BULK = 1000
#: The cluster's node options beyond the launcher's (it sets no persistence itself).
PERSISTENCE = "appendonly no, save '' (the qw-redis tests' cluster launcher)"
#: Worker environment: qw-metrics (installed, so the CLI loads it) serves no
#: port and reads no counts, which would add commands to the masters.
WORKER_ENV = {"QW_METRICS_PORT": "off", "QW_METRICS_COUNTS_S": "off"}


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- picking queues and namespaces ----------------------------------------------


def pick_queues(shards: int = 3, per_shard: int = 2, prefix: str = "q") -> tuple[str, ...]:
    """``per_shard`` queue names for each of ``shards`` shards, in round-robin shard order.

    The names are ``<prefix><k>`` for k = 0, 1, ...; each is placed by
    :func:`qw_redis.sharded.propose_shard`, as a new queue is. Job ``i``
    goes to queue ``i % len(queues)``, so the shards get equal shares.
    """
    from qw_redis.sharded import propose_shard

    by_shard: dict[int, list[str]] = {s: [] for s in range(shards)}
    k = 0
    while any(len(names) < per_shard for names in by_shard.values()):
        name = f"{prefix}{k}"
        s = propose_shard(name, shards)
        if len(by_shard[s]) < per_shard:
            by_shard[s].append(name)
        k += 1
    return tuple(by_shard[s][i] for i in range(per_shard) for s in range(shards))


#: The six queues of every drain: two on each shard of a 3-shard namespace.
QUEUES = pick_queues()


def shard_tags(namespace: str, shards: int) -> list[str]:
    """The hash tags of ``namespace``'s shards (``ns``, ``ns/1``, ...), as qw-redis makes them."""
    from qw_redis.keys import Keyspace

    return [Keyspace(namespace, s).tag for s in range(shards)]


def tag_slot(tag: str) -> int:
    """The cluster slot of every key under hash tag ``tag`` (``qw:{tag}:...``)."""
    from redis.crc import key_slot

    return int(key_slot(f"qw:{{{tag}}}:x".encode()))


def slot_owner(slots: Sequence[Sequence[Any]]) -> Callable[[int], int]:
    """From a raw ``CLUSTER SLOTS`` reply, a function: slot -> its master's port."""
    ranges = [(int(r[0]), int(r[1]), int(r[2][1])) for r in slots]

    def owner(slot: int) -> int:
        for start, end, port in ranges:
            if start <= slot <= end:
                return port
        raise LookupError(f"slot {slot} has no master")

    return owner


def pick_namespace(owner: Callable[[int], int], shards: int, prefix: str) -> str:
    """The first ``<prefix><k>`` whose ``shards`` tags are on as many different masters."""
    for k in range(10_000):
        namespace = f"{prefix}{k}"
        masters = {owner(tag_slot(tag)) for tag in shard_tags(namespace, shards)}
        if len(masters) == shards:
            return namespace
    raise LookupError(f"no namespace {prefix}* spreads {shards} tags over {shards} masters")


def layout(
    namespace: str, shards: int, owner: Callable[[int], int], ports: Sequence[int]
) -> list[dict[str, Any]]:
    """Where each queue of :data:`QUEUES` is to live: shard, tag, slot, master (index, port)."""
    from qw_redis.sharded import propose_shard

    tags = shard_tags(namespace, shards)
    out = []
    for queue in QUEUES:
        s = propose_shard(queue, shards)
        slot = tag_slot(tags[s])
        out.append(
            {
                "queue": queue,
                "shard": s,
                "tag": tags[s],
                "slot": slot,
                "master": list(ports).index(owner(slot)),
                "port": owner(slot),
            }
        )
    return out


# -- the app the worker CLI runs ------------------------------------------------

#: ``qw worker bench.cluster:app``: URL and namespace come from ``--url``/``--namespace``.
app = qw.App()


@app.task(name=TASK, queue=QUEUES[0], max_attempts=3)
def noop(index: int) -> None:
    probe.record(index)


# -- the masters' figures -------------------------------------------------------


def snapshot(ports: Sequence[int]) -> list[dict[str, Any]]:
    """Each master's CPU seconds so far and commands processed so far."""
    import redis

    out = []
    for port in ports:
        client = redis.Redis(port=port)
        try:
            cpu = client.info("cpu")
            stats = client.info("stats")
        finally:
            client.close()
        out.append(
            {
                "port": port,
                "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                "commands": int(stats["total_commands_processed"]),
            }
        )
    return out


def usage(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per master: CPU seconds and commands between two snapshots, and its share of each."""
    deltas = [
        {
            "port": a["port"],
            "cpu_s": a["cpu_s"] - b["cpu_s"],
            "commands": a["commands"] - b["commands"],
        }
        for b, a in zip(before, after, strict=True)
    ]
    cpu = sum(d["cpu_s"] for d in deltas)
    commands = sum(d["commands"] for d in deltas)
    for d in deltas:
        d["cpu_share"] = d["cpu_s"] / cpu if cpu > 0 else 0.0
        d["commands_share"] = d["commands"] / commands if commands > 0 else 0.0
    return deltas


def cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def keys_by_tag(ports: Sequence[int]) -> dict[str, dict[str, int]]:
    """Per master (by port), how many ``qw:{tag}:*`` keys of each tag it holds."""
    import redis

    out: dict[str, dict[str, int]] = {}
    for port in ports:
        client = redis.Redis(port=port, decode_responses=True)
        try:
            tags: dict[str, int] = {}
            for key in client.scan_iter(match="qw:{*", count=1000):
                tag = key[4 : key.find("}")]
                tags[tag] = tags.get(tag, 0) + 1
        finally:
            client.close()
        out[str(port)] = dict(sorted(tags.items()))
    return out


# -- the driver: qw on the cluster, through the worker CLI ---------------------


class ClusterRedis(QwRedis):
    """qw-redis on this phase's cluster, one namespace over ``shards`` shards, six queues."""

    store = "redis-cluster"

    def __init__(self, stores: Stores, ports: Sequence[int], namespace: str, shards: int) -> None:
        super().__init__(stores)
        self.ports = list(ports)
        self.namespace = namespace
        self.shards = shards
        self._before: list[dict[str, Any]] = []
        self._ticks = (0, 0)
        #: What the last drain cost each master, and the machine (set by wait_drained).
        self.measured: dict[str, Any] = {}

    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}?shards={self.shards}"

    def client(self) -> qw.Client:
        if self._client_obj is None:
            from bench.qwplugins import baseline

            self._client_obj = qw.open(self.url(), namespace=self.namespace, plugins=baseline())
        return self._client_obj

    def reset(self) -> None:
        import redis

        self.close()
        # The cluster is this phase's own: every master is emptied.
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                client.flushall()
            finally:
                client.close()

    def enqueue(self, indexes: range, batch: int) -> None:
        from qw.app import task_payload
        from qw.model import NewJob

        client = self.client()
        by_queue: dict[str, list[NewJob]] = {q: [] for q in QUEUES}
        for i in indexes:
            queue = QUEUES[i % len(QUEUES)]
            by_queue[queue].append(NewJob(queue, task_payload(TASK, [i])))
        for jobs in by_queue.values():
            for start in range(0, len(jobs), batch):
                client.enqueue(jobs[start : start + batch])

    def prefill(self, indexes: range) -> None:
        self.enqueue(indexes, BULK)

    def command(self, setting: Setting) -> list[str]:
        """The worker CLI's command line for ``setting``."""
        return python_cmd(
            "-c",
            "from qw.cli import main; main(prog_name='qw')",
            "worker",
            "bench.cluster:app",
            "--url",
            self.url(),
            "--namespace",
            self.namespace,
            "--queues",
            ",".join(QUEUES),
            "--processes",
            str(setting.processes),
            "--concurrency",
            str(setting.concurrency),
            "--log-level",
            "warning",
        )

    def start_setting(self, setting: Setting, probe_dir: Path, *, drain: int | None) -> Workers:
        log_path = self.log(f"worker-s{self.shards}-{setting.label}")
        self._before = snapshot(self.ports)
        self._ticks = cpu_ticks()
        proc = spawn(self.command(setting), log_path, {probe.ENV: str(probe_dir), **WORKER_ENV})
        return Workers([proc], [log_path], probe_dir)

    def wait_drained(self, workers: Workers, n: int, deadline: float) -> int:
        # Every task started (the probe, cheap), then the store counts every job succeeded.
        end_ns = poll_until(
            lambda: workers.ran() >= n and self.succeeded() == n,
            deadline,
            interval=0.02,
            progress=self.progress(workers, n),
            workers=workers,
        )
        after, ticks = snapshot(self.ports), cpu_ticks()
        busy, total = (a - b for a, b in zip(ticks, self._ticks, strict=True))
        self.measured = {
            "masters": usage(self._before, after),
            "machine_busy_cores": busy / total * (os.cpu_count() or 1) if total else None,
            "keys_by_tag": keys_by_tag(self.ports),
        }
        stop(workers.procs)
        proc, log_path = workers.procs[0], workers.logs[0]
        if proc.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"qw worker exited with {proc.returncode}: {tail(log_path)}")
        return end_ns

    def succeeded(self) -> int | None:
        from qw.model import JobStatus

        counts = self.client().counts()
        return sum(int(counts.get(q, {}).get(JobStatus.SUCCEEDED, 0)) for q in QUEUES)


# -- one drain, in a child process ---------------------------------------------


def phase_main(spec_json: str) -> int:
    """``python -m bench.cluster phase SPEC``: one drain; prints ``RESULT <json>``."""
    from bench import phases
    from bench.spawn import answer

    spec = json.loads(spec_json)
    deadline = time.monotonic() + float(spec["timeout"]) - 30

    def work() -> dict[str, Any]:
        stores = Stores.from_env(Path(spec["workdir"]))
        driver = ClusterRedis(stores, spec["ports"], spec["namespace"], int(spec["shards"]))
        setting = Setting(**spec["setting"])
        try:
            result = phases.drain(driver, int(spec["n"]), setting.concurrency, deadline, setting)
            result.update(driver.measured)
            result["placement_stored"] = _stored_placement(driver)
        finally:
            driver.reset()
            driver.close()
        return result

    return answer(work)


def _stored_placement(driver: ClusterRedis) -> dict[str, str]:
    """``qw:{ns}:placement`` as the store has it (empty for a plain namespace)."""
    from redis.cluster import RedisCluster

    from qw_redis.keys import Keyspace

    client = RedisCluster(host="127.0.0.1", port=driver.ports[0], decode_responses=True)
    try:
        raw = client.hgetall(Keyspace(driver.namespace).placement_key)
        return {str(q): str(shard) for q, shard in sorted(raw.items())}
    finally:
        client.close()


# -- sizes, the report ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    """Jobs per drain, and the worker settings (processes x concurrency) of each shard count."""

    n: int
    settings: tuple[tuple[int, int], ...]
    shard_counts: tuple[int, ...] = SHARD_COUNTS
    #: Drains of each (setting, shard count); the report shows the fastest.
    reps: int = 1

    @classmethod
    def of(cls, *, quick: bool, **given: Any) -> Sizes:
        default = cls(20_000 if quick else 200_000, ((1, 16), (2, 16), (3, 16), (4, 4)))
        sizes = replace(default, **{k: v for k, v in given.items() if v is not None})
        if sizes.n < len(QUEUES) or not sizes.settings or not sizes.shard_counts or sizes.reps < 1:
            raise ValueError(f"cluster phase: bad sizes {sizes}")
        if any(s not in (1, 2, 3) for s in sizes.shard_counts):
            raise ValueError(f"cluster phase: shard counts are 1..{MASTERS}: {sizes}")
        return sizes

    def timeout(self) -> float:
        """Seconds a drain may take, its prefill included (a floor of 500 jobs/s)."""
        return 300.0 + self.n / 500.0


def label(processes: int, concurrency: int) -> str:
    return f"{processes}px{concurrency}"


def summarize(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A drain's figures for the tables, or None if it failed."""
    r = phase_result(entry)
    if r is None:
        return None
    masters = r.get("masters", [])
    return {
        "jobs_per_s": r["jobs_per_s"],
        "steady_jobs_per_s": r.get("steady_jobs_per_s"),
        "exactly_once": bool(r.get("exactly_once")),
        "ran": r.get("ran"),
        "store_succeeded": r.get("store_succeeded"),
        "cpu_s": [m["cpu_s"] for m in masters],
        "cpu_share": [m["cpu_share"] for m in masters],
        "commands": [m["commands"] for m in masters],
        "masters_cpu_s": sum(m["cpu_s"] for m in masters),
        "busiest_share": max((m["cpu_share"] for m in masters), default=None),
        # The busiest master's CPU over the drain's span: its share of one core.
        "busiest_core": max((m["cpu_s"] for m in masters), default=0.0) / r["seconds"]
        if r.get("seconds")
        else None,
        "machine_busy_cores": r.get("machine_busy_cores"),
    }


def keep(reps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Of one drain's repetitions, the one the report shows, with every rep's jobs/s.

    The first that failed (or did not run each job once), so that no failure
    hides behind a good repetition; else the fastest.
    """
    summaries = [summarize(r) for r in reps]
    bad = [r for r, s in zip(reps, summaries, strict=True) if s is None or not s["exactly_once"]]
    chosen = bad[0] if bad else max(reps, key=lambda r: r["result"]["jobs_per_s"])
    rates = [s["jobs_per_s"] if s else None for s in summaries]
    return {**chosen, "reps_jobs_per_s": rates}


def best(data: dict[str, Any], shards: int) -> tuple[str, dict[str, Any]] | None:
    """The fastest verified drain at ``shards``: (setting label, its summary)."""
    rows = [
        (s["jobs_per_s"], lab, s)
        for lab, entry in data.get("runs", {}).get(str(shards), {}).items()
        if (s := summarize(entry)) and s["exactly_once"]
    ]
    if not rows:
        return None
    _, lab, s = max(rows, key=lambda row: row[0])
    return lab, s


def pct(x: float | None) -> str:
    """``x`` as a whole percentage; ``-`` for none."""
    return "-" if x is None else f"{100 * x:.0f}%"


def markdown(data: dict[str, Any]) -> str:
    """The report: the layout, a table per shard count, the machine, how it was taken."""
    m = data["machine"]
    cl = data["cluster"]
    ports = [mm["port"] for mm in cl["masters"]]
    names = [f"m{i}" for i in range(len(ports))]
    lines = [
        f"# qw benchmark: `{data['name']}` (Redis Cluster scale-out)",
        "",
        f"Run {data['started']}, {fmt(data.get('duration_s'), 0)} s. {data['sizes']['n']:,} "
        f"no-op jobs per drain over {len(data['queues'])} queues, drained by `qw worker "
        f"--processes P --concurrency C`; one namespace on a {len(ports)}-master Redis "
        "Cluster, as a plain namespace (`shards=1`, one hash tag) and sharded (`shards=3`).",
        "",
        f"**On {m['cpu_count']} cores, all {len(ports)} masters, the workers and this harness "
        "share the same CPUs**, so jobs/s cannot grow with the masters the way it would with "
        "each master on a host of its own: the CPU the masters use comes out of what the "
        "workers could use. What the sharded namespace changes is where the store's work "
        "goes: the per-master CPU share below is the evidence that one namespace now uses "
        "every master, where a plain one keeps all of it on one.",
        "",
        "## Summary",
        "",
        "| shards | best setting | jobs/s | busiest master's CPU share | busiest master's "
        "use of one core | masters' CPU s | exactly N once |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for shards in data["sizes"]["shard_counts"]:
        b = best(data, shards)
        if b is None:
            lines.append(f"| {shards} | failed | | | | | NO |")
            continue
        lab, s = b
        lines.append(
            f"| {shards} | {lab} | {fmt(s['jobs_per_s'], 0)} | {pct(s['busiest_share'])} "
            f"| {pct(s['busiest_core'])} | {fmt(s['masters_cpu_s'], 1)} | yes |"
        )
    lines += [
        "",
        "## Cluster and namespaces",
        "",
        "| master | port | slots |",
        "| --- | ---: | --- |",
        *(
            f"| {name} | {mm['port']} | {mm['slots']} |"
            for name, mm in zip(names, cl["masters"], strict=True)
        ),
        "",
        f"Redis {cl['redis']}, no replicas, {cl['persistence']}.",
        "",
        "| shards | namespace | queue → shard, tag (slot), master |",
        "| ---: | --- | --- |",
    ]
    for shards in data["sizes"]["shard_counts"]:
        where = data["layout"][str(shards)]
        text = "; ".join(
            f"`{w['queue']}` → {w['shard']}, `{{{w['tag']}}}` ({w['slot']}), m{w['master']}"
            for w in where
        )
        lines.append(f"| {shards} | `{data['namespaces'][str(shards)]}` | {text} |")
    for shards in data["sizes"]["shard_counts"]:
        lines += [
            "",
            f"## shards={shards}",
            "",
            "| setting | jobs/s (after the first 5%; every rep) | exactly N once | "
            + " | ".join(f"{n} CPU s (share)" for n in names)
            + " | commands "
            + " / ".join(names)
            + " | busiest master, of one core | machine busy cores | load |",
            "| --- | ---: | --- | "
            + " | ".join("---:" for _ in names)
            + " | ---: | ---: | ---: | --- |",
        ]
        for lab, entry in data.get("runs", {}).get(str(shards), {}).items():
            row = summarize(entry)
            if row is None:
                lines.append(f"| {lab} | failed: {entry.get('error')} | |")
                continue
            s = row
            cells = " | ".join(
                f"{fmt(c, 1)} ({pct(sh)})" for c, sh in zip(s["cpu_s"], s["cpu_share"], strict=True)
            )
            rates = entry.get("reps_jobs_per_s") or []
            every = f"; reps {' / '.join(fmt(x, 0) for x in rates)}" if len(rates) > 1 else ""
            lines.append(
                f"| {lab} | {fmt(s['jobs_per_s'], 0)} ({fmt(s['steady_jobs_per_s'], 0)}{every}) | "
                f"{'yes' if s['exactly_once'] else 'NO'} ({fmt(s['ran'])} ran, "
                f"{fmt(s['store_succeeded'])} succeeded) | {cells} | "
                f"{' / '.join(fmt(c) for c in s['commands'])} | "
                f"{pct(s['busiest_core'])} | {fmt(s['machine_busy_cores'], 2)} | "
                f"{load_span(entry)} |"
            )
    plugins = ", ".join(data.get("worker_plugins", [])) or "none"
    lines += [
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {m['cpu_count']} x {m['cpu_model']} |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['platform']} |",
        f"| Python | {m['python']} |",
        f"| load average (1/5/15 min) | start {m['load_at_start']}, end {m.get('load_at_end')} |",
        f"| packages | {', '.join(f'{k} {v}' for k, v in m['packages'].items())} |",
        "",
        "## How it was taken",
        "",
        "`" + " ".join(["python -m bench.run cluster", *data.get("argv", [])]) + "`",
        "",
        f"- A {len(ports)}-master Redis Cluster of its own (redis-server on spare loopback "
        "ports, `redis-cli --cluster create`, the qw-redis tests' launcher), stopped at the "
        "end; never the shared server.",
        "- Per shard count and setting: every master flushed; the jobs enqueued in bulk calls "
        f"of {BULK:,} (one queue per call), job i on queue i mod 6; then `qw worker "
        "bench.cluster:app --url redis+cluster://...?shards=N --namespace NS --queues "
        f"{','.join(data['queues'])} --processes P --concurrency C`; its installed plugins "
        f"load as for any user ({plugins}; qw-metrics with `QW_METRICS_PORT=off`, "
        "`QW_METRICS_COUNTS_S=off`).",
        f"- Order: each setting in turn, at each shard count, {data['sizes'].get('reps', 1)} "
        "drain(s) each (the table shows the fastest, with every repetition's jobs/s); the "
        "machine's other load drifts, and this order spreads it over both shard counts.",
        "- jobs/s: n over the first task start (a probe line each task writes) to the moment "
        "the harness, polling every 20 ms once every task had started, saw the store count n "
        "succeeded; the run passes only if exactly n tasks ran, each index once, and the "
        "store counts n succeeded.",
        "- Per master: `INFO cpu` (`used_cpu_user + used_cpu_sys`) and `INFO stats` "
        "(`total_commands_processed`) just before the worker starts and once the drain is "
        "seen complete; a share is of the three masters' sum. Machine busy cores: "
        "`/proc/stat` over the same span x the core count (2.00 = both cores busy).",
        "- The namespaces: the first `bench-s<N>-<k>` whose N shard tags hash to N "
        "different masters (`redis.crc.key_slot`, `CLUSTER SLOTS`); the queues: the first "
        "names `q<k>` that `qw_redis.sharded.propose_shard(name, 3)` places two on each "
        "shard. The store's own placement (`qw:{ns}:placement`) and each master's keys by "
        "tag after each drain are in the JSON.",
        "",
    ]
    return "\n".join(lines)


def write(data: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md.write_text(markdown(data))
    return [js, md]


# -- the orchestrator ------------------------------------------------------------


def _servers() -> types.ModuleType:
    """``packages/qw-redis/tests/servers.py``: the tests' launcher of loopback servers.

    It imports pytest for a skip helper this does not call; the bench venv
    has no pytest, so an empty stand-in is given there.
    """
    if importlib.util.find_spec("pytest") is None:
        sys.modules.setdefault("pytest", types.ModuleType("pytest"))
    path = ROOT / "packages" / "qw-redis" / "tests" / "servers.py"
    spec = importlib.util.spec_from_file_location("qw_redis_test_servers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def running_cluster(directory: Path) -> Iterator[list[int]]:
    """A fresh :data:`MASTERS`-master cluster under ``directory``; its ports; stopped after."""

    def stop_on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop_on_term)
    try:
        with _servers().cluster(directory, masters=MASTERS) as servers:
            yield [s.port for s in servers]
    finally:
        signal.signal(signal.SIGTERM, previous)


def cluster_facts(ports: Sequence[int]) -> tuple[dict[str, Any], Callable[[int], int]]:
    """The masters (port, slots), the server version; and slot -> master port."""
    import redis

    client = redis.Redis(port=ports[0])
    try:
        slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        version = client.info("server")["redis_version"]
    finally:
        client.close()
    owner = slot_owner(slots)
    by_port: dict[int, list[str]] = {}
    for r in slots:
        by_port.setdefault(int(r[2][1]), []).append(f"{r[0]}-{r[1]}")
    masters = [{"port": p, "slots": ", ".join(by_port.get(p, []))} for p in ports]
    return {"masters": masters, "redis": version, "persistence": PERSISTENCE}, owner


def worker_plugins() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="qw.plugins"))


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run cluster", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="20,000 jobs per drain")
    p.add_argument("--n", type=int, help="jobs per drain (default 200,000; quick 20,000)")
    p.add_argument(
        "--settings",
        help="comma-separated PxC worker settings (default 1x16,2x16,3x16,4x4; 4x4 is "
        "qw-redis's best drain on one server)",
    )
    p.add_argument("--shards", help="comma-separated shard counts (default 1,3)")
    p.add_argument("--reps", type=int, help="drains of each setting and shard count (default 1)")
    p.add_argument("--name", help="results file stem (default bench-cluster; quick -quick)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args(list(argv))


def sizes_of(ns: argparse.Namespace) -> Sizes:
    settings = (
        tuple(tuple(int(x) for x in s.split("x")) for s in ns.settings.split(","))
        if ns.settings
        else None
    )
    shards = tuple(int(s) for s in ns.shards.split(",")) if ns.shards else None
    return Sizes.of(quick=ns.quick, n=ns.n, settings=settings, shard_counts=shards, reps=ns.reps)


def main(argv: Sequence[str]) -> int:
    from bench import machine
    from bench.spawn import run_in_group

    ns = parse(argv)
    sizes = sizes_of(ns)
    name = ns.name or ("bench-cluster-quick" if ns.quick else "bench-cluster")
    workdir = ns.out / "raw" / name
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    described = machine.describe(Stores.from_env(workdir))
    log(f"machine: {described['cpu_count']} CPUs, load {described['load_at_start']}")
    failed = False
    with running_cluster(workdir / "cluster") as ports:
        facts, owner = cluster_facts(ports)
        log(f"cluster up: masters on {ports}, Redis {facts['redis']}")
        namespaces = {str(k): pick_namespace(owner, k, f"bench-s{k}-") for k in sizes.shard_counts}
        data: dict[str, Any] = {
            "name": name,
            "argv": list(argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "sizes": asdict(sizes),
            "machine": described,
            "cluster": facts,
            "queues": list(QUEUES),
            "namespaces": namespaces,
            "layout": {k: layout(v, int(k), owner, ports) for k, v in namespaces.items()},
            "worker_plugins": worker_plugins(),
            "runs": {},
        }
        for shards in sizes.shard_counts:
            data["runs"][str(shards)] = {}
        # Settings outer, shard counts inner, repetitions innermost: the machine's
        # other load drifts over a run, and this spreads it over both shard counts.
        for processes, concurrency in sizes.settings:
            lab = label(processes, concurrency)
            for shards in sizes.shard_counts:
                spec = {
                    "ports": ports,
                    "namespace": namespaces[str(shards)],
                    "shards": shards,
                    "n": sizes.n,
                    "setting": asdict(Setting(lab, processes, concurrency)),
                    "workdir": str(workdir),
                    "timeout": sizes.timeout(),
                }
                reps = []
                for rep in range(sizes.reps):
                    log(f"shards={shards} {lab} (rep {rep + 1}/{sizes.reps}): {sizes.n:,} jobs")
                    load_start = machine.load()
                    entry = run_in_group(["bench.cluster", "phase"], spec, sizes.timeout())
                    entry.update(load_start=load_start, load_end=machine.load())
                    reps.append(entry)
                    s = summarize(entry)
                    if s is None or not s["exactly_once"]:
                        log(f"shards={shards} {lab} failed: {entry.get('error') or 'not once'}")
                    else:
                        shares = ", ".join(f"{100 * x:.0f}%" for x in s["cpu_share"])
                        log(
                            f"shards={shards} {lab}: {s['jobs_per_s']:,.0f} jobs/s; "
                            f"masters' CPU shares {shares}"
                        )
                kept = keep(reps)
                failed = failed or not (summarize(kept) or {}).get("exactly_once")
                data["runs"][str(shards)][lab] = kept
                described["load_at_end"] = machine.load()
                data["duration_s"] = round(time.time() - started, 1)
                for path in write(data, ns.out, name):
                    log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    log("cluster stopped")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "phase":
        sys.exit(phase_main(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
