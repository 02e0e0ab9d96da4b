"""The plugins phase: what qw's own plugins cost a no-op drain.

qw's drain (N no-op jobs pre-enqueued, then the real :class:`qw.Worker`,
jobs/s from the first start to the last terminal write, exactly N once
checked) on each store of :data:`STORES`, with the worker's plugins:

* ``off``: the built-in ``logging`` plugin only (what a worker loads with
  nothing else installed) and the harness's drain-end hook, as in every config;
* ``metrics``: plus ``qw_metrics.plugin``, as the entry point loads it: its
  HTTP server up (on a free port of 127.0.0.1, not scraped) and its counts
  sampler at the default 15 s;
* ``tracing``: plus ``qw_tracing.plugin`` under an SDK ``TracerProvider``
  whose one span processor drops every span (spans are made and ended, not
  exported);
* ``both``: metrics and tracing.

A config whose package is not installed is skipped, with the reason. The
configs run interleaved (off, metrics, tracing, both, off, ...) for
``reps`` rounds, so that drift on the machine weighs on all alike; each
config's figure is the median of its rounds, and its slowdown is
``1 - median / median(off)``. The goal: metrics ≤ :data:`GOAL_SLOWDOWN`.

Every worker here is started with ``load_plugins=False`` and the config's
plugins registered by hand, so that what else is installed in the venv
does not change what a config measures.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.spawn import answer

__all__ = [
    "CONFIGS",
    "GOAL_SLOWDOWN",
    "STORES",
    "Sizes",
    "failures",
    "goals",
    "missing",
    "run",
    "schedule",
    "sections",
    "summarize",
]

#: The worker's plugins per config, beyond the baseline (logging + the drain-end hook).
CONFIGS: dict[str, tuple[str, ...]] = {
    "off": (),
    "metrics": ("metrics",),
    "tracing": ("tracing",),
    "both": ("metrics", "tracing"),
}
#: The module each plugin is, and the distribution that ships it.
PLUGIN_MODULES = {"metrics": "qw_metrics.plugin", "tracing": "qw_tracing.plugin"}
PLUGIN_DISTS = {"metrics": "qw-metrics", "tracing": "qw-tracing"}
#: The goal: a drain with metrics on is at most this much slower than with none.
GOAL_SLOWDOWN = 0.05
#: The qw drivers measured.
STORES = ("qw-postgres", "qw-redis")
#: Where a worker writes the CPU seconds (all its threads) it spent from its start
#: (after imports and connecting) to the drain's last terminal write.
CPU_ENV = "QW_BENCH_CPU_FILE"
#: The environment of a worker with metrics on: a real server, on a free local port.
METRICS_ENV = {"QW_METRICS_PORT": "0", "QW_METRICS_ADDR": "127.0.0.1"}


@dataclass(frozen=True, slots=True)
class Sizes:
    """Jobs per drain, the concurrencies, and the rounds of every config."""

    n: int
    concurrencies: tuple[int, ...]
    reps: int

    @classmethod
    def of(
        cls,
        *,
        quick: bool,
        n: int | None = None,
        concurrencies: tuple[int, ...] | None = None,
        reps: int | None = None,
    ) -> Sizes:
        default = cls(5_000, (4,), 3) if quick else cls(20_000, (1, 16), 5)
        sizes = cls(n or default.n, concurrencies or default.concurrencies, reps or default.reps)
        if sizes.n < 100 or sizes.reps < 1 or not all(c >= 1 for c in sizes.concurrencies):
            raise ValueError(f"plugins phase: bad sizes {sizes}")
        return sizes

    def timeout(self) -> float:
        """Seconds one drain may take (a floor of 100 jobs/s, like the drains')."""
        return 120.0 + 2 * self.n / 100.0


def missing(config: str) -> str | None:
    """Why ``config`` cannot run in this venv (a plugin's package is not installed), or None."""
    for name in CONFIGS[config]:
        module = PLUGIN_MODULES[name]
        try:
            found = importlib.util.find_spec(module.split(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{PLUGIN_DISTS[name]} is not installed ({module})"
    return None


def schedule(configs: Iterable[str], reps: int) -> list[tuple[int, str]]:
    """(round, config) in run order: every config once per round, rounds one after another."""
    names = list(configs)
    return [(r, c) for r in range(reps) for c in names]


def summarize(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per config: the rounds' jobs/s and worker CPU per job, their medians, and against ``off``.

    ``runs`` maps a config to its rounds' phase answers (``{"ok": ..., "result":
    {"jobs_per_s": ..., "cpu_us_per_job": ...}}``). A config with a failed
    round has no medians. ``slowdown`` is ``1 - median / median(off)``;
    ``cpu_delta_us`` the worker's extra CPU microseconds per job.
    """
    out: dict[str, Any] = {}
    for config, rounds in runs.items():
        done = [r["result"] for r in rounds if r.get("ok")]
        errors = [str(r.get("error")) for r in rounds if not r.get("ok")]
        rates = [r["jobs_per_s"] for r in done]
        cpus = [r["cpu_us_per_job"] for r in done if "cpu_us_per_job" in r]
        whole = bool(done) and not errors
        out[config] = {
            "jobs_per_s": rates,
            "median": statistics.median(rates) if whole else None,
            "cpu_us_per_job": cpus,
            "cpu_median": statistics.median(cpus) if whole and len(cpus) == len(done) else None,
            "errors": errors,
        }
    base = out.get("off") or {}
    for config, entry in out.items():
        median, cpu = entry["median"], entry["cpu_median"]
        first = config == "off"
        entry["slowdown"] = (
            None
            if first or median is None or not base.get("median")
            else 1.0 - median / base["median"]
        )
        entry["cpu_delta_us"] = (
            None
            if first or cpu is None or base.get("cpu_median") is None
            else cpu - base["cpu_median"]
        )
    return out


# -- the orchestrator's side (python -m bench.run) -----------------------------


def run(
    driver: str,
    sizes: Sizes,
    run_phase: Callable[..., dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every config at every concurrency on ``driver``; ``run_phase`` runs one drain."""
    check = run_phase(driver, "plugins_check", 60)
    if not check.get("ok"):
        return {"skipped": f"cannot tell which plugins are installed: {check.get('error')}"}
    unavailable: dict[str, str] = check["result"]["unavailable"]
    configs = [c for c in CONFIGS if c not in unavailable]
    out: dict[str, Any] = {"unavailable": unavailable, "sizes": _asdict(sizes), "by_c": {}}
    for c in sizes.concurrencies:
        runs: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
        for rnd, config in schedule(configs, sizes.reps):
            log(
                f"{driver}: plugins drain n={sizes.n:,} concurrency={c} plugins={config} "
                f"(round {rnd + 1}/{sizes.reps})"
            )
            runs[config].append(
                run_phase(
                    driver,
                    "plugins_drain",
                    sizes.timeout(),
                    n=sizes.n,
                    concurrency=c,
                    config=config,
                )
            )
        summary = summarize(runs)
        out["by_c"][str(c)] = {"runs": runs, "summary": summary}
        for config in configs:
            s = summary[config]
            shown = "failed" if s["median"] is None else f"{s['median']:,.0f} jobs/s"
            if s["slowdown"] is not None:
                shown += f", {100 * s['slowdown']:+.1f}% slower than off"
            if s["cpu_median"] is not None:
                shown += f"; worker CPU {s['cpu_median']:.1f} µs/job"
            if s["cpu_delta_us"] is not None:
                shown += f" ({s['cpu_delta_us']:+.1f})"
            log(f"{driver}: plugins={config} c={c}: {shown}")
    return out


def _asdict(sizes: Sizes) -> dict[str, Any]:
    return {"n": sizes.n, "concurrencies": list(sizes.concurrencies), "reps": sizes.reps}


def failures(entry: Mapping[str, Any]) -> list[str]:
    """The failed plugin drains of one system."""
    out: list[str] = []
    for c, block in ((entry.get("plugins") or {}).get("by_c") or {}).items():
        for config, summary in block["summary"].items():
            out += [f"plugins={config} c={c}: {e}" for e in summary["errors"]]
    return out


def goals(systems: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per store and concurrency: the drain with metrics on ≤ GOAL_SLOWDOWN slower than off."""
    out: list[dict[str, str]] = []
    for driver in STORES:
        phase = (systems.get(driver) or {}).get("plugins")
        if not phase:
            continue
        if "skipped" in phase:
            goal = f"{driver} drain with metrics: ≤ {100 * GOAL_SLOWDOWN:g}% slower"
            out.append({"goal": goal, "value": phase["skipped"], "status": "SKIP"})
            continue
        for c, block in sorted(phase["by_c"].items(), key=lambda kv: int(kv[0])):
            goal = f"{driver} drain c={c} with metrics: ≤ {100 * GOAL_SLOWDOWN:g}% slower than off"
            summary = block["summary"]
            if "metrics" not in summary:
                why = phase["unavailable"].get("metrics", "not run")
                out.append({"goal": goal, "value": why, "status": "SKIP"})
                continue
            on, off = summary["metrics"], summary["off"]
            if on["slowdown"] is None:
                why = "; ".join(on["errors"] + off["errors"]) or "no baseline"
                out.append({"goal": goal, "value": why, "status": "FAIL"})
                continue
            cpu = "" if on["cpu_delta_us"] is None else f"; {on['cpu_delta_us']:+.1f} µs/job CPU"
            out.append(
                {
                    "goal": goal,
                    "value": f"{on['median']:,.0f} vs {off['median']:,.0f} jobs/s: "
                    f"{100 * on['slowdown']:+.1f}%{cpu}",
                    # Rounded: 1 - 9500 / 10000 is 0.050000000000000044.
                    "status": "PASS" if round(on["slowdown"], 9) <= GOAL_SLOWDOWN else "FAIL",
                }
            )
    return out


def sections(data: Mapping[str, Any], ids: Iterable[str]) -> list[str]:
    """The report's plugins table."""
    systems = data["systems"]
    rows = [d for d in ids if (systems[d].get("plugins") or {}).get("by_c")]
    if not rows:
        return []
    lines = [
        "",
        "## Plugins: what qw's metrics and tracing plugins cost a no-op drain",
        "",
        "qw's drain with the worker's plugins: `off` (the built-in logging plugin only), "
        "`metrics` (qw_metrics, its HTTP server up, counts sampled every 15 s), `tracing` "
        "(qw_tracing, an SDK TracerProvider whose span processor drops every span), `both`. "
        "The configs run interleaved; each figure is the median of the rounds; slowdown = "
        "1 - median / median(off). Worker CPU: the worker process's CPU time (all threads) "
        "from its start to the last terminal write, per job (less sensitive to a busy "
        "machine than jobs/s).",
        "",
        "| system | c | plugins | median jobs/s | slowdown | worker CPU µs/job | vs off "
        "| rounds (jobs/s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for d in rows:
        phase = systems[d]["plugins"]
        for c, block in sorted(phase["by_c"].items(), key=lambda kv: int(kv[0])):
            for config, s in block["summary"].items():
                median = "failed" if s["median"] is None else f"{s['median']:,.0f}"
                slow = "" if s["slowdown"] is None else f"{100 * s['slowdown']:+.1f}%"
                cpu = "" if s["cpu_median"] is None else f"{s['cpu_median']:.1f}"
                delta = "" if s["cpu_delta_us"] is None else f"{s['cpu_delta_us']:+.1f}"
                rounds = ", ".join(f"{r:,.0f}" for r in s["jobs_per_s"])
                if s["errors"]:
                    rounds += f"; failed: {'; '.join(s['errors'])}"
                lines.append(
                    f"| {d} | {c} | {config} | {median} | {slow} | {cpu} | {delta} | {rounds} |"
                )
        for config, why in phase.get("unavailable", {}).items():
            lines.append(f"| {d} | | {config} | skipped | | | | {why} |")
    return lines


# -- a phase process (python -m bench.plugins phase SPEC) ---------------------


def phase(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one ``plugins_*`` phase of ``spec`` (as bench.phase does for the others)."""
    if spec["phase"] == "plugins_check":
        return {"unavailable": {c: why for c in CONFIGS if (why := missing(c)) is not None}}
    if spec["phase"] != "plugins_drain":
        raise ValueError(f"unknown phase {spec['phase']!r}")
    from bench import phases
    from bench.config import Stores
    from bench.drivers import load
    from bench.drivers.base import Workers, python_cmd, spawn
    from bench.drivers.qw_driver import NAMESPACE, QwDriver

    driver = load(spec["driver"], Stores.from_env(Path(spec["workdir"])))
    if not isinstance(driver, QwDriver):
        raise ValueError(f"the plugins phase measures qw only, not {driver.id}")
    config = str(spec["config"])
    if why := missing(config):
        raise RuntimeError(why)
    deadline = time.monotonic() + float(spec["timeout"]) - 10.0
    cpu_file = driver.workdir / f"plugins-cpu-{config}-{time.time_ns()}.txt"

    def start(concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        log = driver.log(f"worker-plugins-{config}")
        cmd = python_cmd(
            "-m",
            "bench.plugins",
            "worker",
            driver.url(),
            NAMESPACE,
            str(concurrency),
            str(drain or 0),
            config,
        )
        env = {"QW_BENCH_PROBE_DIR": str(probe_dir), CPU_ENV: str(cpu_file)}
        if "metrics" in CONFIGS[config]:
            env.update(METRICS_ENV)
        return Workers([spawn(cmd, log, env)], [log], probe_dir)

    # The drain phase as it is, with this config's worker.
    driver.start = start  # type: ignore[method-assign]
    result = phases.drain(driver, int(spec["n"]), int(spec["concurrency"]), deadline)
    result["config"] = config
    cpu_s = float(cpu_file.read_text())
    cpu_file.unlink()
    result["cpu_s"] = cpu_s
    result["cpu_us_per_job"] = 1e6 * cpu_s / int(spec["n"])
    return result


# -- the worker (python -m bench.plugins worker URL NS C DRAIN CONFIG) --------


def _tracer_provider() -> None:
    """An SDK provider that makes and ends spans and drops them (no exporter's cost)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())  # the base class: every method a no-op
    trace.set_tracer_provider(provider)


def cpu_mark(target: int) -> Any:
    """A plugin noting the process's CPU time (every thread) from the worker's start to
    the ``target``-th success, which the drain-end hook takes for the drain's end."""
    from qw.model import JobStatus
    from qw.plugin import hookimpl

    class CpuMark:
        def __init__(self) -> None:
            self.done = 0
            self.start: float | None = None
            self.end: float | None = None

        @hookimpl
        def qw_worker_started(self) -> None:
            self.start = time.process_time()

        @hookimpl
        def qw_job_finished(self, status: JobStatus) -> None:
            # In the finisher thread, as the drain-end hook notes its moment.
            if status is JobStatus.SUCCEEDED:
                self.done += 1
                if self.done == target:
                    self.end = time.process_time()

        def seconds(self) -> float:
            if self.start is None or self.end is None:
                raise RuntimeError("the drain did not complete")
            return self.end - self.start

    return CpuMark()


def worker(argv: list[str]) -> int:
    import qw
    import qw.plugins.logging
    from bench import probe
    from bench.apps.qw_worker import QUEUE, TASK, DrainStop
    from qw.plugin.manager import QwPluginManager

    url, namespace, concurrency, drain, config = argv
    app = qw.App(url, namespace=namespace)

    @app.task(name=TASK, queue=QUEUE, max_attempts=3)
    def noop(index: int) -> None:
        probe.record(index)

    plugins = QwPluginManager()
    plugins.register(qw.plugins.logging, name="logging")
    if "tracing" in CONFIGS[config]:
        _tracer_provider()
    for name in CONFIGS[config]:
        plugins.register(importlib.import_module(PLUGIN_MODULES[name]), name=name)
    ref: list[qw.Worker] = []
    stopper = DrainStop(ref, int(drain))
    plugins.register(stopper, name="bench.drain")
    cpu = cpu_mark(int(drain))
    plugins.register(cpu, name="bench.cpu")
    qw_worker = qw.Worker(
        app,
        qw.WorkerConfig(queues=(QUEUE,), concurrency=int(concurrency)),
        plugins=plugins,
        load_plugins=False,
    )
    ref.append(qw_worker)
    stats = qw_worker.run()
    app.close()
    loaded = sorted(name for name, _ in plugins.pluggy.list_name_plugin())
    print(f"qw worker stats: {stats}; plugins: {loaded}", flush=True)
    if stopper.end_ns is None:
        print("stopped before the drain completed", file=sys.stderr)
        return 1
    probe.write_end(stopper.end_ns)
    Path(os.environ[CPU_ENV]).write_text(f"{cpu.seconds()!r}\n")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    if argv[:1] == ["phase"]:
        spec = json.loads(argv[1])
        return answer(lambda: phase(spec))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
