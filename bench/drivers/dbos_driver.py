"""DBOS Transact (PostgreSQL): a workflow peer.

Its system database is ``qw_bench_dbos``, created and migrated by the
harness (``DBOS.migrate``) and dropped at the end. Workflows are enqueued
from the harness with ``DBOSClient.enqueue`` (DBOS's way for a process that
does not run the workflows); the worker is ``bench.apps.dbos_app``.

DBOS has no hook after a workflow's final write, so the end of a workflow
is its ``workflow_status`` row leaving ENQUEUED/PENDING, polled every 5 ms
(as the harness does for the job queues that have no such hook either).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import stores
from bench.drivers.base import Workers, poll_until, python_cmd, spawn
from bench.workflows import WARMUP_BASE, FlowDriver, peer_concurrencies

__all__ = ["Dbos"]

DB = "qw_bench_dbos"
POLL_ENV = "QW_BENCH_DBOS_POLL"
#: Workflow states that are not an end.
RUNNING = ("ENQUEUED", "PENDING", "DELAYED")


class Dbos(FlowDriver):
    system = "dbos"
    store = "postgres"
    plain_jobs = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        os.environ["QW_BENCH_DBOS_URL"] = self.url
        self._client: Any = None
        self._conn: Any = None

    @property
    def url(self) -> str:
        return self.stores.postgres_db(DB)

    def flow_concurrencies(self, planned: Sequence[int]) -> list[int]:
        return peer_concurrencies(planned)

    def version(self) -> str:
        return version("dbos")

    def settings(self, concurrency: int) -> dict[str, str]:
        return self.flow_settings(concurrency)

    def flow_settings(self, concurrency: int) -> dict[str, str]:
        from bench.apps.dbos_app import POLL

        return {
            "worker": f"1 process, DBOS.launch(); two queues (workflows, steps), each "
            f"worker_concurrency={concurrency}; executor threads unbounded (DBOS's default)",
            "polling": f"polling_interval_sec={POLL:g} on both queues and in "
            "handle.get_result() (DBOS's default is 1.0 s for both, which caps a queue "
            "at worker_concurrency starts per second)",
            "workflows": "chain: one workflow calling its steps in turn (each step's output "
            "checkpointed); fan-out: DBOS.enqueue_workflow(queue, step, ...) per step, then "
            "get_result() of each handle (the queue tutorial's pattern); fan-in: a step",
            "enqueue": "DBOSClient.enqueue from the harness; system database LISTEN/NOTIFY on "
            "(DBOS's default)",
        }

    # -- the store ------------------------------------------------------------

    def reset(self) -> None:
        self.close()
        stores.pg_recreate(self.stores, DB)
        from dbos import DBOS

        DBOS.migrate(self.url)

    def cleanup(self) -> None:
        self.close()
        stores.pg_drop(self.stores, DB)

    def close(self) -> None:
        if self._client is not None:
            self._client.destroy()
            self._client = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def client(self) -> Any:
        if self._client is None:
            from dbos import DBOSClient

            from bench.apps.dbos_app import APP

            self._client = DBOSClient(system_database_url=self.url, application_name=APP)
        return self._client

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._conn is None:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True)
        return list(self._conn.execute(query, args).fetchall())

    # -- workflows ------------------------------------------------------------

    def _enqueue(self, name: str, workflow_id: str, *args: Any) -> str:
        from bench.apps.dbos_app import FLOWS_QUEUE, VERSION

        options: Any = {
            "workflow_name": name,
            "queue_name": FLOWS_QUEUE,
            "workflow_id": workflow_id,
            "app_version": VERSION,
        }
        self.client().enqueue(options, *args)
        return workflow_id

    def submit_chain(self, n: int, base: int = 0) -> Any:
        from bench.apps.dbos_app import CHAIN

        return self._enqueue(CHAIN, f"chain{base}", base, n)

    def submit_fanout(self, n: int) -> Any:
        from bench.apps.dbos_app import FANOUT

        return self._enqueue(FANOUT, "fanout", n)

    def submit_flows(self, count: int) -> list[Any]:
        from bench.apps.dbos_app import FLOW

        return [self._enqueue(FLOW, f"w{w}", w) for w in range(count)]

    def start(self, concurrency: int, probe_dir: Path, *, drain: int | None) -> Workers:
        log = self.log("worker")
        env = {"QW_BENCH_PROBE_DIR": str(probe_dir), "QW_BENCH_DBOS_URL": self.url}
        if POLL_ENV in os.environ:
            env[POLL_ENV] = os.environ[POLL_ENV]
        proc = spawn(python_cmd("-m", "bench.apps.dbos_app", str(concurrency)), log, env)
        return Workers([proc], [log], probe_dir)

    def wait_done(self, handle: Any, last: int, workers: Workers, deadline: float) -> int:
        return poll_until(
            lambda: (
                self.sql(
                    "SELECT 1 FROM dbos.workflow_status "
                    "WHERE workflow_uuid = %s AND status <> ALL(%s)",
                    handle,
                    list(RUNNING),
                )
                != []
            ),
            deadline,
            workers=workers,
        )

    def wait_flows(self, handles: list[Any], steps: int, workers: Workers, deadline: float) -> int:
        from bench.apps.dbos_app import FLOW

        def ended() -> int:
            rows = self.sql(
                "SELECT count(*) FROM dbos.workflow_status WHERE name = %s AND status <> ALL(%s)",
                FLOW,
                list(RUNNING),
            )
            return int(rows[0][0])

        return poll_until(
            lambda: ended() >= len(handles),
            deadline,
            progress=lambda: f"{self.id}: {ended()}/{len(handles)} workflows ended",
            workers=workers,
        )

    def outcome(self, handle: Any) -> tuple[bool, Any]:
        wf = self.client().retrieve_workflow(handle)
        status = wf.get_status().status
        if status != "SUCCESS":
            return False, status
        return True, wf.get_result()

    def store_steps(self, handles: list[Any]) -> int | None:
        """Step outputs DBOS checkpointed without an error (the warm-up chain's left out)."""
        rows = self.sql(
            "SELECT count(*) FROM dbos.operation_outputs WHERE function_name = ANY(%s) "
            "AND error IS NULL AND workflow_uuid <> %s",
            ["bench_step", "bench_join"],
            f"chain{WARMUP_BASE}",
        )
        return int(rows[0][0])

    def halt(self, workers: Workers) -> None:
        super().halt(workers)
        # A worker killed mid-workflow leaves nothing running here; give PostgreSQL
        # a moment to end its sessions before the next phase drops the database.
        time.sleep(0.2)
