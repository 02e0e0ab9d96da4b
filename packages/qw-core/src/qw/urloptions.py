"""A backend URL's query options, parsed against a declared schema.

A backend declares its options once (``boolean``, ``integer``, ``seconds``,
``text``, ``choice``) and calls :func:`parse_options` on the query string.
Every backend then refuses the same things the same way: an unknown option
(unless the backend passes it through to its driver), an option given twice,
a boolean other than ``true/false/1/0/yes/no/on/off`` (any case), a number
that is not one or is out of range. Messages name the option and the bad
value, never the URL (it may hold a password).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl

from qw.errors import ConfigurationError

__all__ = [
    "Option",
    "Options",
    "boolean",
    "choice",
    "integer",
    "parse_options",
    "seconds",
    "text",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Option(Generic[T]):
    """One declared option: its name, its default, and how its text becomes a value.

    ``convert`` raises ValueError with the reason (``"must be ..."``).
    """

    name: str
    default: T
    convert: Callable[[str], T]
    help: str


def _parse_bool(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError("must be true or false (or 1/0, yes/no, on/off)")


def boolean(name: str, default: bool = False) -> Option[bool]:
    """``true/false/1/0/yes/no/on/off``, in any case."""
    return Option(name, default, _parse_bool, "true|false")


def integer(
    name: str, default: int, low: int | None = None, high: int | None = None
) -> Option[int]:
    """A decimal integer, in ``[low, high]`` when given."""

    def convert(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("must be an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be in [{low}, {high}]")
        return value

    return Option(name, default, convert, "integer")


def seconds(
    name: str, default: float, low: float | None = None, high: float | None = None
) -> Option[float]:
    """A finite number of seconds, in ``[low, high]`` when given."""

    def convert(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("must be a number of seconds") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be in [{low}, {high}] seconds")
        return value

    return Option(name, default, convert, "seconds")


def text(name: str, default: str) -> Option[str]:
    """Any text, as given."""
    return Option(name, default, str, "text")


def choice(
    name: str, default: str, choices: Iterable[str], *, ignore_case: bool = False
) -> Option[str]:
    """One of ``choices``; with ``ignore_case`` the answer is spelled as declared."""
    allowed = tuple(choices)

    def convert(raw: str) -> str:
        for known in allowed:
            if raw == known or (ignore_case and raw.lower() == known.lower()):
                return known
        raise ValueError(f"must be one of {', '.join(allowed)}")

    return Option(name, default, convert, "|".join(allowed))


@dataclass(frozen=True, slots=True)
class Options:
    """What a query string said: typed values, and what was passed through."""

    values: dict[str, Any]
    given: frozenset[str]
    #: ``(key, value)`` pairs the backend passes to its driver, in order.
    passed: list[tuple[str, str]] = field(default_factory=list)

    def __getitem__(self, option: Option[T]) -> T:
        value: T = self.values[option.name]
        return value

    def has(self, option: Option[Any]) -> bool:
        """Whether the URL gave ``option`` (rather than its default applying)."""
        return option.name in self.given


def parse_options(
    query: str,
    schema: Iterable[Option[Any]],
    *,
    what: str,
    pass_through: Callable[[str], bool] | None = None,
    repeat_pass_through: bool = True,
    strict: bool = False,
) -> Options:
    """Parse ``query`` (the URL's query string, without ``?``) against ``schema``.

    ``what`` names the backend in messages (``"sqlite"``). A key outside the
    schema is refused unless ``pass_through(key)`` says the driver takes it;
    such keys may repeat unless ``repeat_pass_through`` is False. A declared
    option may never repeat. ``strict`` refuses a ``key`` without ``=``.
    """
    declared = {option.name: option for option in schema}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=strict)
    except ValueError as exc:
        raise ConfigurationError(f"cannot read the {what} URL's options: {exc}") from None
    raw: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    seen_passed: set[str] = set()
    unknown: list[str] = []
    for key, value in pairs:
        if key in declared:
            if key in raw:
                raise ConfigurationError(f"{what} option {key!r} is given twice in the URL")
            raw[key] = value
        elif pass_through is not None and pass_through(key):
            if not repeat_pass_through and key in seen_passed:
                raise ConfigurationError(f"{what} option {key!r} is given twice in the URL")
            seen_passed.add(key)
            passed.append((key, value))
        elif key not in unknown:
            unknown.append(key)
    if unknown:
        known = ", ".join(f"{o.name} ({o.help})" for o in declared.values()) or "none"
        raise ConfigurationError(
            f"unknown {what} option(s) {', '.join(sorted(unknown))} in the URL; "
            f"qw's {what} options are: {known}"
            + ("; other keys must be the driver's" if pass_through is not None else "")
        )
    values: dict[str, Any] = {}
    for name, option in declared.items():
        if name not in raw:
            values[name] = option.default
            continue
        try:
            values[name] = option.convert(raw[name])
        except ValueError as exc:
            raise ConfigurationError(f"{what} option {name} {exc}, not {raw[name]!r}") from None
    return Options(values, frozenset(raw), passed)
