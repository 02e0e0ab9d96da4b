"""The flow-control phase (``limits``), qw only: what a concurrency limit per key costs.

* drain: ``n`` no-op jobs spread round-robin over :data:`KEYS` limit keys,
  each key limited to :data:`LIMIT` running jobs
  (``@app.task(limit_key="k:{key}", concurrency=2)``), drained by the
  normal worker; jobs/s against a drain of the same ``n`` jobs of the same
  task without a limit, run just before on the same store at the same
  concurrency. Passes only if exactly ``n`` ran, once each, and no key ever
  had more than its limit running: the task notes when its body starts and
  ends (a body lies inside its job's claim-to-terminal-write span, so three
  bodies of a key overlapping prove three were running), and a sampler
  reads the store's running jobs (``list_jobs(status="running")``) every
  :data:`SAMPLE_S` s during both drains.
* claim: ``Client.claim(limit=1)`` latency (each claimed job then
  completed), as the backlog phase measures it: a job enqueued, then
  claimed, one at a time; on an empty queue, then with ``throttled`` jobs
  of :data:`HOT_KEYS` full keys queued ahead of it (FIFO, same priority).
  Twice: keys full because :data:`LIMIT` jobs of each are held running by
  claims never finished ("full"), then the same backlog paused by an
  operators' ``Limit(concurrency=0)`` with those claims completed
  ("paused"). Every claim must hand out the claimable job, never a
  throttled one.

A store whose backend does not declare capability ``limits`` is skipped,
with the reason in the report. Goals: limited drain ≥ :data:`DRAIN_RATIO`
times unlimited (at concurrency :data:`GOAL_CONCURRENCY`); claim p50 with
the throttled backlog ≤ :data:`CLAIM_FACTOR` times empty.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import probe
from bench.drivers.base import QUEUE, Driver, Unsupported
from bench.stats import percentile
from bench.tables import phase_result
from bench.workflows import tally

if TYPE_CHECKING:
    import qw
    from bench.config import Plan
    from bench.drivers.qw_driver import QwDriver

__all__ = [
    "CLAIM_FACTOR",
    "DRAIN_RATIO",
    "GOAL_CONCURRENCY",
    "HOT_KEYS",
    "KEYS",
    "LIMIT",
    "Sizes",
    "capability",
    "claim_latency",
    "drain",
    "failures",
    "goals",
    "max_overlap",
    "run",
    "sections",
]

#: Running jobs allowed per key of the limited task (``concurrency=`` of its ``k:{key}``).
LIMIT = 2
#: Limit keys of the drain, jobs spread round-robin over them.
KEYS = 1_000
#: Full keys the claim phase's throttled backlog belongs to.
HOT_KEYS = 10
#: Goals: limited drain ≥ this times unlimited; claim p50 with the backlog ≤ this times empty.
DRAIN_RATIO = 0.8
CLAIM_FACTOR = 2.0
#: The concurrency the drain goal is judged at (every concurrency is in the table).
GOAL_CONCURRENCY = 16
#: Seconds between the sampler's reads of the store's running jobs.
SAMPLE_S = 0.05
#: Seconds of claim sampling per case at most (a slow claim is a finding, not a hang).
CLAIM_BUDGET_S = 120.0
#: Lease of the claims that hold the hot keys full: longer than any phase.
HOLD_LEASE_S = 3600.0


def _say(msg: str) -> None:
    print(f"    {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work the phase does: drain size and concurrencies, throttled backlog."""

    n: int
    concurrencies: tuple[int, ...]
    throttled: int
    samples: int
    keys: int = KEYS
    hot_keys: int = HOT_KEYS

    @classmethod
    def of(
        cls,
        plan: Plan,
        *,
        quick: bool,
        n: int | None = None,
        throttled: int | None = None,
        concurrencies: tuple[int, ...] | None = None,
    ) -> Sizes:
        """The plan's drain size and concurrencies (and 16); 100,000 throttled (quick 10,000)."""
        return cls(
            n=n or plan.drain_n,
            concurrencies=concurrencies or tuple(sorted({*plan.concurrencies, GOAL_CONCURRENCY})),
            throttled=throttled or (10_000 if quick else 100_000),
            samples=plan.backlog_samples,
        )

    def timeout(self, phase: str) -> float:
        """Seconds a phase may take (generous: for a hang, not a slow store)."""
        if phase == "limits_drain":
            return 120.0 + 2 * self.n / 100.0
        if phase == "limits_claim":
            # Keyed inserts at a floor of 200/s, and each case's claim budget.
            return 240.0 + self.throttled / 200.0 + 3 * CLAIM_BUDGET_S
        return 60.0


