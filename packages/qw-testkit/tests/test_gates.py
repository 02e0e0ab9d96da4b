"""Capability gates: reasons that name the backend, the flag and any stand-in."""

from __future__ import annotations

import pytest

from qw.capabilities import Capabilities
from qw_testkit import capability_skip_reason, requires, stand_in_note


def test_declared_capabilities_do_not_skip() -> None:
    assert capability_skip_reason("memory", Capabilities(), ("thread_safe",)) is None


def test_a_missing_capability_is_named() -> None:
    reason = capability_skip_reason("memory", Capabilities(), ("multi_process",))
    assert reason == "backend 'memory' does not declare capability multi_process"


def test_a_stand_in_is_named_in_every_reason() -> None:
    caps = Capabilities(thread_safe=False, stand_in="mongomock")
    reason = capability_skip_reason("mongodb", caps, ("thread_safe",))
    assert reason is not None
    assert "does not declare capability thread_safe" in reason
    assert "stand-in 'mongomock'" in reason
    assert "mongomock" in stand_in_note("mongodb", caps)
    assert stand_in_note("mongodb", Capabilities()) == ""


def test_requires_refuses_unknown_flags() -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        requires("teleport")


def test_every_boolean_capability_can_be_required() -> None:
    from dataclasses import fields

    booleans = {f.name for f in fields(Capabilities) if f.type in ("bool", bool)}
    assert booleans == {
        "thread_safe",
        "multi_process",
        "native_wakeup",
        "durable",
        "queue_switch",
        "atomic_settle",
        "limits",
        "schedules",
        "progress",
        "result_wakeup",
        "retry",
        "cross_queue_atomic",
        "transactional",
    }
    for flag in booleans:
        requires(flag)
