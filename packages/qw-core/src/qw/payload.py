"""The task payload: ``{"task": NAME, "args": [...], "kwargs": {...}}``, built and read here only.

A workflow step that takes its parents' results carries ``"refs"`` too: a
list of ``[where, ids]`` pairs, ``where`` an index into ``args`` or a key of
``kwargs`` (holding null until then), ``ids`` one step id (that step's
result goes there) or a list of them (the list of their results). The worker
puts the results in with :func:`resolve_refs` before it calls the task.

A payload may carry ``"headers"`` too: string entries that plugins set at
enqueue (``qw_job_enqueuing``; trace context, for one) and read back from the
job with :func:`job_headers`. The task never sees them.

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

__all__ = [
    "HEADERS",
    "Ref",
    "TaskInvocation",
    "decode_task_payload",
    "job_headers",
    "resolve_refs",
    "task_name_of",
    "task_payload",
    "with_headers",
]

#: The task payload's key for plugin headers.
HEADERS = "headers"

#: Where a parent's result goes (an args index or a kwargs key), and which
#: step's result (an id) or steps' results (a list of ids, in order).
Ref = tuple[int | str, str | list[str]]


@dataclass(frozen=True, slots=True)
class TaskInvocation:
    """A decoded task payload: which task, with which arguments."""

    name: str
    args: list[JSONValue]
    kwargs: dict[str, JSONValue]
    refs: tuple[Ref, ...] = ()

    def step_ids(self) -> list[str]:
        """Every step id the refs name, in order, each once."""
        ids: dict[str, None] = {}
        for _, ref in self.refs:
            ids.update(dict.fromkeys([ref] if isinstance(ref, str) else ref))
        return list(ids)


def task_payload(
    name: str,
    args: Sequence[JSONValue] = (),
    kwargs: Mapping[str, JSONValue] | None = None,
    refs: Sequence[Ref] = (),
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
    payload: dict[str, JSONValue] = {"task": name, "args": list(args), "kwargs": kw}
    if refs:
        payload["refs"] = [[where, ids] for where, ids in refs]
    return payload


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
    refs = payload.get("refs")
    return TaskInvocation(
        name, args, kwargs, () if refs is None else _decode_refs(refs, args, kwargs)
    )


def _decode_refs(
    refs: JSONValue, args: list[JSONValue], kwargs: dict[str, JSONValue]
) -> tuple[Ref, ...]:
    if not isinstance(refs, list):
        raise InvalidPayload(f"task payload 'refs' must be a JSON array, not {_kind(refs)}")
    out: list[Ref] = []
    for ref in refs:
        ok = isinstance(ref, list) and len(ref) == 2
        where, ids = (ref[0], ref[1]) if ok else (None, None)
        ok = ok and (
            (type(where) is int and 0 <= where < len(args))
            or (isinstance(where, str) and where in kwargs)
        )
        ok = ok and (
            isinstance(ids, str) or (isinstance(ids, list) and all(isinstance(i, str) for i in ids))
        )
        if not ok:
            raise InvalidPayload(f"task payload 'refs' holds a malformed entry {ref!r}")
        out.append((where, ids))  # type: ignore[arg-type]
    return tuple(out)


def resolve_refs(
    call: TaskInvocation, results: Mapping[str, JSONValue]
) -> tuple[list[JSONValue], dict[str, JSONValue]]:
    """``call``'s args and kwargs with each ref replaced by its steps' results.

    A step missing from ``results`` (it did not succeed) gives None.
    """
    args, kwargs = list(call.args), dict(call.kwargs)
    for where, ids in call.refs:
        value: JSONValue = (
            results.get(ids) if isinstance(ids, str) else [results.get(i) for i in ids]
        )
        if isinstance(where, int):
            args[where] = value
        else:
            kwargs[where] = value
    return args, kwargs


def task_name_of(payload: JSONValue) -> str | None:
    """The task a payload names, or None when it names none (for display and events)."""
    name = payload.get("task") if isinstance(payload, dict) else None
    return name if isinstance(name, str) else None


def with_headers(payload: JSONValue, headers: Mapping[str, str]) -> JSONValue:
    """``payload`` with ``headers`` added to its own, if it is a task payload; else unchanged.

    A new object: the caller's payload is never modified.
    """
    if not headers or task_name_of(payload) is None:
        return payload
    assert isinstance(payload, dict)
    own = payload.get(HEADERS)
    merged = {**own, **headers} if isinstance(own, dict) else dict(headers)
    return {**payload, HEADERS: merged}


def job_headers(payload: JSONValue) -> Mapping[str, str]:
    """The plugin headers a job's payload carries; empty when it has none (or bad ones)."""
    headers = payload.get(HEADERS) if isinstance(payload, dict) else None
    if not isinstance(headers, dict):
        return {}
    return {k: v for k, v in headers.items() if isinstance(v, str)}


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
