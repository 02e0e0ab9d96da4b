"""From a run's data to the goals, a Markdown report, a chart and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import aenqueue, bare, limits, plugins
from bench.tables import fmt, phase_result

__all__ = ["AT_LEAST_ONCE", "best_drain", "best_flows", "failures", "goals", "markdown", "write"]

STORES = ("sqlite", "postgres", "redis", "mongodb")
#: Wake-up p50 targets per store (ms); p99 target for all of them (issue 16).
WAKE_P50_MS = {"postgres": 2.0, "redis": 1.0}
WAKE_P99_MS = 10.0
#: qw's best drain against the fastest at-least-once peer's on the same store.
DRAIN_FACTOR = 3.0
#: qw's best drain against the bare-store cycle (bench/bare.py) on the same store.
BARE_FRACTION = 0.5
#: Whether a job whose worker dies mid-run is run again without an operator, with
#: each system's defaults (bench/README.md cites each one's docs and code).
AT_LEAST_ONCE = {
    "qw": True,  # lease expiry: another worker claims the job again
    "pgqueuer": True,  # a picked job whose heartbeat is 30 s stale is picked again
    "dramatiq": True,  # acks after the actor ran; a dead worker's unacked messages requeue
    "procrastinate": False,  # a dead worker's job stays `doing` until retried by hand
    "rq": False,  # an abandoned job goes to the failed registry unless it has retries left
    "saq": False,  # a swept job is retried only with retries > 1 (default 1)
    "huey": False,  # the consumer pops a task before running it
}
BACKLOG_FACTOR = 2.0
#: Workflow goals: a step costs at most this many plain jobs (same store, same
#: concurrency); qw's steps/s at least this many times the fastest peer's; a
#: chain's step latency p50 at most this many plain wake-ups (p50, same store).
STEP_OVERHEAD_FACTOR = 1.5
FLOWS_FACTOR = 3.0
CHAIN_FACTOR = 2.0


def _split(driver_id: str) -> tuple[str, str]:
    system, _, store = driver_id.partition("-")
    return system, store


def _label(label: str) -> str:
    """A drain setting's label for a table (a bare concurrency reads ``c=4``)."""
    return f"c={label}" if label.isdigit() else label


def best_drain(entry: dict[str, Any]) -> tuple[float, str] | None:
    """The highest verified drain rate of a system, and its setting's label."""
    best: tuple[float, str] | None = None
    for label, phase in (entry.get("drain") or {}).items():
        r = phase_result(phase)
        if r and r.get("exactly_once") and (best is None or r["jobs_per_s"] > best[0]):
            best = (float(r["jobs_per_s"]), _label(str(label)))
    return best


def delivery(system: str) -> str:
    """``at-least-once`` or ``at-most-once`` (a worker dying mid-job), with defaults."""
    return "at-least-once" if AT_LEAST_ONCE.get(system, False) else "at-most-once"


def fastest_peer(
    systems: dict[str, Any], store: str, *, at_least_once: bool
) -> tuple[float, str, str] | None:
    """The best drain of a peer on ``store`` (at-least-once ones only, if asked).

    Returns (jobs/s, setting label, system id).
    """
    rivals = [
        (b[0], b[1], d)
        for d, e in systems.items()
        if _split(d)[1] == store
        and _split(d)[0] != "qw"
        and (not at_least_once or AT_LEAST_ONCE.get(_split(d)[0], False))
        and (b := best_drain(e))
    ]
    return max(rivals) if rivals else None


def best_bare(entry: dict[str, Any]) -> tuple[float, str] | None:
    """The bare-store cycle of a qw entry (its fastest verified run), or None."""
    return bare.best(phase_result(entry.get("bare")))


def best_flows(entry: dict[str, Any]) -> tuple[float, int] | None:
    """The highest verified steps/s of the workflows of 10 steps, and its concurrency."""
    best: tuple[float, int] | None = None
    for c, phase in ((entry.get("workflows") or {}).get("flows") or {}).items():
        r = phase_result(phase)
        if r and r.get("ok") and (best is None or r["steps_per_s"] > best[0]):
            best = (float(r["steps_per_s"]), int(c))
    return best


