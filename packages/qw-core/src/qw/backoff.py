"""Retry delays: exponential with jitter, so that failing jobs do not retry in lockstep."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from qw.errors import InvalidInput

__all__ = ["Backoff"]

# 2.0 ** 1024 overflows a float; no retry delay needs an exponent near that.
_MAX_EXPONENT = 256


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry number ``attempt`` (1 after the first failure).

    ``base * factor ** (attempt - 1)``, capped at ``max``. With ``jitter``
    the delay is drawn uniformly from its upper half ("equal jitter"): never
    under half the nominal delay, and spread enough to break up herds.
    ``Backoff.fixed(5)`` always waits 5 seconds.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"Backoff.{name} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InvalidInput(f"Backoff.{name} must be finite and >= 0, not {value!r}")
        if self.factor < 1:
            raise InvalidInput(f"Backoff.factor must be >= 1, not {self.factor!r}")

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        """Always ``seconds``, without jitter."""
        return cls(base=seconds, factor=1.0, max=seconds, jitter=False)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before running again after failed attempt ``attempt``."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        nominal = min(self.max, self.base * self.factor**exponent)
        if not self.jitter:
            return nominal
        return nominal / 2 + nominal / 2 * rand()
