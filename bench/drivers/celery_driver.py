"""Celery canvas (Redis broker, Redis result backend): a workflow peer.

Chain, chord and group, as Celery's canvas guide writes them; the result
backend is Redis, whose counter-based chords the guide recommends. The
worker is Celery's own CLI with the prefork pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import probe
from bench.drivers.base import Workers, python_cmd, spawn
from bench.drivers.redis_common import RedisPeer
from bench.workflows import (
    WARMUP_BASE,
    FlowDriver,
    flow_indexes,
    peer_concurrencies,
    poll_count,
    poll_probe,
)

__all__ = ["Celery"]


class Celery(RedisPeer, FlowDriver):
    system = "celery"
    plain_jobs = False

    def flow_concurrencies(self, planned: Sequence[int]) -> list[int]:
        return peer_concurrencies(planned)

    def version(self) -> str:
        return version("celery")

    def settings(self, concurrency: int) -> dict[str, str]:
        return self.flow_settings(concurrency)

    def flow_settings(self, concurrency: int) -> dict[str, str]:
        from bench.apps.celery_app import PREFETCH

        return {
            "worker": f"celery worker -P prefork -c {concurrency} --without-gossip "
            "--without-mingle --without-heartbeat -l WARNING (prefork: Celery's default "
            "pool; its default concurrency is the CPU count)",
            "prefetch": f"worker_prefetch_multiplier={PREFETCH} (Celery's optimizing guide: "
            "large for many short tasks)",
            "backend": "Redis broker and Redis result backend (counter-based chords, as "
            "Celery's canvas guide recommends); json serializer",
            "workflows": "chain(...) for chains, a group followed by a task in a chain "
            "(a chord) for fan-ins, chord(group, callback) for the fan-out",
        }

    def close(self) -> None:
        # Celery's client keeps the canvases' results it subscribed to until
        # they are fetched; let them go now, while their __del__ can still
        # unsubscribe (at interpreter exit it cannot, and says so at length).
        import gc
        import sys

        module = sys.modules.get("bench.apps.celery_app")
        if module is not None:
            for mapping in getattr(module.app.backend, "_pending_results", ()):
                mapping.clear()
            gc.collect()
        super().close()

    def submit_chain(self, n: int, base: int = 0) -> Any:
        from celery import chain  # type: ignore[import-untyped,import-not-found,unused-ignore]

        from bench.apps.celery_app import step

        sigs = [step.s(base)] + [step.s(i, i - 1) for i in range(base + 1, base + n)]
        return chain(*sigs).apply_async().id

    def submit_fanout(self, n: int) -> Any:
        from celery import chord, group  # type: ignore[import-untyped,import-not-found,unused-ignore]

        from bench.apps.celery_app import join, step

        return chord(group(step.s(i) for i in range(n)), join.s(n, 0, n)).apply_async().id

    def submit_flows(self, count: int) -> list[Any]:
        from celery import chain, group  # type: ignore[import-untyped,import-not-found,unused-ignore]

        from bench.apps.celery_app import join, step

        handles = []
        for w in range(count):
            ix = flow_indexes(w)
            e = ix["e"]
            handles.append(
                chain(
                    step.s(ix["a"]),
                    group(step.s(ix["b"], ix["a"]), step.s(ix["c"], ix["a"])),
                    join.s(ix["d"], ix["b"], 2),
                    group(step.s(i) for i in e),
                    join.s(ix["f"], e[0], len(e)),
                )
                .apply_async()
                .id
            )
        return handles

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        log = self.log("worker")
        cmd = python_cmd(
            "-m",
            "celery",
            "-A",
            "bench.apps.celery_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-Q",
            "bench",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        )
        proc = spawn(cmd, log, self.worker_env(probe_dir))
        return Workers([proc], [log], probe_dir)

    def wait_done(self, handle: Any, last: int, workers: Workers, deadline: float) -> int:
        # The task_success signal notes the last task's result write.
        return poll_probe(workers.probe_dir, probe.FIN, last, deadline, workers)

    def wait_flows(self, handles: list[Any], steps: int, workers: Workers, deadline: float) -> int:
        return poll_count(workers.probe_dir, probe.FIN, steps, deadline, workers)

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        # A handle is the id of the canvas's last task (its AsyncResult is let go
        # at once: the client unsubscribes from it while it can). The workflow
        # has ended: read that task's stored result.
        from bench.apps.celery_app import app

        meta = app.backend.get_task_meta(handle)
        return meta.get("status") == "SUCCESS", meta.get("result")

    def store_steps(self, handles: list[Any]) -> int | None:
        """Results the backend holds as SUCCESS, of measured steps (the warm-up's left out)."""
        r = self.redis()
        keys = list(r.scan_iter(match="celery-task-meta-*", count=1000))
        stored = 0
        for start in range(0, len(keys), 1000):
            for raw in r.mget(keys[start : start + 1000]):
                if raw is None:
                    continue
                meta = json.loads(raw)
                result = meta.get("result")
                index = result.get("index") if isinstance(result, dict) else result
                if meta.get("status") == "SUCCESS" and isinstance(index, int):
                    stored += index < WARMUP_BASE
        return stored
