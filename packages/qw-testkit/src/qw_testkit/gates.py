"""Capability gates: a test that needs a flag the backend does not declare is skipped, with why.

Never a bare ``return``: every skip names the backend, the flag and, for a
stand-in store, the stand-in, so a run can never look greener than it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from qw.capabilities import Capabilities

__all__ = ["FLAGS", "capability_skip_reason", "requires", "stand_in_note"]

F = TypeVar("F", bound=Callable[..., object])

#: The boolean capabilities a test may require: every boolean field of Capabilities,
#: so a flag added there can be gated on here without a second list to keep in step.
FLAGS = frozenset(Capabilities().flags())

MARKER = "qw_requires"


def requires(*flags: str) -> Callable[[F], F]:
    """Mark a contract test as needing every capability in ``flags``.

    The base class's gate fixture skips it, with a reason, when the backend
    under test does not declare one of them.
    """
    unknown = set(flags) - FLAGS
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {sorted(FLAGS)}")
    mark = getattr(pytest.mark, MARKER)(*flags)

    def decorate(fn: F) -> F:
        return mark(fn)  # type: ignore[no-any-return]

    return decorate


def stand_in_note(backend: str, caps: Capabilities) -> str:
    """The loud note for results obtained against a stand-in store ('' for a real store)."""
    if caps.stand_in is None:
        return ""
    return (
        f"backend {backend!r} runs against the stand-in {caps.stand_in!r}, "
        f"not a real {backend} server: these results say nothing about the real store"
    )


def capability_skip_reason(backend: str, caps: Capabilities, flags: tuple[str, ...]) -> str | None:
    """Why a test needing ``flags`` cannot run on ``backend``; None when it can."""
    missing = [flag for flag in flags if not getattr(caps, flag)]
    if not missing:
        return None
    reason = f"backend {backend!r} does not declare capability {', '.join(missing)}"
    note = stand_in_note(backend, caps)
    return f"{reason} ({note})" if note else reason
