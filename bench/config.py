"""Where the stores are, and how much work each phase does (the plan)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["SWEEPS", "Plan", "Setting", "Stores", "basic_sweep", "full_plan", "quick_plan"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Stores:
    """Server URLs. The harness owns what it touches there, and nothing else.

    PostgreSQL: it creates (and drops) databases named ``qw_bench*`` through
    ``postgres_admin``. Redis: it flushes the one database of ``redis`` before
    each system's phase, so that URL must not name DB 0.
    """

    postgres_admin: str
    redis: str
    mongodb: str | None
    workdir: Path

    @classmethod
    def from_env(cls, workdir: Path) -> Stores:
        redis = os.environ.get("QW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
        db = urlsplit(redis).path.strip("/") or "0"
        if db == "0":
            raise SystemExit(f"QW_BENCH_REDIS_URL must name a Redis DB other than 0: {redis}")
        return cls(
            postgres_admin=os.environ.get(
                "QW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            redis=redis,
            mongodb=os.environ.get("QW_BENCH_MONGODB_URL") or None,
            workdir=workdir,
        )

    def postgres_db(self, name: str) -> str:
        """The admin URL with its database replaced by ``name``."""
        parts = urlsplit(self.postgres_admin)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


#: ``--sweep``: ``full`` runs each system's list of settings (processes x
#: concurrency x its own knobs); ``basic`` runs concurrency 1/4/16 in one process.
SWEEPS = ("full", "basic")


@dataclass(frozen=True, slots=True)
class Setting:
    """One way of running a system's workers in a drain, named by ``label`` (e.g. ``2px8t``).

    ``processes`` worker processes of ``concurrency`` each; ``extra`` holds
    the system's own knobs (Huey's worker type, PGQueuer's batch size).
    """

    label: str
    processes: int = 1
    concurrency: int = 1
    extra: dict[str, str | int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Jobs that may run at once across every process."""
        return self.processes * self.concurrency

    @classmethod
    def of(cls, data: dict[str, object]) -> Setting:
        """A setting from its JSON form (``dataclasses.asdict``)."""
        extra = data.get("extra") or {}
        assert isinstance(extra, dict)
        return cls(
            label=str(data["label"]),
            processes=int(str(data.get("processes", 1))),
            concurrency=int(str(data.get("concurrency", 1))),
            extra=dict(extra),
        )


def basic_sweep(concurrencies: tuple[int, ...]) -> list[Setting]:
    """One process at each concurrency, labelled by the concurrency (the ``basic`` sweep)."""
    return [Setting(str(c), 1, c) for c in concurrencies]


@dataclass(frozen=True, slots=True)
class Plan:
    """How much work each phase does; ``quick`` is the smoke-run preset."""

    name: str
    drain_n: int
    concurrencies: tuple[int, ...]
    enqueue_single: int
    enqueue_bulk: int
    bulk_sizes: tuple[int, ...] = (100, 1000)
    wake_samples: int = 300
    wake_gap_ms: tuple[float, float] = (20.0, 80.0)
    wake_concurrency: int = 4
    backlog: int = 1_000_000
    backlog_samples: int = 200
    #: Workflow phases: chain length, fan-out width, workflows of 10 steps, and
    #: the concurrencies the workflows run at (the best one runs the fan-out).
    wf_chain: int = 1_000
    wf_fanout: int = 10_000
    wf_flows: int = 1_000
    wf_concurrencies: tuple[int, ...] = (1, 2, 4, 16)
    #: The async enqueue phase: jobs per run, and the producer coroutines of each run.
    aenqueue_n: int = 20_000
    aenqueue_producers: tuple[int, ...] = (1, 16, 64)
    #: Drains: each system's settings sweep (``full``) or ``concurrencies`` only (``basic``).
    sweep: str = "full"
    #: The bare-store cycle (bench/bare.py): jobs a run, claim batch sizes, client processes.
    bare_n: int = 100_000
    bare_batches: tuple[int, ...] = (50, 100, 500)
    bare_clients: tuple[int, ...] = (1, 2)
    systems: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Plan:
        """The plan ``asdict`` made, back from JSON (whose arrays arrive as lists)."""
        given: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()
        }
        return cls(**given)

    def phase_timeout(self, phase: str, n: int) -> float:
        """Seconds a phase may take before it is killed and reported failed.

        Generous on purpose (the floor rate is far below any system's): a
        timeout is for a hung peer, not a slow one.
        """
        if phase == "enqueue":
            return 120.0 + (self.enqueue_single + 2 * self.enqueue_bulk) / 100.0
        if phase == "drain":
            return 120.0 + 2 * n / 100.0
        if phase == "bare":
            # Every batch size and client count, a floor of 1,000 jobs/s each.
            runs = len(self.bare_batches) * len(self.bare_clients)
            return 120.0 + runs * (30.0 + self.bare_n / 1000.0)
        if phase == "wakeup":
            return 60.0 + self.wake_samples * (self.wake_gap_ms[1] / 1000.0 + 0.5)
        if phase == "backlog":
            return 180.0 + self.backlog / 1000.0
        if phase == "wf_chain":
            # Sequential steps: a floor of 5 steps/s.
            return 120.0 + n / 5.0
        if phase == "aenqueue":
            # A floor of 50 jobs/s.
            return 120.0 + self.aenqueue_n / 50.0
        if phase in ("wf_fanout", "wf_flows"):
            # n steps (wf_flows: counted twice, for qw's plain drain): a floor of 10 steps/s.
            return 120.0 + n / 10.0
        return 60.0


def quick_plan() -> Plan:
    return Plan(
        name="bench-quick",
        drain_n=2_000,
        concurrencies=(1, 4),
        enqueue_single=300,
        enqueue_bulk=2_000,
        wake_samples=40,
        backlog=50_000,
        backlog_samples=50,
        wf_chain=100,
        wf_fanout=1_000,
        wf_flows=100,
        wf_concurrencies=(2, 4),
        aenqueue_n=2_000,
        aenqueue_producers=(1, 16),
        sweep="basic",
        bare_n=20_000,
    )


def full_plan() -> Plan:
    return Plan(
        name="bench",
        drain_n=20_000,
        concurrencies=(1, 4, 16),
        enqueue_single=3_000,
        enqueue_bulk=20_000,
        wake_samples=300,
        backlog=1_000_000,
        backlog_samples=200,
    )
