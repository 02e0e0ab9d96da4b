"""DBOS Transact's workflows for the workflow phases, and its worker process.

``python -m bench.apps.dbos_app CONCURRENCY`` launches DBOS on the system
database ``$QW_BENCH_DBOS_URL`` and serves two queues until SIGTERM: one
for the workflows the harness enqueues (through ``DBOSClient``), one for
the steps those workflows fan out to. The shapes are written as DBOS's
docs write them: a chain is a workflow calling its steps one after another
(each step's output checkpointed before the next starts); a fan-out
enqueues each step on a queue and waits for every handle's result
(``DBOS.enqueue_workflow`` of a step, the queue tutorial's pattern); a
fan-in is a step taking those results.

Both queues get ``worker_concurrency=CONCURRENCY`` (a workflow waiting for
its children holds a slot of the workflows' queue, never one of the steps'
queue, so the two cannot starve each other). DBOS polls its queues, and a
handle's ``get_result`` polls too, every ``$QW_BENCH_DBOS_POLL`` seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from dbos import DBOS, DBOSConfig

from bench import probe
from bench.workflows import flow_indexes

URL = os.environ["QW_BENCH_DBOS_URL"]
APP = "qwbench"
VERSION = "bench"
FLOWS_QUEUE = "bench_flows"
STEPS_QUEUE = "bench_steps"
#: Seconds between polls of a queue, and of a handle's result (DBOS's default: 1.0 for both).
POLL = float(os.environ.get("QW_BENCH_DBOS_POLL", "0.01"))
CHAIN, FANOUT, FLOW = "bench_chain", "bench_fanout", "bench_flow"


@DBOS.step(name="bench_step")
def step(index: int, parent: Any = None, expect: int | None = None) -> int:
    probe.record(index)
    if expect is not None and parent != expect:
        raise ValueError(f"step {index}: parent result {parent!r}, expected {expect}")
    probe.record(index, probe.DONE)
    return index


@DBOS.step(name="bench_join")
def join(index: int, parts: list[int], first: int, count: int) -> dict[str, int]:
    probe.record(index)
    if sorted(parts) != list(range(first, first + count)):
        raise ValueError(f"fan-in {index} saw {len(parts)} results, not {first}..+{count}")
    probe.record(index, probe.DONE)
    return {"index": index, "count": len(parts), "sum": sum(parts)}


def _results(handles: list[Any]) -> list[int]:
    return [h.get_result(polling_interval_sec=POLL) for h in handles]


@DBOS.workflow(name=CHAIN)
def chain_wf(base: int, n: int) -> int:
    prev = step(base)
    for i in range(base + 1, base + n):
        prev = step(i, prev, i - 1)
    return prev


@DBOS.workflow(name=FANOUT)
def fanout_wf(n: int) -> dict[str, int]:
    handles = [DBOS.enqueue_workflow(STEPS_QUEUE, step, i) for i in range(n)]
    return join(n, _results(handles), 0, n)


@DBOS.workflow(name=FLOW)
def flow_wf(w: int) -> dict[str, int]:
    ix = flow_indexes(w)
    a = step(ix["a"])
    sides = [DBOS.enqueue_workflow(STEPS_QUEUE, step, ix[k], a, ix["a"]) for k in ("b", "c")]
    join(ix["d"], _results(sides), ix["b"], 2)
    mapped = [DBOS.enqueue_workflow(STEPS_QUEUE, step, i) for i in ix["e"]]
    return join(ix["f"], _results(mapped), ix["e"][0], len(ix["e"]))


def config(executor: str) -> DBOSConfig:
    return {
        "name": APP,
        "system_database_url": URL,
        "application_version": VERSION,
        "executor_id": executor,
        "log_level": "WARNING",
    }


def main(concurrency: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    DBOS(config=config(f"bench-{os.getpid()}"))
    DBOS.launch()
    for name in (FLOWS_QUEUE, STEPS_QUEUE):
        DBOS.register_queue(
            name,
            worker_concurrency=concurrency,
            polling_interval_sec=POLL,
            on_conflict="always_update",
        )
    print(f"dbos worker up: concurrency={concurrency} poll={POLL}", flush=True)
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
