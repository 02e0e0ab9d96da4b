"""Retry delays; :class:`Backoff` lives in :mod:`qw.backoff` and is re-exported here."""

from __future__ import annotations

from qw.backoff import Backoff

__all__ = ["Backoff"]
