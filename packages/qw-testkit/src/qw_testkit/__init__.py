"""qw_testkit: the qw storage contract as a pytest suite that backend authors subclass."""

from __future__ import annotations

__all__: list[str] = []
