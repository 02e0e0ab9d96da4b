"""The benchmark orchestrator: ``python -m bench.run [--quick] [options]``.

For every system (qw on each of its stores, and the peers), in one run on
one machine: enqueue rates, drains at each concurrency, wake-up latency and,
for qw, claim latency under a large backlog and what limits per key cost.
Every phase runs in a process of its own with a deadline, so a broken peer
is reported failed and the run goes on. Results go to
``bench/results/<plan>.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import bare, limits, machine, plugins, report
from bench.config import ROOT, SWEEPS, Plan, Stores, basic_sweep, full_plan, quick_plan
from bench.drivers import ALL, QW
from bench.spawn import run_in_group

__all__ = ["main"]

RESULTS = ROOT / "bench" / "results"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_phase(
    driver: str,
    phase: str,
    plan: Plan,
    workdir: Path,
    timeout: float,
    *,
    module: str = "bench.phase",
    **args: Any,
) -> dict[str, Any]:
    """Run one phase in its own process group; kill the group at ``timeout``.

    ``module`` is what runs it (``python -m MODULE phase SPEC`` for any but
    bench.phase, which takes SPEC alone).
    """
    spec = {
        "driver": driver,
        "phase": phase,
        "plan": asdict(plan),
        "workdir": str(workdir),
        "timeout": timeout,
        **args,
    }
    sub = [] if module == "bench.phase" else ["phase"]
    return run_in_group([module, *sub], spec, timeout)


def parse(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the smoke-run preset (a few minutes)")
    p.add_argument("--n", type=int, help="jobs per drain (default 20,000; quick 2,000)")
    p.add_argument("--concurrency", help="comma-separated, e.g. 1,4,16")
    p.add_argument("--backlog", type=int, help="queued jobs for the claim-latency phase")
    p.add_argument("--wake-samples", type=int, help="jobs in the wake-up phase")
    p.add_argument("--systems", help=f"comma-separated subset of: {', '.join(ALL)} (default: all)")
    p.add_argument(
        "--skip",
        default="",
        help="phases to skip: enqueue,aenqueue,drain,bare,wakeup,backlog,workflows,limits,plugins",
    )
    p.add_argument(
        "--sweep",
        choices=SWEEPS,
        help="drain settings: full (each system's sweep of processes x concurrency; the "
        "default) or basic (one process at --concurrency; the default of --quick)",
    )
    p.add_argument("--bare-n", type=int, help="jobs per bare-store cycle run (default 100,000)")
    p.add_argument(
        "--bare-batches", help="comma-separated claim batch sizes of the bare cycle (50,100,500)"
    )
    p.add_argument(
        "--bare-clients", help="comma-separated client processes of the bare cycle (1,2)"
    )
    p.add_argument("--aenqueue-n", type=int, help="jobs per async enqueue run (default 20,000)")
    p.add_argument(
        "--aenqueue-producers",
        help="comma-separated producer coroutines of the async enqueue runs (default 1,16,64)",
    )
    p.add_argument("--wf-chain", type=int, help="steps in the chain (default 1,000; quick 100)")
    p.add_argument(
        "--wf-fanout",
        type=int,
        help="parallel steps before the fan-in (default 10,000; quick 1,000)",
    )
    p.add_argument("--wf-flows", type=int, help="workflows of 10 steps (default 1,000; quick 100)")
    p.add_argument(
        "--wf-concurrency", help="comma-separated concurrencies of the workflows (default 1,2,4,16)"
    )
    p.add_argument(
        "--limits-n", type=int, help="jobs per drain of the limits phase (default: --n's)"
    )
    p.add_argument(
        "--limits-concurrency",
        help=f"comma-separated concurrencies of the limits drains (default: --concurrency's "
        f"and {limits.GOAL_CONCURRENCY})",
    )
    p.add_argument(
        "--limits-throttled",
        type=int,
        help="throttled jobs queued ahead in the limits claim latency (default 100,000; "
        "quick 10,000)",
    )
    p.add_argument(
        "--plugins-n", type=int, help="jobs per drain of the plugins phase (default 20,000)"
    )
    p.add_argument(
        "--plugins-concurrency",
        help="comma-separated concurrencies of the plugins drains (default 1,16; quick 4)",
    )
    p.add_argument(
        "--plugins-reps", type=int, help="rounds of every plugins config (default 5; quick 3)"
    )
    p.add_argument("--name", help="results file stem (default: the plan's name)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ns = p.parse_args(argv)
    plan = quick_plan() if ns.quick else full_plan()
    changes: dict[str, Any] = {}
    if ns.n:
        changes["drain_n"] = ns.n
    if ns.concurrency:
        changes["concurrencies"] = tuple(int(c) for c in ns.concurrency.split(","))
    if ns.sweep:
        changes["sweep"] = ns.sweep
    if ns.bare_n:
        changes["bare_n"] = ns.bare_n
    if ns.bare_batches:
        changes["bare_batches"] = tuple(int(b) for b in ns.bare_batches.split(","))
    if ns.bare_clients:
        changes["bare_clients"] = tuple(int(c) for c in ns.bare_clients.split(","))
    if ns.backlog:
        changes["backlog"] = ns.backlog
    if ns.wake_samples:
        changes["wake_samples"] = ns.wake_samples
    if ns.name:
        changes["name"] = ns.name
    for key in ("wf_chain", "wf_fanout", "wf_flows"):
        if getattr(ns, key):
            changes[key] = getattr(ns, key)
    if ns.aenqueue_n:
        changes["aenqueue_n"] = ns.aenqueue_n
    if ns.aenqueue_producers:
        changes["aenqueue_producers"] = tuple(int(p) for p in ns.aenqueue_producers.split(","))
    if ns.wf_concurrency:
        changes["wf_concurrencies"] = tuple(int(c) for c in ns.wf_concurrency.split(","))
    systems = tuple(s.strip() for s in ns.systems.split(",")) if ns.systems else tuple(ALL)
    unknown = [s for s in systems if s not in ALL]
    if unknown:
        p.error(f"unknown systems {unknown}; known: {ALL}")
    changes["systems"] = systems
    return replace(plan, **changes), ns


def limits_sizes(plan: Plan, ns: argparse.Namespace) -> limits.Sizes:
    """The limits phase's sizes from the plan and the ``--limits-*`` options."""
    cs = getattr(ns, "limits_concurrency", None)
    return limits.Sizes.of(
        plan,
        quick=bool(getattr(ns, "quick", False)),
        n=getattr(ns, "limits_n", None),
        throttled=getattr(ns, "limits_throttled", None),
        concurrencies=tuple(int(c) for c in cs.split(",")) if cs else None,
    )


