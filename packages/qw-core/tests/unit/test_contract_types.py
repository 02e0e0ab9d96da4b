"""Small pure parts of the contract: outcomes, switches, capabilities, statuses, errors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

import qw
from qw.capabilities import Capabilities
from qw.contract import (
    STORE_EVENT_CANCELLED,
    STORE_EVENT_EXPIRED,
    Abort,
    Complete,
    Fail,
    Release,
    Switches,
)
from qw.model import JobStatus, Lease

LEASE = Lease("j", "t", datetime(2026, 1, 1, tzinfo=UTC))


def test_the_outcome_records_are_qw_models_own() -> None:
    # qw.transitions decides by them and imports qw.model only; qw.contract re-exports.
    from qw import model

    assert (Complete, Fail, Abort, Release) == (
        model.Complete,
        model.Fail,
        model.Abort,
        model.Release,
    )
    assert Fail(LEASE).retry_in is None


def test_store_event_types() -> None:
    assert STORE_EVENT_CANCELLED == "job.cancelled"
    assert STORE_EVENT_EXPIRED == "job.failed"


def test_switches() -> None:
    assert Switches().queue_enabled("any")
    off_queue = Switches(True, {"a": False})
    assert not off_queue.queue_enabled("a")
    assert off_queue.queue_enabled("b")
    off_namespace = Switches(False, {"a": True})
    assert not off_namespace.queue_enabled("a")
    assert not off_namespace.queue_enabled("b")


def test_statuses() -> None:
    assert [s for s in JobStatus if s.is_terminal] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ]
    # A waiting step holds its dedupe key: it will run.
    assert [s for s in JobStatus if s.is_live] == [
        JobStatus.WAITING,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
    ]
    assert JobStatus("queued") is JobStatus.QUEUED


def test_capability_flags() -> None:
    caps = Capabilities(multi_process=True, stand_in="mongomock")
    assert caps.flags() == {
        "thread_safe": True,
        "multi_process": True,
        "native_wakeup": False,
        "durable": False,
        "queue_switch": True,
        "atomic_settle": True,
        "limits": False,
        "schedules": False,
        "progress": False,
        "result_wakeup": False,
        "retry": False,
        "transactional": False,
        "cross_queue_atomic": True,
    }


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LEASE.token = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Capabilities().durable = True  # type: ignore[misc]


def test_memory_backend_satisfies_the_protocol(client: qw.Client) -> None:
    assert isinstance(client.backend, qw.Backend)


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (qw.InvalidName, (qw.InvalidInput, ValueError)),
        (qw.InvalidPayload, (qw.InvalidInput,)),
        (qw.DuplicateJob, (qw.InvalidInput,)),
        (qw.BackendNotFound, (qw.BackendError, LookupError)),
        (qw.BackendUnavailable, (qw.BackendError,)),
        (qw.BackendConflict, (qw.BackendError,)),
        (qw.SchemaError, (qw.BackendError,)),
        (qw.JobNotFound, (LookupError,)),
        (qw.ConfigurationError, (ValueError,)),
        (qw.LeaseLost, ()),
    ],
)
def test_error_hierarchy(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    assert issubclass(error, qw.QwError)
    for base in bases:
        assert issubclass(error, base)