# -- the checks ----------------------------------------------------------------


def max_overlap(
    starts: Iterable[probe.Record],
    ends: Iterable[probe.Record],
    key_of: Callable[[int], str],
    end_ns: int,
) -> dict[str, int]:
    """Per key, the most task bodies running at one instant.

    A body spans its index's first start record to its first end record
    (``end_ns`` if it has none). Touching spans do not overlap.
    """
    first: dict[int, int] = {}
    for r in starts:
        if r.index not in first or r.at_ns < first[r.index]:
            first[r.index] = r.at_ns
    done: dict[int, int] = {}
    for r in ends:
        if r.index not in done or r.at_ns < done[r.index]:
            done[r.index] = r.at_ns
    events: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index, t0 in first.items():
        key = key_of(index)
        # An end sorts before a start at the same instant: (t, 0) < (t, 1).
        events[key].append((t0, 1))
        events[key].append((max(done.get(index, end_ns), t0), 0))
    out: dict[str, int] = {}
    for key, evs in events.items():
        evs.sort()
        now = most = 0
        for _, is_start in evs:
            now += 1 if is_start else -1
            most = max(most, now)
        out[key] = most
    return out


def _payload_key(job: qw.Job) -> str:
    """The ``k:{key}`` a bench job counts under, from its arguments (limited or not)."""
    payload = job.payload
    args = payload.get("args") if isinstance(payload, dict) else None
    if isinstance(args, list) and len(args) >= 2:
        return f"k:{args[1]}"
    return f"job {job.id}"


class Sampler:
    """Reads the store's running jobs every ``interval`` s, in a thread, counting them per key.

    One ``list_jobs(status="running")`` read per sample (a single query or
    script on every store: a consistent view, and well under a millisecond
    with a few dozen running), so it weighs the same on a drain with or
    without limits. A job counts under its ``limit_key``, or, without one,
    the key its arguments name.
    """

    def __init__(self, url: str, namespace: str, expect: int | None, interval: float) -> None:
        self.samples = 0
        self.max_running = 0
        #: (key, running) above ``expect`` as the store showed it: a few, for the message.
        self.over: list[tuple[str, int]] = []
        self.error: str | None = None
        self._url, self._namespace = url, namespace
        self._expect, self._interval = expect, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-key-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import qw
        from qw.validation import MAX_LIST_LIMIT

        try:
            with qw.open(self._url, namespace=self._namespace) as client:
                while not self._stop.is_set():
                    running = client.list_jobs(status="running", limit=MAX_LIST_LIMIT)
                    per_key: dict[str, int] = defaultdict(int)
                    for job in running:
                        per_key[job.limit_key or _payload_key(job)] += 1
                    self.samples += 1
                    for key, count in per_key.items():
                        self.max_running = max(self.max_running, count)
                        high = self._expect is not None and count > self._expect
                        if high and len(self.over) < 10:
                            self.over.append((key, count))
                    self._stop.wait(self._interval)
        except Exception as exc:  # reported with the result; the drain goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# -- what the phase needs from qw ----------------------------------------------


def _qw(driver: Driver) -> QwDriver:
    from bench.drivers.qw_driver import QwDriver

    if not isinstance(driver, QwDriver):
        raise Unsupported("the limits phase measures qw only")
    return driver


def capability(driver: Driver) -> dict[str, Any]:
    """Whether the driver's store declares ``limits``: ``{"limits": bool, "reason": ...}``."""
    qwd = _qw(driver)
    qwd.reset()  # the store must exist to be opened (PostgreSQL: its database)
    client = qwd.client()
    try:
        name, has = client.backend.name, client.capabilities.limits
    finally:
        qwd.close()
    reason = None if has else f"the {name} backend does not declare capability 'limits' (yet)"
    return {"backend": name, "limits": has, "reason": reason}