def failures(entry: dict[str, Any]) -> list[str]:
    out = []
    if entry.get("status") == "failed":
        out.append(f"load: {entry.get('error')}")
    for name in ("enqueue", "wakeup", "backlog"):
        phase = entry.get(name)
        if phase and not phase.get("ok") and not phase.get("unsupported"):
            out.append(f"{name}: {phase.get('error')}")
    for c, phase in (entry.get("drain") or {}).items():
        if not phase.get("ok"):
            out.append(f"drain {_label(c)}: {phase.get('error')}")
    phase = entry.get("bare")
    if phase and not phase.get("ok"):
        out.append(f"bare cycle: {phase.get('error')}")
    flows = entry.get("workflows") or {}
    for c, phase in (flows.get("flows") or {}).items():
        if not phase.get("ok"):
            out.append(f"workflows of 10 steps c={c}: {phase.get('error')}")
    for name in ("fanout", "chain"):
        phase = flows.get(name)
        if phase and not phase.get("ok"):
            out.append(f"{'fan-out' if name == 'fanout' else name}: {phase.get('error')}")
    out += limits.failures(entry)
    out += aenqueue.failures(entry)
    out += plugins.failures(entry)
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def goals(data: dict[str, Any]) -> list[dict[str, str]]:
    systems: dict[str, Any] = data["systems"]
    out: list[dict[str, str]] = []
    out += drain_goals(systems)
    for store, p50_target in WAKE_P50_MS.items():
        qw = systems.get(f"qw-{store}")
        # A skipped wake-up phase (`--skip wakeup`) has no goal to judge.
        if qw is None or qw.get("status") != "ran" or qw.get("wakeup") is None:
            continue
        r = phase_result(qw.get("wakeup"))
        goal = f"wake-up on {store}: p50 ≤ {p50_target:g} ms, p99 ≤ {WAKE_P99_MS:g} ms"
        if r is None:
            out.append({"goal": goal, "value": "wake-up phase failed", "status": "FAIL"})
            continue
        ok = r["p50_ms"] <= p50_target and r["p99_ms"] <= WAKE_P99_MS
        out.append(
            {
                "goal": goal,
                "value": f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms",
                "status": _verdict(ok),
            }
        )
    out += enqueue_goals(systems)
    for store in STORES:
        qw = systems.get(f"qw-{store}")
        if qw is None or qw.get("status") != "ran" or "backlog" not in qw:
            continue
        r = phase_result(qw.get("backlog"))
        if r is None:
            out.append(
                {
                    "goal": f"claim latency on {store} with a backlog ≤ {BACKLOG_FACTOR:g}x empty",
                    "value": "backlog phase failed",
                    "status": "FAIL",
                }
            )
            continue
        out.append(
            {
                "goal": f"claim latency on {store}, {r['backlog']:,} queued ≤ "
                f"{BACKLOG_FACTOR:g}x empty (p50)",
                "value": f"{r['backlog_p50_ms']:.2f} ms vs {r['empty_p50_ms']:.2f} ms: "
                f"{r['ratio_p50']:.2f}x",
                "status": _verdict(r["ratio_p50"] <= BACKLOG_FACTOR),
            }
        )
    out += workflow_goals(systems)
    out += limits.goals(systems, STORES)
    out += aenqueue.goals(systems)
    out += plugins.goals(systems)
    return out


def _single_enqueue(entry: dict[str, Any]) -> float | None:
    r = phase_result(entry.get("enqueue"))
    single = (r or {}).get("single")
    return float(single["jobs_per_s"]) if single and single["supported"] else None


def enqueue_goals(systems: dict[str, Any]) -> list[dict[str, str]]:
    """qw's single-call enqueue rate against the fastest peer's on the same store."""
    out: list[dict[str, str]] = []
    for store in STORES:
        qw = systems.get(f"qw-{store}")
        mine = None if qw is None else _single_enqueue(qw)
        peers = [
            (rate, d)
            for d, entry in systems.items()
            if not d.startswith("qw-") and _split(d)[1] == store
            for rate in [_single_enqueue(entry)]
            if rate is not None
        ]
        if mine is None or not peers:
            continue
        rate, peer = max(peers)
        out.append(
            {
                "goal": f"single-call enqueue on {store}: qw ≥ fastest peer",
                "value": f"qw {mine:,.0f}/s vs {peer} {rate:,.0f}/s: {mine / rate:.2f}x",
                "status": _verdict(mine >= rate),
            }
        )
    return out