def plugins_sizes(ns: argparse.Namespace) -> plugins.Sizes:
    """The plugins phase's sizes from the ``--plugins-*`` options."""
    cs = getattr(ns, "plugins_concurrency", None)
    return plugins.Sizes.of(
        quick=bool(getattr(ns, "quick", False)),
        n=getattr(ns, "plugins_n", None),
        concurrencies=tuple(int(c) for c in cs.split(",")) if cs else None,
        reps=getattr(ns, "plugins_reps", None),
    )


def run_plugins(driver: str, plan: Plan, workdir: Path, sizes: plugins.Sizes) -> dict[str, Any]:
    """The plugins phase: qw's drain with its plugins off, metrics, tracing, both."""

    def one(driver: str, phase: str, timeout: float, **args: Any) -> dict[str, Any]:
        return run_phase(driver, phase, plan, workdir, timeout, module="bench.plugins", **args)

    return plugins.run(driver, sizes, one, log)


def run_system(
    driver: str,
    plan: Plan,
    workdir: Path,
    skip: set[str],
    sizes: limits.Sizes | None = None,
    plugin_sizes: plugins.Sizes | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": driver}
    info = run_phase(driver, "info", plan, workdir, 60)
    if not info.get("ok"):
        entry["status"] = "failed"
        entry["error"] = info.get("error")
        log(f"{driver}: cannot load: {info.get('error')}")
        return entry
    details = info["result"]
    entry.update(version=details["version"], settings=details["settings"])
    entry["wake_settings"] = details["wake_settings"]
    entry["flow_settings"] = details.get("flow_settings")
    entry["plain_jobs"] = details.get("plain_jobs", True)
    if details["unavailable"]:
        entry["status"] = "skipped"
        entry["error"] = details["unavailable"]
        log(f"{driver}: skipped: {details['unavailable']}")
        return entry
    if not details.get("plain_jobs", True):
        if "workflows" in skip:
            entry["status"] = "skipped"
            entry["error"] = "a workflow peer, and the workflows phase was skipped"
            return entry
        entry["status"] = "ran"
        entry["workflows"] = run_workflows(driver, plan, workdir, details["flow_concurrencies"])
        cleanup(driver, plan, workdir)
        return entry
    entry["status"] = "ran"
    if "enqueue" not in skip:
        log(f"{driver}: enqueue")
        entry["enqueue"] = run_phase(
            driver, "enqueue", plan, workdir, plan.phase_timeout("enqueue", 0)
        )
    if "aenqueue" not in skip and details.get("async_enqueue"):
        entry["aenqueue"] = {}
        for producers in plan.aenqueue_producers:
            log(f"{driver}: async enqueue n={plan.aenqueue_n:,}, {producers} producers")
            entry["aenqueue"][str(producers)] = run_phase(
                driver,
                "aenqueue",
                plan,
                workdir,
                plan.phase_timeout("aenqueue", 0),
                n=plan.aenqueue_n,
                producers=producers,
            )
    if "drain" not in skip:
        entry["drain"] = {}
        basic = [asdict(s) for s in basic_sweep(plan.concurrencies)]
        entry["sweep"] = details.get("sweep") or basic
        for setting in entry["sweep"]:
            label = setting["label"]
            log(f"{driver}: drain n={plan.drain_n:,} setting {label}")
            entry["drain"][label] = run_phase(
                driver,
                "drain",
                plan,
                workdir,
                plan.phase_timeout("drain", plan.drain_n),
                n=plan.drain_n,
                concurrency=setting["concurrency"],
                setting=setting,
            )
    # The bare cycle is the drains' yardstick: a run that skips the drains skips it too.
    if driver in bare.STORES and not {"bare", "drain"} & skip:
        log(f"{driver}: bare-store cycle, n={plan.bare_n:,}")
        entry["bare"] = run_phase(
            driver, "bare", plan, workdir, plan.phase_timeout("bare", 0), module="bench.bare"
        )
    if "wakeup" not in skip:
        log(f"{driver}: wake-up latency, {plan.wake_samples} samples")
        entry["wakeup"] = run_phase(
            driver, "wakeup", plan, workdir, plan.phase_timeout("wakeup", 0)
        )
    if driver in QW and "backlog" not in skip:
        log(f"{driver}: claim latency, empty vs {plan.backlog:,} queued")
        entry["backlog"] = run_phase(
            driver, "backlog", plan, workdir, plan.phase_timeout("backlog", 0)
        )
    if details.get("flow_settings") is not None and "workflows" not in skip:
        entry["workflows"] = run_workflows(driver, plan, workdir, details["flow_concurrencies"])
    if driver in QW and "limits" not in skip:
        entry["limits"] = run_limits(
            driver, plan, workdir, sizes or limits.Sizes.of(plan, quick=False)
        )
    if driver in plugins.STORES and "plugins" not in skip:
        entry["plugins"] = run_plugins(
            driver, plan, workdir, plugin_sizes or plugins.Sizes.of(quick=False)
        )
    cleanup(driver, plan, workdir)
    return entry


def run_limits(driver: str, plan: Plan, workdir: Path, sizes: limits.Sizes) -> dict[str, Any]:
    """The limits phase: paired drains (no limit, then a limit per key) and claim latency.

    Skipped, with the reason, when the store's backend does not declare ``limits``.
    """
    caps = run_phase(driver, "limits_check", plan, workdir, 60)
    if not caps.get("ok"):
        log(f"{driver}: limits: cannot tell the capability: {caps.get('error')}")
        return {"skipped": f"capability check failed: {caps.get('error')}"}
    if not caps["result"]["limits"]:
        log(f"{driver}: limits skipped: {caps['result']['reason']}")
        return {"skipped": caps["result"]["reason"]}
    out: dict[str, Any] = {"drains": {}}
    timeout = sizes.timeout("limits_drain")
    for c in sizes.concurrencies:
        pair = out["drains"][str(c)] = {}
        for kind, limit in (("unlimited", None), ("limited", limits.LIMIT)):
            log(
                f"{driver}: limits drain n={sizes.n:,} over {sizes.keys:,} keys, "
                f"{'limit ' + str(limit) + '/key' if limit else 'no limit'}, concurrency={c}"
            )
            pair[kind] = run_phase(
                driver,
                "limits_drain",
                plan,
                workdir,
                timeout,
                n=sizes.n,
                concurrency=c,
                keys=sizes.keys,
                limit=limit,
            )
    log(f"{driver}: limits claim latency, empty vs {sizes.throttled:,} throttled ahead")
    out["claim"] = run_phase(
        driver,
        "limits_claim",
        plan,
        workdir,
        sizes.timeout("limits_claim"),
        throttled=sizes.throttled,
        samples=sizes.samples,
        hot_keys=sizes.hot_keys,
    )
    return out


def cleanup(driver: str, plan: Plan, workdir: Path) -> None:
    done = run_phase(driver, "cleanup", plan, workdir, 120)
    if not done.get("ok"):
        log(f"{driver}: cleanup failed: {done.get('error')}")


def best_concurrency(flows: dict[str, Any]) -> int | None:
    """The concurrency of the fastest verified run of the workflows of 10 steps."""
    ok = [
        (r["result"]["steps_per_s"], int(c))
        for c, r in flows.items()
        if r.get("ok") and r["result"].get("ok")
    ]
    return max(ok)[1] if ok else None


def run_workflows(
    driver: str, plan: Plan, workdir: Path, concurrencies: list[int]
) -> dict[str, Any]:
    """The three workflow shapes; the fan-out runs at the workflows' best concurrency."""
    out: dict[str, Any] = {"flows": {}}
    steps = 10 * plan.wf_flows
    for c in concurrencies:
        log(f"{driver}: {plan.wf_flows:,} workflows of 10 steps, concurrency={c}")
        out["flows"][str(c)] = run_phase(
            driver,
            "wf_flows",
            plan,
            workdir,
            plan.phase_timeout("wf_flows", 2 * steps),
            n=plan.wf_flows,
            concurrency=c,
        )
    best = best_concurrency(out["flows"]) or plan.wake_concurrency
    log(f"{driver}: fan-out of {plan.wf_fanout:,} + fan-in, concurrency={best}")
    out["fanout"] = run_phase(
        driver,
        "wf_fanout",
        plan,
        workdir,
        plan.phase_timeout("wf_fanout", plan.wf_fanout),
        n=plan.wf_fanout,
        concurrency=best,
    )
    log(f"{driver}: chain of {plan.wf_chain:,} steps, concurrency={plan.wake_concurrency}")
    out["chain"] = run_phase(
        driver,
        "wf_chain",
        plan,
        workdir,
        plan.phase_timeout("wf_chain", plan.wf_chain),
        n=plan.wf_chain,
        concurrency=plan.wake_concurrency,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    # `scale` first (after nox bench-quick's --quick): the scale phase, run on its
    # own (most of an hour at full size), see bench/scale.py.
    if args[:1] == ["scale"] or args[:2] == ["--quick", "scale"]:
        from bench import scale

        args.remove("scale")
        return scale.main(args)
    # `cluster`: one namespace on a Redis Cluster of its own, see bench/cluster.py.
    if args[:1] == ["cluster"] or args[:2] == ["--quick", "cluster"]:
        from bench import cluster

        args.remove("cluster")
        return cluster.main(args)
    plan, ns = parse(args)
    out_dir: Path = ns.out
    workdir = out_dir / "raw" / plan.name
    workdir.mkdir(parents=True, exist_ok=True)
    stores = Stores.from_env(workdir)
    skip = {s.strip() for s in ns.skip.split(",") if s.strip()}
    sizes = limits_sizes(plan, ns)
    plugin_sizes = plugins_sizes(ns)
    drains = "each system's sweep" if plan.sweep == "full" else f"concurrency {plan.concurrencies}"
    log(
        f"plan {plan.name}: drain n={plan.drain_n:,}, {drains}; "
        f"backlog {plan.backlog:,}; {plan.wake_samples} wake-up samples; workflows: chain "
        f"{plan.wf_chain:,}, fan-out {plan.wf_fanout:,}, {plan.wf_flows:,} x 10 steps at "
        f"concurrency {plan.wf_concurrencies}; limits: drains of {sizes.n:,} over "
        f"{sizes.keys:,} keys at concurrency {sizes.concurrencies}, {sizes.throttled:,} "
        f"throttled; logs in {workdir}"
    )
    started = time.time()
    described = machine.describe(stores)
    log(
        f"machine: {described['cpu_count']} x {described['cpu_model']}, "
        f"load {described['load_at_start']}"
    )
    systems: dict[str, Any] = {}
    for driver in plan.systems:
        systems[driver] = run_system(driver, plan, workdir, skip, sizes, plugin_sizes)
    described["load_at_end"] = machine.load()
    data = {
        "plan": asdict(plan),
        "machine": described,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "systems": systems,
    }
    if "limits" not in skip:
        data["limits_plan"] = asdict(sizes)
    if "plugins" not in skip:
        data["plugins_plan"] = asdict(plugin_sizes)
    data["goals"] = report.goals(data)
    paths = report.write(data, out_dir, plan.name)
    for path in paths:
        log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    failed = [d for d, e in systems.items() if report.failures(e)]
    if failed:
        log(f"phases failed for: {', '.join(failed)} (see the report)")
    # A peer that fails is a finding for the report; qw failing fails the run.
    return 1 if any(d in QW for d in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
