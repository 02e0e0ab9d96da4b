"""The task payload: ``{"task": NAME, "args": [...], "kwargs": {...}}``, built and read here only.

A job enqueued through :class:`qw.App` carries this JSON object; a worker
reads it back with :func:`decode_task_payload`. Both directions check the
same shape, so a malformed payload is refused at enqueue and fails its job
with a clear error at run time instead of running the task without its
arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qw.errors import InvalidPayload
from qw.model import JSONValue

__all__ = ["TaskInvocation", "decode_task_payload", "task_name_of", "task_payload"]


@dataclass(frozen=True, slots=True)
class TaskInvocation:
    """A decoded task payload: which task, with which arguments."""

    name: str
    args: list[JSONValue]
    kwargs: dict[str, JSONValue]


def task_payload(
    name: str, args: Sequence[JSONValue] = (), kwargs: Mapping[str, JSONValue] | None = None
) -> dict[str, JSONValue]:
    """The JSON payload that asks a worker to run task ``name``.

    Raises :class:`~qw.errors.InvalidPayload` if ``name`` is not a non-empty
    string, ``args`` is a string, bytes or mapping rather than a sequence, or
    ``kwargs`` is not a mapping with string keys. Whether the values are
    JSON is checked where the payload is encoded, by :class:`qw.Client`.
    """
    if not isinstance(name, str) or not name:
        raise InvalidPayload(f"a task name is a non-empty string, not {name!r}")
    # A str or bytes is a Sequence, and list() of it would spread its characters.
    if isinstance(args, (str, bytes, bytearray, Mapping)) or not isinstance(args, Sequence):
        raise InvalidPayload(f"task args must be a sequence, not {type(args).__name__}")
    if kwargs is None:
        kw: dict[str, JSONValue] = {}
    elif isinstance(kwargs, Mapping):
        kw = dict(kwargs)
        for key in kw:
            if not isinstance(key, str):
                raise InvalidPayload(f"task kwargs keys must be strings, not {key!r}")
    else:
        # dict() would accept a list of pairs, or raise a bare ValueError.
        raise InvalidPayload(f"task kwargs must be a mapping, not {type(kwargs).__name__}")
    return {"task": name, "args": list(args), "kwargs": kw}


def decode_task_payload(payload: JSONValue) -> TaskInvocation:
    """Read a task payload; raise :class:`~qw.errors.InvalidPayload` if it is not one.

    ``args`` and ``kwargs`` may be absent (no arguments); when present they
    must be a JSON array and a JSON object. Other keys are left alone.
    """
    if not isinstance(payload, dict):
        raise InvalidPayload(f"a task payload is a JSON object, not {_kind(payload)}")
    name = payload.get("task")
    if not isinstance(name, str) or not name:
        raise InvalidPayload("a task payload needs 'task', a non-empty string")
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, list):
        raise InvalidPayload(f"task payload 'args' must be a JSON array, not {_kind(args)}")
    if not isinstance(kwargs, dict):
        raise InvalidPayload(f"task payload 'kwargs' must be a JSON object, not {_kind(kwargs)}")
    return TaskInvocation(name, args, kwargs)


def task_name_of(payload: JSONValue) -> str | None:
    """The task a payload names, or None when it names none (for display and events)."""
    name = payload.get("task") if isinstance(payload, dict) else None
    return name if isinstance(name, str) else None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