def drain_goals(systems: dict[str, Any]) -> list[dict[str, str]]:
    """qw's best drain per store against the fastest at-least-once peer (the goal), the
    fastest peer of any delivery (shown, no verdict), and the bare-store cycle."""
    out: list[dict[str, str]] = []
    for store in STORES:
        qw = systems.get(f"qw-{store}")
        if qw is None or qw.get("status") != "ran" or qw.get("drain") is None:
            continue
        mine = best_drain(qw)
        strict = fastest_peer(systems, store, at_least_once=True)
        anyone = fastest_peer(systems, store, at_least_once=False)
        rows: list[tuple[str, tuple[float, str, str] | None, bool]] = [
            (f"drain on {store}: qw ≥ {DRAIN_FACTOR:g}x fastest at-least-once peer", strict, True)
        ]
        if anyone is not None and anyone != strict:
            rows.append((f"drain on {store}: qw vs fastest peer of any delivery", anyone, False))
        for goal, peer, judged in rows:
            if peer is None:
                continue
            if mine is None:
                out.append({"goal": goal, "value": "qw drain failed", "status": "FAIL"})
                continue
            ratio = mine[0] / peer[0]
            out.append(
                {
                    "goal": goal,
                    "value": f"qw {mine[0]:,.0f}/s ({mine[1]}) vs {peer[2]} {peer[0]:,.0f}/s "
                    f"({peer[1]}, {delivery(_split(peer[2])[0])}): {ratio:.2f}x",
                    "status": _verdict(ratio >= DRAIN_FACTOR) if judged else "INFO",
                }
            )
        if qw.get("bare") is not None:
            goal = f"drain on {store}: qw ≥ {BARE_FRACTION:.0%} of the bare-store cycle"
            cycle = best_bare(qw)
            if cycle is None or mine is None:
                what = "bare cycle failed" if cycle is None else "qw drain failed"
                out.append({"goal": goal, "value": what, "status": "FAIL"})
                continue
            share = mine[0] / cycle[0]
            out.append(
                {
                    "goal": goal,
                    "value": f"qw {mine[0]:,.0f}/s ({mine[1]}) vs bare {cycle[0]:,.0f}/s "
                    f"({cycle[1]}): {share:.0%}",
                    "status": _verdict(share >= BARE_FRACTION),
                }
            )
    return out


def _flow_peers(systems: dict[str, Any]) -> list[tuple[float, int, str]]:
    return [
        (b[0], b[1], d)
        for d, e in systems.items()
        if _split(d)[0] != "qw" and (b := best_flows(e)) is not None
    ]


def workflow_goals(systems: dict[str, Any]) -> list[dict[str, str]]:
    """Step overhead vs plain jobs, steps/s vs the fastest peer, chain latency vs wake-up."""
    out: list[dict[str, str]] = []
    peers = _flow_peers(systems)
    for store in STORES:
        qw = systems.get(f"qw-{store}")
        if qw is None or qw.get("status") != "ran" or "workflows" not in qw:
            continue
        flows = qw["workflows"]
        mine = best_flows(qw)
        goal = (
            f"workflow step on {store}: ≤ {STEP_OVERHEAD_FACTOR:g}x a plain job's time "
            "(same concurrency)"
        )
        r = phase_result((flows.get("flows") or {}).get(str(mine[1]))) if mine else None
        plain = r.get("plain") if r else None
        if mine is None or not plain:
            out.append({"goal": goal, "value": "workflows phase failed", "status": "FAIL"})
        else:
            ratio = plain["jobs_per_s"] / mine[0]
            out.append(
                {
                    "goal": goal,
                    "value": f"{mine[0]:,.0f} steps/s vs {plain['jobs_per_s']:,.0f} plain "
                    f"jobs/s (c={mine[1]}): a step costs {ratio:.2f}x a job",
                    "status": _verdict(ratio <= STEP_OVERHEAD_FACTOR),
                }
            )
        if peers:
            rate, peer_c, peer = max(peers)
            goal = (
                f"workflow steps/s on {store}: qw ≥ {FLOWS_FACTOR:g}x the fastest workflow peer "
                "(any store)"
            )
            if mine is None:
                out.append({"goal": goal, "value": "workflows phase failed", "status": "FAIL"})
            else:
                ratio = mine[0] / rate
                out.append(
                    {
                        "goal": goal,
                        "value": f"qw {mine[0]:,.0f}/s (c={mine[1]}) vs {peer} {rate:,.0f}/s "
                        f"(c={peer_c}): {ratio:.2f}x",
                        "status": _verdict(ratio >= FLOWS_FACTOR),
                    }
                )
        goal = f"chain step latency on {store}: p50 ≤ {CHAIN_FACTOR:g}x plain wake-up p50"
        chain = phase_result(flows.get("chain"))
        wake = phase_result(qw.get("wakeup"))
        latency = (chain or {}).get("commit_to_start")
        if chain is None or not latency:
            out.append({"goal": goal, "value": "chain phase failed", "status": "FAIL"})
        elif wake is None:
            out.append(
                {
                    "goal": goal,
                    "value": f"chain p50 {latency['p50_ms']:.2f} ms; no wake-up figure "
                    "(phase skipped or failed)",
                    "status": "FAIL",
                }
            )
        else:
            ratio = latency["p50_ms"] / wake["p50_ms"]
            out.append(
                {
                    "goal": goal,
                    "value": f"commit to start p50 {latency['p50_ms']:.2f} ms vs wake-up p50 "
                    f"{wake['p50_ms']:.2f} ms: {ratio:.2f}x",
                    "status": _verdict(ratio <= CHAIN_FACTOR),
                }
            )
    return out