def _require_limits(driver: QwDriver) -> None:
    if not driver.client().capabilities.limits:
        raise Unsupported(capability(driver)["reason"])


def _tasks(driver: QwDriver) -> tuple[qw.App, qw.Task[..., None], qw.Task[..., None]]:
    """An app holding the worker's two limits tasks (to build jobs with; not opened)."""
    import qw
    from bench.apps.qw_worker import register_limits
    from bench.drivers.qw_driver import NAMESPACE

    app = qw.App(driver.url(), namespace=NAMESPACE)
    unlimited, limited = register_limits(app)
    return app, unlimited, limited


def _key(index: int, keys: int) -> int:
    return index % keys


# -- the drain -----------------------------------------------------------------


def drain(
    driver: Driver,
    n: int,
    concurrency: int,
    deadline: float,
    *,
    keys: int = KEYS,
    limit: int | None = LIMIT,
    expect: int | None = None,
    hold_ms: float = 0.0,
    sample_s: float = SAMPLE_S,
) -> dict[str, Any]:
    """Drain ``n`` jobs over ``keys`` keys; with ``limit`` each key allows that many running.

    ``limit`` None drains the same task without a limit (the baseline).
    ``expect`` (default: ``limit``) is the most running jobs a key may
    show, checked from the task's body spans and the store's running jobs;
    a key above it fails the phase.
    """
    import qw
    from bench.drivers.qw_driver import NAMESPACE

    qwd = _qw(driver)
    expect = limit if expect is None else expect
    qwd.reset()
    if limit is not None:
        _require_limits(qwd)
    app, unlimited, limited = _tasks(qwd)
    call = limited if limit == LIMIT else limited.options(limit=qw.Limit(concurrency=limit))
    t0 = time.perf_counter()
    client = qwd.client()
    extra = {"hold_ms": hold_ms} if hold_ms else {}
    for start in range(0, n, 1000):
        batch = range(start, min(start + 1000, n))
        if limit is None:
            client.enqueue([unlimited.job(i, _key(i, keys), **extra) for i in batch])
        else:
            client.enqueue([call.job(i, _key(i, keys), **extra) for i in batch])
    prefill_s = time.perf_counter() - t0
    app.close()
    qwd.close()
    label = f"limit {limit}/key" if limit is not None else "no limit"
    _say(f"{qwd.id} c={concurrency}, {label}: {n:,} jobs over {keys:,} keys in {prefill_s:.1f} s")
    with tempfile.TemporaryDirectory(prefix="qw-bench-probe-") as tmp:
        probe_dir = Path(tmp)
        workers = qwd.start(concurrency, probe_dir, drain=n)
        # Both drains are sampled alike, so the sampler weighs on both.
        sampler = Sampler(qwd.url(), NAMESPACE, expect, sample_s)
        try:
            end_ns = qwd.wait_drained(workers, n, deadline)
        finally:
            sampler.stop()
            qwd.halt(workers)
        starts = probe.read(probe_dir)
        ends = probe.read(probe_dir, probe.DONE)
    store = qwd.succeeded()
    qwd.close()
    check = tally((r.index for r in starts), range(n))
    overlap = max_overlap(starts, ends, lambda i: f"k:{_key(i, keys)}", end_ns)
    worst = max(overlap.values(), default=0)
    begun = sorted(r.at_ns for r in starts)
    start_ns = begun[0] if begun else end_ns
    seconds = max((end_ns - start_ns) / 1e9, 1e-9)
    k = max(1, n // 20)
    steady = (n - k) / max((end_ns - begun[k]) / 1e9, 1e-9) if len(begun) > k else None
    over = sorted(((c, key) for key, c in overlap.items() if expect is not None and c > expect))
    result: dict[str, Any] = {
        "n": n,
        "keys": keys,
        "limit": limit,
        "expect": expect,
        "concurrency": concurrency,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "steady_jobs_per_s": steady,
        "prefill_s": prefill_s,
        "store_succeeded": store,
        **check,
        "max_overlap": worst,
        "keys_over": [f"{key} ({c} at once)" for c, key in over[::-1][:10]],
        "samples": sampler.samples,
        "sampled_max_running": sampler.max_running,
        "sampled_over": [f"{key} ({c} running)" for key, c in sampler.over],
        "sampler_error": sampler.error,
    }
    problems = []
    if not check["exactly_once"] or store != n:
        problems.append(
            f"not exactly {n} once: {check['ran']} ran, {check['unique']} unique, "
            f"{check['duplicates']} twice, {check['missing']} missing, store {store}"
        )
    if result["keys_over"]:
        problems.append(
            f"{len(over)} keys had more than {expect} jobs running at once (task bodies): "
            + ", ".join(result["keys_over"])
        )
    if result["sampled_over"]:
        problems.append(
            f"the store reported more than {expect} running for: "
            + ", ".join(result["sampled_over"])
        )
    if result["sampler_error"]:
        problems.append(f"the key sampler failed: {result['sampler_error']}")
    result["ok"] = not problems
    result["problems"] = problems
    _say(
        f"{qwd.id} c={concurrency}, {label}: {n / seconds:,.0f} jobs/s; ran={check['ran']} "
        f"unique={check['unique']} store={store} most running per key: bodies {worst}, "
        f"store {sampler.max_running} ({sampler.samples} samples)"
    )
    if problems:
        raise RuntimeError(f"limits drain check failed: {'; '.join(problems)}")
    return result


# -- claim latency with a throttled backlog ------------------------------------


def _claim_samples(
    client: qw.Client, task: qw.Task[..., None], samples: int, base: int
) -> tuple[list[float], str | None]:
    """Enqueue a claimable job, time ``claim(limit=1)``, complete it; ``samples`` times.

    Stops early (after at least 20) once :data:`CLAIM_BUDGET_S` passed.
    Returns the latencies (s) and what went wrong, if a claim handed out
    anything but the job just enqueued.
    """
    out: list[float] = []
    began = time.monotonic()
    for j in range(samples):
        want = client.enqueue([task.job(base + j, "free")])[0].id
        t0 = time.perf_counter()
        claims = client.claim([QUEUE], worker="bench-claimer", limit=1)
        out.append(time.perf_counter() - t0)
        if len(claims) != 1:
            return out, f"claim returned {len(claims)} jobs, expected the claimable one"
        job = claims[0].job
        client.complete(claims[0].lease)
        if job.id != want:
            return out, (
                f"claim handed out {job.id} (key {job.limit_key}), not the claimable job "
                f"{want}: a throttled job was claimed"
            )
        if j >= 19 and time.monotonic() - began > CLAIM_BUDGET_S:
            break
    return out, None


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1e3


def _hot_states(client: qw.Client, hot: set[str]) -> dict[str, qw.KeyState]:
    from qw.validation import MAX_LIST_LIMIT

    out = {}
    after: str | None = None
    while True:
        page = client.keys(limit=MAX_LIST_LIMIT, after=after)
        out.update({s.key: s for s in page if s.key in hot})
        if len(page) < MAX_LIST_LIMIT:
            return out
        after = page[-1].key


def claim_latency(
    driver: Driver, throttled: int, samples: int, *, hot_keys: int = HOT_KEYS
) -> dict[str, Any]:
    """``claim(limit=1)`` latency: empty queue, then ``throttled`` jobs of full keys ahead."""
    import qw

    qwd = _qw(driver)
    qwd.reset()
    _require_limits(qwd)
    app, _, limited = _tasks(qwd)
    client = qwd.client()
    problems: list[str] = []
    empty, err = _claim_samples(client, limited, samples, 0)
    if err:
        problems.append(f"empty queue: {err}")
    qwd.close()
    qwd.reset()
    client = qwd.client()
    t0 = time.perf_counter()
    shown = t0
    for start in range(0, throttled, 1000):
        batch = range(start, min(start + 1000, throttled))
        client.enqueue([limited.job(i, f"hot{_key(i, hot_keys)}") for i in batch])
        if time.perf_counter() - shown > 5:
            shown = time.perf_counter()
            _say(f"{qwd.id} throttled backlog: {batch.stop:,}/{throttled:,} enqueued")
    fill_s = time.perf_counter() - t0
    hot = {f"k:hot{h}" for h in range(hot_keys)}
    # Fill every hot key: LIMIT of its jobs running, held by claims never finished.
    held = client.claim(
        [QUEUE], worker="bench-holder", lease_s=HOLD_LEASE_S, limit=LIMIT * hot_keys + 1
    )
    per_key: dict[str | None, int] = defaultdict(int)
    for c in held:
        per_key[c.job.limit_key] += 1
    if set(per_key) != hot or any(v != LIMIT for v in per_key.values()):
        problems.append(
            f"holding the hot keys full: claim({LIMIT * hot_keys + 1}) took "
            f"{dict(per_key)}, expected {LIMIT} of each of {hot_keys} keys"
        )
    _say(f"{qwd.id}: {throttled:,} throttled jobs in {fill_s:.1f} s; {len(held)} held running")
    full, err = _claim_samples(client, limited, samples, throttled)
    if err:
        problems.append(f"full keys: {err}")
    states = _hot_states(client, hot)
    full_throttled = sum(1 for s in states.values() if s.throttled)
    queued = sum(s.queued for s in states.values())
    if full_throttled != hot_keys or queued != throttled - len(held):
        problems.append(
            f"full keys: the store shows {full_throttled}/{hot_keys} hot keys throttled, "
            f"{queued:,} queued (expected {throttled - len(held):,})"
        )
    # The same backlog paused by the operators: concurrency 0, nothing running.
    for key in sorted(hot):
        client.set_limit(key, qw.Limit(concurrency=0))
    for c in held:
        client.complete(c.lease)
    paused, err = _claim_samples(client, limited, samples, throttled + samples)
    if err:
        problems.append(f"paused keys: {err}")
    states = _hot_states(client, hot)
    paused_throttled = sum(1 for s in states.values() if s.throttled and s.overridden)
    if paused_throttled != hot_keys:
        problems.append(f"paused keys: the store shows {paused_throttled}/{hot_keys} paused")
    app.close()
    qwd.close()
    qwd.reset()
    e50, f50, p50 = _ms(empty, 50), _ms(full, 50), _ms(paused, 50)
    result: dict[str, Any] = {
        "throttled": throttled,
        "hot_keys": hot_keys,
        "held": len(held),
        "fill_s": fill_s,
        "samples": {"empty": len(empty), "full": len(full), "paused": len(paused)},
        "empty_p50_ms": e50,
        "empty_p99_ms": _ms(empty, 99),
        "full_p50_ms": f50,
        "full_p99_ms": _ms(full, 99),
        "paused_p50_ms": p50,
        "paused_p99_ms": _ms(paused, 99),
        "ratio_full_p50": f50 / e50 if e50 > 0 else float("nan"),
        "ratio_paused_p50": p50 / e50 if e50 > 0 else float("nan"),
        "ok": not problems,
        "problems": problems,
    }
    _say(
        f"{qwd.id} claim p50: empty {e50:.2f} ms; {throttled:,} throttled ahead: full keys "
        f"{f50:.2f} ms, paused keys {p50:.2f} ms"
    )
    if problems:
        raise RuntimeError(f"limits claim check failed: {'; '.join(problems)}")
    return result


def run(driver: Driver, phase: str, spec: Mapping[str, Any], deadline: float) -> dict[str, Any]:
    """One of the phase's parts, as :mod:`bench.phase` runs it."""
    if phase == "limits_check":
        return capability(driver)
    if phase == "limits_drain":
        limit = spec.get("limit")
        return drain(
            driver,
            int(spec["n"]),
            int(spec["concurrency"]),
            deadline,
            keys=int(spec["keys"]),
            limit=None if limit is None else int(limit),
        )
    if phase == "limits_claim":
        return claim_latency(
            driver, int(spec["throttled"]), int(spec["samples"]), hot_keys=int(spec["hot_keys"])
        )
    raise ValueError(f"unknown phase {phase!r}")


# -- the report ----------------------------------------------------------------


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def failures(entry: Mapping[str, Any]) -> list[str]:
    """The limits phase's failed parts of one system (skips are not failures)."""
    lim = entry.get("limits") or {}
    out = []
    for c, pair in (lim.get("drains") or {}).items():
        for kind in ("unlimited", "limited"):
            phase = pair.get(kind)
            if phase and not phase.get("ok") and not phase.get("unsupported"):
                out.append(f"limits drain c={c} ({kind}): {phase.get('error')}")
    claim = lim.get("claim")
    if claim and not claim.get("ok") and not claim.get("unsupported"):
        out.append(f"limits claim latency: {claim.get('error')}")
    return out


def _goal_c(drains: Mapping[str, Any]) -> str | None:
    cs = sorted(int(c) for c in drains)
    if not cs:
        return None
    return str(GOAL_CONCURRENCY if GOAL_CONCURRENCY in cs else cs[-1])


def goals(systems: Mapping[str, Any], stores: Iterable[str]) -> list[dict[str, str]]:
    """Per store: the limited drain against the unlimited one; claim latency, full and paused."""
    out: list[dict[str, str]] = []
    for store in stores:
        entry = systems.get(f"qw-{store}")
        if not entry or entry.get("status") != "ran" or "limits" not in entry:
            continue
        lim = entry["limits"]
        drain_goal = (
            f"drain on {store}, limit {LIMIT}/key on 1,000 keys: ≥ {DRAIN_RATIO:g}x unlimited"
        )
        claim_goal = (
            f"claim latency on {store}, throttled backlog ahead: ≤ {CLAIM_FACTOR:g}x empty (p50)"
        )
        if lim.get("skipped"):
            for goal in (drain_goal, claim_goal):
                out.append({"goal": goal, "value": f"skipped: {lim['skipped']}", "status": "SKIP"})
            continue
        drains = lim.get("drains") or {}
        c = _goal_c(drains)
        if c is not None:
            pair = drains[c]
            free, kept = phase_result(pair.get("unlimited")), phase_result(pair.get("limited"))
            goal = f"{drain_goal} (c={c})"
            if kept is None:
                err = _first_line((pair.get("limited") or {}).get("error"))
                out.append(
                    {"goal": goal, "value": f"limited drain failed: {err}", "status": "FAIL"}
                )
            elif free is None:
                err = _first_line((pair.get("unlimited") or {}).get("error"))
                out.append(
                    {"goal": goal, "value": f"unlimited drain failed: {err}", "status": "FAIL"}
                )
            else:
                ratio = kept["jobs_per_s"] / free["jobs_per_s"]
                out.append(
                    {
                        "goal": goal,
                        "value": f"{kept['jobs_per_s']:,.0f} vs {free['jobs_per_s']:,.0f} "
                        f"jobs/s: {ratio:.2f}x; most running per key {kept['max_overlap']} "
                        f"(bodies), {kept['sampled_max_running']} (store, "
                        f"{kept['samples']} samples)",
                        "status": "PASS" if ratio >= DRAIN_RATIO else "FAIL",
                    }
                )
        claim = lim.get("claim")
        if claim is not None:
            r = phase_result(claim)
            if r is None:
                out.append(
                    {
                        "goal": claim_goal,
                        "value": f"claim phase failed: {_first_line(claim.get('error'))}",
                        "status": "FAIL",
                    }
                )
                continue
            for case, what in (("full", "keys full (held claims)"), ("paused", "keys paused")):
                ratio = r[f"ratio_{case}_p50"]
                out.append(
                    {
                        "goal": f"claim latency on {store}, {r['throttled']:,} throttled jobs "
                        f"ahead, {what}: ≤ {CLAIM_FACTOR:g}x empty (p50)",
                        "value": f"{r[f'{case}_p50_ms']:.2f} ms vs {r['empty_p50_ms']:.2f} ms: "
                        f"{ratio:.2f}x",
                        "status": "PASS" if ratio <= CLAIM_FACTOR else "FAIL",
                    }
                )
    return out


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def sections(data: Mapping[str, Any], ids: Iterable[str]) -> list[str]:
    """The report's flow-control section: the drains per concurrency, claim latency, skips."""
    systems = data["systems"]
    rows = [d for d in ids if "limits" in systems[d]]
    if not rows:
        return []
    sizes = data.get("limits_plan") or {}
    lines = [
        "",
        "## Flow control: a concurrency limit per key (qw)",
        "",
        f"Drains of {sizes.get('n', 0):,} no-op jobs spread round-robin over "
        f"{sizes.get('keys', KEYS):,} limit keys, each limited to {LIMIT} running "
        '(`@app.task(limit_key="k:{key}", concurrency=2)`), against the same task without a '
        "limit, drained just before on the same store at the same concurrency. A drain passes "
        "when exactly N jobs ran once and no key ever had more than its limit running: from "
        "the task bodies' start and end (a body lies inside its job's running span) and from "
        f'the store\'s running jobs per key (`list_jobs(status="running")` every {SAMPLE_S:g} s '
        f"during both drains). Goal at c={GOAL_CONCURRENCY}: limited ≥ {DRAIN_RATIO:g}x "
        "unlimited.",
        "",
        "| store | c | unlimited jobs/s | limited jobs/s | ratio | most running per key: "
        "bodies / store (samples) | exactly N once |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    claims: list[tuple[str, dict[str, Any]]] = []
    skipped: list[tuple[str, str]] = []
    for d in rows:
        lim = systems[d]["limits"]
        store = d.partition("-")[2]
        if lim.get("skipped"):
            skipped.append((store, lim["skipped"]))
            continue
        for c, pair in sorted((lim.get("drains") or {}).items(), key=lambda kv: int(kv[0])):
            free, kept = phase_result(pair.get("unlimited")), phase_result(pair.get("limited"))
            ratio = f"{kept['jobs_per_s'] / free['jobs_per_s']:.2f}x" if free and kept else "-"
            if kept:
                most = f"{kept['max_overlap']} / {kept['sampled_max_running']} ({kept['samples']})"
                once = f"yes ({kept['ran']:,} ran, store {kept['store_succeeded']})"
            else:
                most = "-"
                once = "NO: " + _first_line((pair.get("limited") or {}).get("error"))
            lines.append(
                f"| {store} | {c} | {_fmt(free['jobs_per_s']) if free else 'failed'} | "
                f"{_fmt(kept['jobs_per_s']) if kept else 'failed'} | {ratio} | {most} | {once} |"
            )
        if lim.get("claim") is not None:
            claims.append((store, lim["claim"]))
    if claims:
        lines += [
            "",
            "### `claim(limit=1)` latency with throttled jobs queued ahead",
            "",
            "As the backlog phase measures it (a claimable job enqueued, claimed, completed; "
            "one at a time), on an empty queue, then with the throttled backlog ahead of it "
            f"(FIFO, same priority) on {sizes.get('hot_keys', HOT_KEYS)} keys: first full, "
            f"{LIMIT} jobs of each held running by claims never finished; then paused by the "
            "operators (`set_limit(key, Limit(concurrency=0))`), those claims completed. "
            "Every claim must hand out the claimable job.",
            "",
            "| store | throttled | empty p50 / p99 ms | full keys p50 / p99 ms | ratio | "
            "paused keys p50 / p99 ms | ratio | fill |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for store, phase in claims:
            r = phase_result(phase)
            if r is None:
                lines.append(f"| {store} | | failed: {_first_line(phase.get('error'))} | | | | | |")
                continue
            lines.append(
                f"| {store} | {r['throttled']:,} | {r['empty_p50_ms']:.2f} / "
                f"{r['empty_p99_ms']:.2f} | {r['full_p50_ms']:.2f} / {r['full_p99_ms']:.2f} | "
                f"{r['ratio_full_p50']:.2f}x | {r['paused_p50_ms']:.2f} / "
                f"{r['paused_p99_ms']:.2f} | {r['ratio_paused_p50']:.2f}x | {r['fill_s']:.0f} s |"
            )
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {store}: {why}" for store, why in skipped]
    return lines
