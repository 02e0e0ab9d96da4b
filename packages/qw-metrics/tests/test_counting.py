"""Producer-side counting, label bounds, threads, and the settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from prometheus_client import CollectorRegistry

import qw
from qw.errors import ConfigurationError
from qw.plugin.manager import QwPluginManager
from qw_metrics import NO_TASK, OTHER, Metrics, MetricsPlugin, Settings


def _client(url: str, namespace: str, metrics: Metrics) -> qw.Client:
    plugins = QwPluginManager()
    plugins.register(MetricsPlugin(metrics))
    return qw.open(url, namespace=namespace, plugins=plugins)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_producer_counts_jobs_and_workflow_steps(
    url: str, namespace: str, metrics: Metrics, registry: CollectorRegistry
) -> None:
    with _client(url, namespace, metrics) as client:
        client.enqueue(
            [
                qw.NewJob("p", {"task": "p.send", "args": [1]}),
                qw.NewJob("p", {"task": "p.send", "args": [2]}, dedupe_key="k"),
                qw.NewJob("p", {"raw": True}),
            ]
        )
        client.enqueue([qw.NewJob("p", {"task": "p.send", "args": [3]}, dedupe_key="k")])
        steps = [qw.NewJob("p", {"task": "p.step", "args": [i]}) for i in range(3)]
        assert client.create_workflow("wf-1", steps).created
        again = [qw.NewJob("p", {"task": "p.step", "args": [i]}) for i in range(3)]
        assert not client.create_workflow("wf-1", again).created
    assert _value(registry, "qw_jobs_enqueued_total", queue="p", task="p.send") == 2
    assert _value(registry, "qw_jobs_deduplicated_total", queue="p", task="p.send") == 1
    assert _value(registry, "qw_jobs_enqueued_total", queue="p", task=NO_TASK) == 1
    assert _value(registry, "qw_jobs_enqueued_total", queue="p", task="p.step") == 3
    assert _value(registry, "qw_jobs_deduplicated_total", queue="p", task="p.step") == 3
    # Nothing ran in this process.
    assert _value(registry, "qw_jobs_started_total", queue="p", task="p.send") == 0


def test_an_async_producer_counts_its_enqueues(
    url: str, namespace: str, metrics: Metrics, registry: CollectorRegistry
) -> None:
    plugins = QwPluginManager()
    plugins.register(MetricsPlugin(metrics))

    async def main() -> None:
        async with await qw.open_async(url, namespace=namespace, plugins=plugins) as client:
            await client.enqueue([qw.NewJob("a", {"task": "a.x"}) for _ in range(3)])
            await client.enqueue([qw.NewJob("a", {"task": "a.x"}, dedupe_key="d")])
            await client.enqueue([qw.NewJob("a", {"task": "a.x"}, dedupe_key="d")])

    asyncio.run(main())
    assert _value(registry, "qw_jobs_enqueued_total", queue="a", task="a.x") == 4
    assert _value(registry, "qw_jobs_deduplicated_total", queue="a", task="a.x") == 1


def test_label_pairs_are_bounded(sqlite_url: str, namespace: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_series=2)
    with _client(sqlite_url, namespace, metrics) as client:
        for name in ("a", "b", "c", "d", "a"):
            client.enqueue([qw.NewJob("q", {"task": name})])
    assert _value(registry, "qw_jobs_enqueued_total", queue="q", task="a") == 2
    assert _value(registry, "qw_jobs_enqueued_total", queue="q", task="b") == 1
    assert _value(registry, "qw_jobs_enqueued_total", queue="q", task="c") is None
    assert _value(registry, "qw_jobs_enqueued_total", queue=OTHER, task=OTHER) == 2
    assert len(metrics.totals()) == 3


def test_counts_of_ended_threads_are_kept(
    sqlite_url: str, namespace: str, metrics: Metrics, registry: CollectorRegistry
) -> None:
    with _client(sqlite_url, namespace, metrics) as client:

        def produce() -> None:
            client.enqueue([qw.NewJob("t", {"task": "t.x"}) for _ in range(5)])

        for _ in range(20):
            thread = threading.Thread(target=produce)
            thread.start()
            thread.join()
        produce()  # and this thread's own
    assert _value(registry, "qw_jobs_enqueued_total", queue="t", task="t.x") == 105
    # Folded: the ended threads' tables are merged, not kept one per thread.
    assert len(metrics._tables) == 1
    assert _value(registry, "qw_jobs_enqueued_total", queue="t", task="t.x") == 105


def test_metrics_refuse_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="run_buckets"):
        Metrics(None, run_buckets=(1.0, 0.5))
    with pytest.raises(ConfigurationError, match="wait_buckets"):
        Metrics(None, wait_buckets=())
    with pytest.raises(ConfigurationError, match="run_buckets"):
        Metrics(None, run_buckets=(1.0, float("inf")))
    with pytest.raises(ConfigurationError, match="max_series"):
        Metrics(None, max_series=0)


def test_custom_buckets(sqlite_url: str, namespace: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, run_buckets=(0.5,), wait_buckets=(1.0, 2.0))
    Metrics(None)  # registers nothing: a second one on the same names is fine
    names = {m.name for m in registry.collect()}
    assert {"qw_job_run_seconds", "qw_job_wait_seconds", "qw_queue_jobs"} <= names
    assert metrics.run_bounds == (0.5,)
    assert metrics.wait_bounds == (1.0, 2.0)


def test_settings_defaults_and_off() -> None:
    assert Settings.from_env({}) == Settings(port=9808, addr="0.0.0.0", counts_s=15.0)
    env = {"QW_METRICS_PORT": "off", "QW_METRICS_COUNTS_S": "0", "QW_METRICS_ADDR": " ::1 "}
    assert Settings.from_env(env) == Settings(port=None, addr="::1", counts_s=None)
    env = {"QW_METRICS_PORT": "0", "QW_METRICS_COUNTS_S": "2.5"}
    assert Settings.from_env(env) == Settings(port=0, counts_s=2.5)
    assert Settings.from_env({"QW_METRICS_COUNTS_S": "OFF"}).counts_s is None


def test_each_supervised_child_serves_on_its_own_port() -> None:
    from qw.worker.supervisor import WORKER_INDEX_ENV
    from qw_metrics import settings

    assert settings.WORKER_INDEX_ENV == WORKER_INDEX_ENV
    child = {WORKER_INDEX_ENV: "3"}
    assert Settings.from_env(child).port == 9811
    assert Settings.from_env({**child, "QW_METRICS_PORT": "9000"}).port == 9003
    # A free port or none stays so; an index past the last port leaves the port as given.
    assert Settings.from_env({**child, "QW_METRICS_PORT": "0"}).port == 0
    assert Settings.from_env({**child, "QW_METRICS_PORT": "off"}).port is None
    assert Settings.from_env({**child, "QW_METRICS_PORT": "65535"}).port == 65535
    assert Settings.from_env({WORKER_INDEX_ENV: "x"}).port == 9808


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QW_METRICS_PORT", "http", "QW_METRICS_PORT must be a port number"),
        ("QW_METRICS_PORT", "65536", "QW_METRICS_PORT must be a port number"),
        ("QW_METRICS_PORT", "-1", "QW_METRICS_PORT must be a port number"),
        ("QW_METRICS_COUNTS_S", "soon", "QW_METRICS_COUNTS_S must be seconds > 0"),
        ("QW_METRICS_COUNTS_S", "-1", "QW_METRICS_COUNTS_S must be seconds > 0"),
        ("QW_METRICS_COUNTS_S", "inf", "QW_METRICS_COUNTS_S must be seconds > 0"),
        ("QW_METRICS_COUNTS_S", "nan", "QW_METRICS_COUNTS_S must be seconds > 0"),
        ("QW_METRICS_ADDR", " ", "QW_METRICS_ADDR is set but empty"),
    ],
)
def test_bad_settings(
    name: str, value: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({name: value}, strict=True)
    caplog.set_level(logging.WARNING, logger="qw_metrics")
    settings = Settings.from_env({name: value})
    assert message in caplog.text
    if name != "QW_METRICS_ADDR":
        assert repr(value) in caplog.text
    # Off for the server, the default for the others.
    expected = {
        "QW_METRICS_PORT": Settings(port=None),
        "QW_METRICS_COUNTS_S": Settings(),
        "QW_METRICS_ADDR": Settings(),
    }[name]
    assert settings == expected
