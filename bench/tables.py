"""What every phase's report reads and writes: a phase's result, a figure in a table cell."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["fmt", "load_span", "phase_result"]


def phase_result(phase: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``result`` of a phase that ran (``{"ok": True, "result": ...}``), else None."""
    if phase and phase.get("ok"):
        result: dict[str, Any] = phase["result"]
        return result
    return None


def fmt(x: float | None, digits: int = 0) -> str:
    """``x`` with thousands separators and ``digits`` decimals; ``-`` for none or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def load_span(entry: Mapping[str, Any]) -> str:
    """The 1-minute load average at a part's start and end (``load_start``, ``load_end``)."""
    a, b = entry.get("load_start"), entry.get("load_end")
    return f"{a[0]:.2f} → {b[0]:.2f}" if a and b else "-"