def drain_sections(systems: dict[str, Any], plain: list[str]) -> list[str]:
    """The drain table (a row per setting, best marked), qw against its peers and the bare cycle."""
    lines = [
        "",
        "## Drain throughput (jobs/s, first task start to last terminal write)",
        "",
        "A row per setting of each system's sweep (`NpxC`: N worker processes of C each; "
        "Huey's `threadxW`/`processxW`: its worker type and `-w`; `c=C`: one process). In "
        "parentheses: the rate after the first 5% of jobs started, which leaves out worker "
        "start-up. The goals use the first figure of each system's best row (**best**). "
        "Delivery: what happens to a job whose worker dies mid-run, with the system's defaults.",
        "",
        "| system | store | setting | jobs/s | delivery | exactly N once |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for d in plain:
        e = systems[d]
        if e.get("drain") is None:
            continue
        system, store = _split(d)
        b = best_drain(e)
        for label, phase in e["drain"].items():
            r = phase_result(phase)
            if r:
                steady = r.get("steady_jobs_per_s")
                rate = fmt(r["jobs_per_s"]) + (f" ({fmt(steady)})" if steady else "")
                store_says = r["store_succeeded"]
                check = (
                    f"{'yes' if r['exactly_once'] else 'NO'} ({r['ran']:,} ran, "
                    f"{r['unique']:,} unique, store "
                    f"{'keeps no record' if store_says is None else store_says})"
                )
            else:
                rate, check = "failed", str(phase.get("error", ""))[:120]
            name = _label(label)
            if b is not None and b[1] == name:
                name, rate = f"**{name}** (best)", f"**{rate}**"
            lines.append(f"| {system} | {store} | {name} | {rate} | {delivery(system)} | {check} |")

    lines += [
        "",
        "## qw / its peers / the bare-store cycle, per store (each at its best setting)",
        "",
        "| store | qw | fastest at-least-once peer | ratio | fastest peer (any) | ratio | "
        "bare cycle | qw / bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for store in STORES:
        qw = systems.get(f"qw-{store}")
        if not qw or qw.get("status") != "ran" or qw.get("drain") is None:
            continue
        mine = best_drain(qw)
        cells = [f"{fmt(mine[0])} ({mine[1]})" if mine else "failed"]
        for strict in (True, False):
            peer = fastest_peer(systems, store, at_least_once=strict)
            if peer is None:
                cells += ["none on this store", "-"]
            else:
                cells.append(f"{peer[2]} {fmt(peer[0])} ({peer[1]})")
                cells.append(f"{mine[0] / peer[0]:.2f}x" if mine else "-")
        cycle = best_bare(qw)
        cells.append(f"{fmt(cycle[0])} ({cycle[1]})" if cycle else "-")
        cells.append(f"{mine[0] / cycle[0]:.0%}" if mine and cycle else "-")
        lines.append(f"| {store} | " + " | ".join(cells) + " |")

    bare_rows = [d for d in plain if systems[d].get("bare") is not None]
    if bare_rows:
        lines += [
            "",
            "## The bare-store cycle (jobs/s, no task run)",
            "",
            "The plain claim → finish loop of the store with qw's durability (bench/bare.py, "
            "bench/README.md): claim a batch of B (PostgreSQL: `UPDATE … WHERE id IN (SELECT … "
            "FOR UPDATE SKIP LOCKED LIMIT B) RETURNING`, committed; Redis: one Lua script "
            "popping B ids and writing their state), then mark the batch done in one more "
            "commit (script); from the first claim to the last commit, by C client processes.",
            "",
            "| store | setting | jobs/s | exactly N once |",
            "| --- | --- | ---: | --- |",
        ]
        for d in bare_rows:
            phase = systems[d]["bare"]
            r = phase_result(phase)
            store = _split(d)[1]
            if r is None:
                lines.append(f"| {store} | failed: {str(phase.get('error'))[:120]} | | |")
                continue
            for label, run in r["runs"].items():
                rate = fmt(run["jobs_per_s"])
                name = label
                if label == r.get("best"):
                    name, rate = f"**{label}** (best)", f"**{rate}**"
                lines.append(
                    f"| {store} | {name} | {rate} | {'yes' if run['exactly_once'] else 'NO'} "
                    f"({run['finished']:,} finished, {run['unique']:,} unique, store "
                    f"{run['store_done']:,} done) |"
                )
    return lines


def _ordered(systems: dict[str, Any]) -> list[str]:
    def key(d: str) -> tuple[int, int, str]:
        system, store = _split(d)
        return (STORES.index(store) if store in STORES else 9, 0 if system == "qw" else 1, d)

    return sorted(systems, key=key)


def markdown(data: dict[str, Any]) -> str:
    plan, m, systems = data["plan"], data["machine"], data["systems"]
    ids = _ordered(systems)
    ran = [d for d in ids if systems[d].get("status") == "ran"]
    # Workflow-only peers have no rows in the plain-job tables.
    plain = [d for d in ran if systems[d].get("plain_jobs", True)]
    lines = [f"# qw benchmark: `{plan['name']}`", ""]
    lines.append(
        f"Run {data['started']}, {data['duration_s']:,.0f} s. "
        f"Drains: {plan['drain_n']:,} no-op jobs pre-enqueued, "
        + (
            "each system's sweep of settings"
            if plan.get("sweep", "basic") == "full"
            else f"concurrency {', '.join(map(str, plan['concurrencies']))}"
        )
        + ". Wake-up: "
        f"{plan['wake_samples']} jobs one at a time, gaps uniform in "
        f"{plan['wake_gap_ms'][0]:g}-{plan['wake_gap_ms'][1]:g} ms, workers at concurrency "
        f"{plan['wake_concurrency']}. Backlog: {plan['backlog']:,} queued jobs."
        + (
            f" Workflows: a chain of {plan['wf_chain']:,} steps, a fan-out of "
            f"{plan['wf_fanout']:,} steps + a fan-in, {plan['wf_flows']:,} workflows of 10 "
            f"steps at concurrency {', '.join(map(str, plan['wf_concurrencies']))}."
            if any("workflows" in systems[d] for d in ids)
            else ""
        )
    )
    lines += ["", "## Machine", "", "| | |", "| --- | --- |"]
    lines.append(f"| CPU | {m['cpu_count']} x {m['cpu_model']} |")
    lines.append(f"| memory | {m['memory_gib']} GiB |")
    lines.append(f"| OS | {m['platform']} |")
    lines.append(f"| Python | {m['python']} |")
    lines.append(f"| PostgreSQL | {m['postgresql']} |")
    lines.append(f"| Redis | {m['redis']} |")
    lines.append(
        f"| load average (1/5/15 min) | start {m['load_at_start']}, end {m.get('load_at_end')} |"
    )
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines.append(f"| packages | {pk} |")
    if m["load_at_start"][0] > 0.5 * (m["cpu_count"] or 1):
        lines += [
            "",
            f"**Warning:** the machine was busy (load {m['load_at_start'][0]} on "
            f"{m['cpu_count']} CPUs) when the run started: these numbers are noisy.",
        ]

    lines += ["", "## Goals", "", "| goal | measured | verdict |", "| --- | --- | --- |"]
    for g in data["goals"]:
        lines.append(f"| {g['goal']} | {g['value']} | **{g['status']}** |")

    lines += drain_sections(systems, plain)
    lines += [
        "",
        "## Enqueue (jobs/s)",
        "",
        "| system | store | single calls | bulk 100 | bulk 1,000 |",
    ]
    lines.append("| --- | --- | ---: | ---: | ---: |")
    for d in plain:
        phase = systems[d].get("enqueue")
        if phase is None:
            continue  # skipped
        r = phase_result(phase)
        cells = []
        for mode in ("single", "bulk100", "bulk1000"):
            x = (r or {}).get(mode)
            cells.append(
                "failed"
                if r is None
                else (fmt(x["jobs_per_s"]) if x and x["supported"] else "no bulk API")
            )
        system, store = _split(d)
        lines.append(f"| {system} | {store} | " + " | ".join(cells) + " |")

    lines += ["", "## Wake-up latency (enqueue call to task start, idle workers)", ""]
    lines += [
        "| system | store | p50 ms | p99 ms | max ms | seen |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for d in plain:
        phase = systems[d].get("wakeup")
        r = phase_result(phase)
        system, store = _split(d)
        if r:
            lines.append(
                f"| {system} | {store} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
                f"{fmt(r['max_ms'], 1)} | {r['seen']}/{r['samples']} |"
            )
        elif phase:
            lines.append(f"| {system} | {store} | failed | | | |")

    backlog_rows = [d for d in ran if phase_result(systems[d].get("backlog"))]
    if backlog_rows:
        lines += ["", "## qw claim latency, `claim(limit=1)`: empty queue vs backlog", ""]
        lines += [
            "| store | backlog | empty p50 / p99 ms | backlog p50 / p99 ms | ratio (p50) | fill |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for d in backlog_rows:
            r = phase_result(systems[d]["backlog"])
            assert r is not None
            lines.append(
                f"| {_split(d)[1]} | {r['backlog']:,} | "
                f"{r['empty_p50_ms']:.2f} / {r['empty_p99_ms']:.2f} | "
                f"{r['backlog_p50_ms']:.2f} / {r['backlog_p99_ms']:.2f} | {r['ratio_p50']:.2f}x | "
                f"{r['fill_s']:.0f} s |"
            )

    lines += workflow_sections(data, ran)
    lines += limits.sections(data, ran)
    lines += aenqueue.sections(data, ran)
    lines += plugins.sections(data, ran)

    lines += ["", "## Settings used", ""]
    for d in ids:
        e = systems[d]
        lines.append(
            f"- **{d}** {e.get('version', '')}"
            + (f" — {e['status']}: {e['error']}" if e.get("error") else "")
        )
        for c, settings in (e.get("settings") or {}).items():
            text = "; ".join(f"{k}: {v}" for k, v in settings.items())
            lines.append(f"  - {_label(c)}: {text}")
        if e.get("workflows"):
            for c, settings in (e.get("flow_settings") or {}).items():
                text = "; ".join(f"{k}: {v}" for k, v in settings.items())
                lines.append(f"  - workflows, c={c}: {text}")

    failed = {d: failures(systems[d]) for d in ids if failures(systems[d])}
    if failed:
        lines += ["", "## Failures", ""]
        for d, msgs in failed.items():
            for msg in msgs:
                first = str(msg).strip().splitlines()[0] if msg else ""
                lines.append(f"- {d}: {first[:300]}")
    lines += [
        "",
        "## Method",
        "",
        "Each phase runs in its own process with a deadline; peers run their own worker "
        "machinery as subprocesses, from PyPI, against the same PostgreSQL and Redis (their own "
        "databases: `qw_bench*`, Redis DB from `QW_BENCH_REDIS_URL`, flushed per phase). A no-op "
        "task appends its job's index and a timestamp to a per-process file; a drain passes when "
        "exactly N records with N distinct indexes exist and the store agrees (where it keeps a "
        "record of successes). Throughput runs from the first task start to the last terminal "
        "write (qw: the worker's commit hook; drain-mode peers: their exit after flushing; others: "
        "the store polled every 5 ms). Workflow phases: every step notes its start the same way; "
        "a phase passes when every expected step ran exactly once and every fan-in got every "
        "result (the fan-in step checks its inputs, the harness its output). See bench/README.md.",
        "",
    ]
    return "\n".join(lines)


#: What each system's shapes are, stated under the workflow tables.
SHAPES = {
    "qw": "qw: `app.workflow()`; a chain is `wf.add(step, i, previous_step)`, the fan-out "
    "`wf.map(step, range(n))` and a fan-in taking that step list; each workflow is stored by "
    "one `create_workflow` call, and every step is a job the normal worker claims. Step "
    "latency is from the parent's `qw_job_finished` hook (after its terminal write and the "
    "settle that queues the child committed) to the child's first line.",
    "celery": "Celery canvas: `chain(...)`, a group followed by a task in a chain (a chord), "
    "`chord(group, callback)`. Celery publishes a chain's next task *before* it stores the "
    "parent's result, so its commit-to-start (from the `task_success` signal, sent after the "
    "result write) can be negative; done-to-start is the comparable figure.",
    "dbos": "DBOS: a chain is one workflow calling its steps in turn (no queue hop between "
    "steps: each step's output is checkpointed and the next runs in the same thread); a "
    "fan-out enqueues each step (`DBOS.enqueue_workflow(queue, step, ...)`) and waits on "
    "every handle; DBOS has no hook after a terminal write, so ends are polled from "
    "`workflow_status` every 5 ms and commit-to-start is not measured.",
}


def _steps_cell(r: dict[str, Any] | None, phase: dict[str, Any] | None) -> str:
    if r is None:
        return "failed" if phase else "-"
    cell = fmt(r["steps_per_s"])
    if r.get("plain"):
        cell += f" (plain {fmt(r['plain']['jobs_per_s'])})"
    return cell


def workflow_sections(data: dict[str, Any], ran: list[str]) -> list[str]:
    """The workflow tables: 10-step workflows per concurrency, the fan-out, the chain."""
    plan, systems = data["plan"], data["systems"]
    rows = [d for d in ran if systems[d].get("workflows")]
    if not rows:
        return []
    cs = [str(c) for c in plan["wf_concurrencies"]]
    lines = [
        "",
        f"## Workflows of 10 steps (steps/s; {plan['wf_flows']:,} workflows enqueued first)",
        "",
        "Each workflow: `a`; `b` and `c` take `a`'s result (a diamond) and `d` joins them; a "
        "map of five steps after `d`; `f` joins the five. From the first step's start to the "
        "last terminal write. qw in parentheses: a drain of as many plain no-op jobs on the same "
        "store at the same concurrency (the step-overhead goal divides the two). The peers run "
        "at no fewer workers than CPUs (Celery's default concurrency is the CPU count).",
        "",
        "| system | store | " + " | ".join(f"c={c}" for c in cs) + " | best | exactly once |",
        "| --- | --- | " + " | ".join("---:" for _ in cs) + " | ---: | --- |",
    ]
    for d in rows:
        flows = systems[d]["workflows"].get("flows") or {}
        cells, checks = [], []
        for c in cs:
            phase = flows.get(c)
            r = phase_result(phase)
            cells.append(_steps_cell(r, phase))
            if r:
                checks.append(
                    f"c={c}: {'yes' if r['ok'] else 'NO'} ({r['ran']:,} ran, {r['unique']:,} "
                    f"unique, {r['workflows_wrong']} wrong outputs, store "
                    f"{'-' if r['store_succeeded'] is None else r['store_succeeded']})"
                )
        b = best_flows(systems[d])
        system, store = _split(d)
        lines.append(
            f"| {system} | {store} | "
            + " | ".join(cells)
            + f" | {fmt(b[0]) if b else '-'} | {'; '.join(checks) or '-'} |"
        )

    lines += [
        "",
        f"## Fan-out of {plan['wf_fanout']:,} steps + one fan-in",
        "",
        "From just before the enqueue call to the fan-in's terminal write, idle workers at the "
        "concurrency of the system's best 10-step run. The fan-in fails unless it got every "
        "result, once.",
        "",
        "| system | store | c | total s | enqueue s | steps/s | exactly once, fan-in saw all |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for d in rows:
        phase = systems[d]["workflows"].get("fanout")
        r = phase_result(phase)
        system, store = _split(d)
        if r is None:
            lines.append(f"| {system} | {store} | | failed | | | |")
            continue
        lines.append(
            f"| {system} | {store} | {r['concurrency']} | {fmt(r['total_s'], 2)} | "
            f"{fmt(r['enqueue_s'], 2)} | {fmt(r['steps_per_s'])} | "
            f"{'yes' if r['ok'] else 'NO'} ({r['ran']:,} ran, {r['unique']:,} unique; fan-in "
            f"{r['output']}) |"
        )

    lines += [
        "",
        f"## Chain of {plan['wf_chain']:,} steps (per-step latency, ms)",
        "",
        "Idle workers at concurrency "
        f"{plan['wake_concurrency']} (as in the wake-up phase). Commit to start: the parent's "
        "terminal write reported committed, to the child's first line; done to start: the "
        "parent's last line to the child's first line. Same clock (one machine).",
        "",
        "| system | store | commit→start p50 / p99 | done→start p50 / p99 | plain wake-up p50 | "
        "total s | exactly once |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for d in rows:
        phase = systems[d]["workflows"].get("chain")
        r = phase_result(phase)
        system, store = _split(d)
        if r is None:
            lines.append(f"| {system} | {store} | failed | | | | |")
            continue
        c2s, d2s = r.get("commit_to_start"), r["done_to_start"]
        wake = phase_result(systems[d].get("wakeup"))
        lines.append(
            f"| {system} | {store} | "
            + (f"{fmt(c2s['p50_ms'], 2)} / {fmt(c2s['p99_ms'], 2)}" if c2s else "not measured")
            + f" | {fmt(d2s['p50_ms'], 2)} / {fmt(d2s['p99_ms'], 2)} | "
            + (fmt(wake["p50_ms"], 2) if wake else "-")
            + f" | {fmt(r['total_s'], 2)} | {'yes' if r['ok'] else 'NO'} ({r['ran']:,} ran) |"
        )
    systems_here = dict.fromkeys(_split(d)[0] for d in rows)
    lines += ["", "How each system's shapes are written:", ""]
    lines += [f"- {SHAPES[s]}" for s in systems_here if s in SHAPES]
    return lines


def chart(data: dict[str, Any], path: Path) -> bool:
    """A PNG of best drain rates and wake-up latencies; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = data["systems"]
    ids = [
        d
        for d in _ordered(systems)
        if systems[d].get("status") == "ran" and systems[d].get("plain_jobs", True)
    ]
    flow_ids = [
        d
        for d in _ordered(systems)
        if systems[d].get("status") == "ran" and systems[d].get("workflows")
    ]
    height = 0.45 * max(len(ids), 4) + 1.8
    if flow_ids:
        height += 0.45 * max(len(flow_ids), 4) + 1.2
        fig, grid = plt.subplots(2, 2, figsize=(13, height), squeeze=False)
        (ax1, ax2), (ax3, ax4) = grid
        _flow_chart(data, flow_ids, ax3, ax4)
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, height))
    drains = [(d, best_drain(systems[d])) for d in ids]
    labels = [
        f"{d} ({b[1]})" if b else f"{d} ({'failed' if systems[d].get('drain') else 'not run'})"
        for d, b in drains
    ]
    values = [b[0] if b else 0.0 for _, b in drains]
    colors = ["tab:blue" if _split(d)[0] == "qw" else "tab:gray" for d in ids]
    ax1.barh(labels, values, color=colors)
    ax1.invert_yaxis()
    ax1.set_xlabel("jobs/s (best setting)")
    ax1.set_title(f"Drain of {data['plan']['drain_n']:,} no-op jobs")
    for y, v in enumerate(values):
        ax1.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    p50, p99 = [], []
    for d in ids:
        r = phase_result(systems[d].get("wakeup"))
        p50.append(r["p50_ms"] if r else 0.0)
        p99.append(r["p99_ms"] if r else 0.0)
    ys = range(len(ids))
    ax2.barh([y - 0.2 for y in ys], p50, height=0.4, label="p50", color="tab:green")
    ax2.barh([y + 0.2 for y in ys], p99, height=0.4, label="p99", color="tab:orange")
    ax2.set_yticks(list(ys), ids)
    ax2.invert_yaxis()
    positive = [v for v in p50 + p99 if v > 0]
    if positive:
        ax2.set_xscale("log")
        ax2.set_xlim(left=min(positive) / 2)
    ax2.set_xlabel("ms, enqueue to task start (log scale)")
    ax2.set_title("Wake-up latency, idle workers")
    ax2.legend()
    m = data["machine"]
    fig.suptitle(
        f"qw bench '{data['plan']['name']}': {m['cpu_count']} x {m['cpu_model']}, "
        f"Python {m['python']}, PostgreSQL {m['postgresql']}, Redis {m['redis']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _flow_chart(data: dict[str, Any], ids: list[str], ax3: Any, ax4: Any) -> None:
    """Steps/s of the 10-step workflows, and the chain's step latency (log scales)."""
    systems, plan = data["systems"], data["plan"]
    best = [(d, best_flows(systems[d])) for d in ids]
    labels = [f"{d} (c={b[1]})" if b else f"{d} (failed)" for d, b in best]
    values = [b[0] if b else 0.0 for _, b in best]
    colors = ["tab:blue" if _split(d)[0] == "qw" else "tab:gray" for d in ids]
    ax3.barh(labels, values, color=colors)
    ax3.invert_yaxis()
    if any(v > 0 for v in values):
        ax3.set_xscale("log")
    ax3.set_xlabel("steps/s (best concurrency, log scale)")
    ax3.set_title(f"{plan['wf_flows']:,} workflows of 10 steps")
    for y, v in enumerate(values):
        ax3.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    commit, done = [], []
    for d in ids:
        r = phase_result((systems[d].get("workflows") or {}).get("chain")) or {}
        c2s, d2s = r.get("commit_to_start"), r.get("done_to_start")
        commit.append(c2s["p50_ms"] if c2s and c2s["p50_ms"] > 0 else 0.0)
        done.append(d2s["p50_ms"] if d2s and d2s["p50_ms"] > 0 else 0.0)
    ys = range(len(ids))
    ax4.barh([y - 0.2 for y in ys], commit, height=0.4, label="commit→start", color="tab:green")
    ax4.barh([y + 0.2 for y in ys], done, height=0.4, label="done→start", color="tab:orange")
    ax4.set_yticks(list(ys), ids)
    ax4.invert_yaxis()
    positive = [v for v in commit + done if v > 0]
    if positive:
        ax4.set_xscale("log")
        ax4.set_xlim(left=min(positive) / 2)
    ax4.set_xlabel("ms, p50 (log scale)")
    ax4.set_title(f"Chain of {plan['wf_chain']:,} steps: per-step latency")
    ax4.legend()


def write(data: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md, png = (out_dir / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    text = markdown(data)
    if chart(data, png):
        text += f"\n![{stem}]({png.name})\n"
        paths = [js, md, png]
    else:
        paths = [js, md]
    md.write_text(text)
    return paths
