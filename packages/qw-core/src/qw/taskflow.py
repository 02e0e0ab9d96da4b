"""What a task declares about flow control, and the limit key of each call.

``@app.task(limit_key="user:{user_id}", concurrency=2, rate="10/min", fair=True)``
becomes a :class:`TaskFlow`, checked once at registration; each call's key is
the template filled from the call's arguments (by parameter name, defaults
included), or what a callable returns for them.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qw.errors import InvalidInput
from qw.model import Limit
from qw.validation import check_limit, check_limit_key

__all__ = ["KeySource", "RateSpec", "TaskFlow", "parse_rate"]

#: A key template (``"user:{user_id}"``) or a function of the call's arguments.
KeySource = str | Callable[..., str]
#: ``(starts, seconds)``, or text such as ``"10/min"``, ``"3/s"``, ``"100/h"``, ``"5/30s"``.
RateSpec = tuple[int, float] | str

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")


def parse_rate(rate: RateSpec) -> tuple[int, float]:
    """``rate`` as ``(starts, seconds)``; text is ``N/unit`` or ``N/Kunit`` (s, min, h, d)."""
    if isinstance(rate, str):
        match = _RATE.fullmatch(rate)
        if match is None or match.group(3) not in _UNITS:
            raise InvalidInput(
                f"rate {rate!r} is not N/unit: write e.g. '10/min', '3/s', '100/h', '5/30s'"
            )
        count, times, unit = match.groups()
        return int(count), float(times or 1) * _UNITS[unit]
    if isinstance(rate, tuple) and len(rate) == 2:
        return rate[0], rate[1]
    raise InvalidInput(f"rate takes (starts, seconds) or text like '10/min', not {rate!r}")


@dataclass(frozen=True, slots=True)
class TaskFlow:
    """A task's limit key source, its limit for that key, and whether it claims fairly."""

    key: KeySource
    limit: Limit | None = None
    fair: bool = False

    @classmethod
    def declare(
        cls,
        fn: Callable[..., Any],
        *,
        limit_key: KeySource | None,
        concurrency: int | None,
        rate: RateSpec | None,
        fair: bool,
    ) -> TaskFlow | None:
        """Check a task's declaration (at registration, before any job); None if it has none."""
        if limit_key is None:
            if concurrency is not None or rate is not None or fair:
                raise InvalidInput("concurrency, rate and fair need a limit_key")
            return None
        if isinstance(limit_key, str):
            _check_template(fn, limit_key)
        elif not callable(limit_key):
            raise InvalidInput(f"limit_key is a template or a function, not {limit_key!r}")
        if not isinstance(fair, bool):
            raise InvalidInput(f"fair must be a bool, not {fair!r}")
        starts, per = parse_rate(rate) if rate is not None else (None, None)
        limit = None
        if concurrency is not None or starts is not None:
            limit = check_limit(Limit(concurrency, starts, per))
        return cls(limit_key, limit, fair)

    def key_for(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> str:
        """The limit key of one call of ``fn``."""
        if not isinstance(self.key, str):
            return check_limit_key(self.key(*args, **kwargs))
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"cannot fill limit key {self.key!r}: {exc}") from None
        bound.apply_defaults()
        try:
            key = self.key.format_map(bound.arguments)
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            raise InvalidInput(f"cannot fill limit key {self.key!r}: {exc!r}") from None
        return check_limit_key(key)


def _check_template(fn: Callable[..., Any], template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise InvalidInput(f"limit key template {template!r}: {exc}") from None
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in fields:
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise InvalidInput(
                f"limit key template {template!r}: name the argument, as {{user_id}}"
            )
        if root not in params and not takes_any:
            raise InvalidInput(
                f"limit key template {template!r} names {root!r}, which "
                f"{getattr(fn, '__qualname__', fn)!r} does not take"
            )
    if not fields:
        check_limit_key(template)
