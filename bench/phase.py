"""One phase of one system, in a process of its own: ``python -m bench.phase SPEC``.

The orchestrator runs every phase this way so that a hung peer is killed
with its whole process group when the phase's deadline passes, and the run
goes on. SPEC is JSON: driver, phase, plan, workdir, and the phase's
arguments. The last stdout line is ``RESULT <json>``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import aenqueue, limits, phases, workflows
from bench.config import Plan, Setting, Stores
from bench.drivers import load
from bench.drivers.base import Driver, Unsupported
from bench.spawn import answer


def run(spec: dict[str, Any]) -> dict[str, Any]:
    plan = Plan.from_dict(spec["plan"])
    stores = Stores.from_env(Path(spec["workdir"]))
    driver = load(spec["driver"], stores)
    deadline = time.monotonic() + float(spec["timeout"]) - 10.0
    phase = spec["phase"]
    if phase == "info":
        plain, flow_cs, flow_settings = True, None, None
        if isinstance(driver, workflows.FlowDriver):
            plain = driver.plain_jobs
            flow_cs = driver.flow_concurrencies(plan.wf_concurrencies)
            flow_settings = {
                str(c): driver.flow_settings(c) for c in sorted({*flow_cs, plan.wake_concurrency})
            }
        return {
            "unavailable": driver.unavailable(),
            "version": driver.version(),
            "plain_jobs": plain,
            "sweep": [asdict(s) for s in driver.sweep(plan)] if plain else [],
            "settings": {s.label: driver.describe(s) for s in driver.sweep(plan)} if plain else {},
            "wake_settings": driver.settings(plan.wake_concurrency) if plain else {},
            "flow_concurrencies": flow_cs,
            "flow_settings": flow_settings,
            "bulk": driver.bulk,
            "async_enqueue": type(driver).async_producer is not Driver.async_producer,
        }
    if phase == "enqueue":
        return phases.enqueue(driver, plan)
    if phase == "aenqueue":
        result = aenqueue.run(driver, int(spec["n"]), int(spec["producers"]))
        result["settings"] = driver.async_settings(int(spec["producers"]))
        return result
    if phase == "drain":
        setting = Setting.of(spec["setting"]) if spec.get("setting") else None
        return phases.drain(driver, int(spec["n"]), int(spec["concurrency"]), deadline, setting)
    if phase == "wakeup":
        return phases.wakeup(driver, plan, deadline)
    if phase == "backlog":
        return phases.backlog(driver, plan)
    if phase.startswith("limits_"):
        return limits.run(driver, phase, spec, deadline)
    if phase.startswith("wf_"):
        if not isinstance(driver, workflows.FlowDriver):
            raise Unsupported(f"{driver.id} runs no workflows")
        n, c = int(spec["n"]), int(spec["concurrency"])
        if phase == "wf_chain":
            return workflows.chain(driver, n, c, deadline)
        if phase == "wf_fanout":
            return workflows.fanout(driver, n, c, deadline)
        if phase == "wf_flows":
            out = workflows.flows(driver, n, c, deadline)
            if driver.plain_jobs:
                # A plain-job drain of as many jobs, same store, same concurrency.
                out["plain"] = phases.drain(driver, out["steps"], c, deadline)
            return out
    if phase == "cleanup":
        driver.cleanup()
        return {}
    raise ValueError(f"unknown phase {phase!r}")


def main() -> int:
    spec = json.loads(sys.argv[1])
    return answer(lambda: run(spec), unsupported=(Unsupported,))


if __name__ == "__main__":
    sys.exit(main())
