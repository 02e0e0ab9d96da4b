"""Driver exceptions into qw errors, from one table per backend.

The pattern of httpcore's ``map_exceptions``: a backend declares once which
driver exception means which qw error, and wraps every call into its driver
in :func:`map_exceptions`. The first entry whose type matches wins; the qw
error keeps the driver's message and has the driver's exception as
``__cause__``. A :class:`~qw.errors.QwError` raised inside passes untouched,
and an exception no entry matches propagates as it is.

A target is either a qw error class, or a :data:`Rule` that looks closer (an
error code, a constraint name) and returns the error to raise, or None to let
the next entry try. :func:`by_constraint` is the rule for unique-constraint
violations: they are told apart by the constraint's name, because a primary
key (a repeated job id) and a dedupe index (a race with another producer) mean
different things to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from qw.errors import BackendConflict, BackendError, QwError

__all__ = [
    "DEDUPE_RACE",
    "ErrorTable",
    "Rule",
    "Target",
    "by_constraint",
    "first_line",
    "map_exceptions",
    "to",
    "translate",
]

#: ``rule(exc, context)``: the qw error for ``exc``, or None to let later entries try.
Rule = Callable[[BaseException, str], QwError | None]
Target = type[QwError] | Rule
#: Driver exception type (or types) → what it becomes. Order matters: first match wins.
ErrorTable = Mapping[type[BaseException] | tuple[type[BaseException], ...], Target]


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _message(context: str, exc: BaseException) -> str:
    return f"{context}: {first_line(exc)}" if context else first_line(exc)


@dataclass(frozen=True, slots=True)
class _To:
    error: type[QwError]
    template: str

    def __call__(self, exc: BaseException, context: str) -> QwError:
        return self.error(
            self.template.format(
                context=context, message=first_line(exc), text=exc, type=type(exc).__name__
            )
        )


def to(error: type[QwError], template: str) -> Rule:
    """A rule raising ``error`` with ``template`` filled in.

    ``template`` may name ``{context}``, ``{message}`` (the driver's first
    line), ``{text}`` (its whole message) and ``{type}`` (its class name).
    """
    return _To(error, template)


@dataclass(frozen=True, slots=True)
class _ByConstraint:
    name_of: Callable[[BaseException], str | None]
    constraints: Mapping[str, type[QwError]]
    unknown: type[QwError]

    def __call__(self, exc: BaseException, context: str) -> QwError:
        name = self.name_of(exc)
        error = self.constraints.get(name, self.unknown) if name is not None else self.unknown
        where = f" (constraint {name})" if name is not None else ""
        return error(f"{_message(context, exc)}{where}")


def by_constraint(
    name_of: Callable[[BaseException], str | None],
    constraints: Mapping[str, type[QwError]],
    *,
    unknown: type[QwError] = BackendError,
) -> Rule:
    """A rule for unique violations: the qw error is looked up by the constraint's name.

    ``name_of`` reads the violated constraint's name from the driver exception
    (None when the driver does not say). A name missing from ``constraints``,
    or no name, gives ``unknown``: a violation qw did not plan for is a fault
    of the store, never a caller's duplicate.
    """
    return _ByConstraint(name_of, dict(constraints), unknown)


#: What a dedupe-index violation means once it reaches the caller: another
#: producer took the key between the backend's look-up and its insert, and the
#: backend's own retry did not settle it. Retrying the call is safe.
DEDUPE_RACE: type[QwError] = BackendConflict


def translate(table: ErrorTable, exc: BaseException, context: str = "") -> QwError | None:
    """The qw error the first matching entry of ``table`` makes of ``exc``, if any."""
    if isinstance(exc, QwError):
        return exc
    for kinds, target in table.items():
        if not isinstance(exc, kinds):
            continue
        error: QwError | None = (
            target(_message(context, exc)) if isinstance(target, type) else target(exc, context)
        )
        if error is not None:
            return error
    return None


@contextmanager
def map_exceptions(table: ErrorTable, context: str = "") -> Iterator[None]:
    """Re-raise a driver exception from the block as the first matching table entry.

    ``context`` prefixes the message (``"postgres: enqueue"``).
    """
    try:
        yield
    except QwError:
        raise
    except Exception as exc:
        error = translate(table, exc, context)
        if error is None:
            raise
        raise error from exc
