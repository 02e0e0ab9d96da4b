"""Time-ordered job ids (UUIDv7, RFC 9562), made on the client."""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_job_id"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_job_id() -> str:
    """A new UUIDv7 string; ids made by one process sort in creation order."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or earlier, if the clock stepped back) millisecond: keep
            # order with the 12-bit counter, spilling into the next ms.
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))
