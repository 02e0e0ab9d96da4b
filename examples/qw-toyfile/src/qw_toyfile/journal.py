"""One namespace's state as an append-only JSON-lines journal, under ``flock``.

Each write transaction appends one line holding what it changed (rows of
the :data:`TABLES` set or deleted, and the small scalars) and ``fsync``s it:
a line is the unit of atomicity, so a transition and its outbox event land
together or not at all. A process keeps the state it has
replayed and, on its next transaction, reads only the lines others appended
since. Once the journal grows long it is compacted into a single snapshot
line (written aside, ``fsync``ed, renamed over), which other processes notice
by the file's new inode.

Journals written before workflows, or before flow control, lack the tables
added since (``workflows``; ``limits``, ``starts``, ``ranks``, ``clocks``,
``schedules``) in their lines and snapshot; replay treats them as empty. Their
job rows carry no workflow or limit fields: plain jobs, without a limit key.
Progress added no table: a job row that has reported carries a ``progress``
field, and rows written before it (or never reported) lack it, which reads
as no progress. Nothing needs migrating.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Journal", "State"]

State = dict[str, Any]

#: Keyed collections, diffed row by row. ``limits``: the operators' limit per
#: key; ``starts``: a key's recent rate-limited claim times; ``ranks``: the
#: next fair rank per ``"<queue> <key>"``; ``clocks``: each queue's fair clock.
TABLES = (
    "jobs", "workflows", "events", "workers",
    "limits", "starts", "ranks", "clocks", "schedules",
)  # fmt: skip
#: Small values, written whole in every entry.
SCALARS = ("seq", "enabled", "queues")
#: Entries since the last snapshot before a compaction.
COMPACT_AFTER = 5000


def empty_state() -> State:
    return {
        "seq": 0, "enabled": True, "queues": {},
        **{table: {} for table in TABLES},
    }  # fmt: skip


@dataclass
class _Replica:
    """The state this process has replayed from one journal file."""

    inode: int
    offset: int
    entries: int
    state: State


#: Per journal path. Only touched while holding that journal's lock.
_replicas: dict[Path, _Replica] = {}


class Journal:
    """Serialised read-modify-write transactions over one journal file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[State]:
        """Yield the current state; with ``write``, persist what the caller changed.

        If the body raises, nothing is written and the in-memory replica is
        dropped (it may be half-changed); the next transaction replays the file.
        """
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                replica = self._catch_up()
                before = _shallow_copy(replica.state) if write else None
                try:
                    yield replica.state
                except BaseException:
                    _replicas.pop(self.path, None)
                    raise
                if before is not None:
                    entry = _diff(before, replica.state)
                    if any(entry[table] for table in TABLES) or any(
                        entry[key] != before[key] for key in SCALARS
                    ):
                        self._append(replica, entry)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _catch_up(self) -> _Replica:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            replica = _Replica(inode=0, offset=0, entries=0, state=empty_state())
            _replicas[self.path] = replica
            return replica
        known = _replicas.get(self.path)
        if known is None or known.inode != stat.st_ino or known.offset > stat.st_size:
            replica = _Replica(inode=stat.st_ino, offset=0, entries=0, state=empty_state())
        else:
            replica = known
        if stat.st_size > replica.offset:
            with open(self.path, "rb") as journal:
                journal.seek(replica.offset)
                tail = journal.read()
            # The piece after the last newline is a torn write from a crash:
            # it never committed, and the next append truncates it away.
            for line in tail.split(b"\n")[:-1]:
                _apply(replica.state, json.loads(line))
                replica.offset += len(line) + 1
                replica.entries += 1
        _replicas[self.path] = replica
        return replica

    def _append(self, replica: _Replica, entry: State) -> None:
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        with open(self.path, "ab") as journal:
            if journal.tell() > replica.offset:
                journal.truncate(replica.offset)
            journal.write(line)
            journal.flush()
            os.fsync(journal.fileno())
            replica.inode = os.fstat(journal.fileno()).st_ino
        replica.offset += len(line)
        replica.entries += 1
        if replica.entries > COMPACT_AFTER:
            self._compact(replica)

    def _compact(self, replica: _Replica) -> None:
        line = json.dumps({"snapshot": True, **replica.state}, separators=(",", ":")).encode()
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as out:
            out.write(line + b"\n")
            out.flush()
            os.fsync(out.fileno())
            inode = os.fstat(out.fileno()).st_ino
        os.replace(tmp, self.path)
        replica.inode, replica.offset, replica.entries = inode, len(line) + 1, 1


def _shallow_copy(state: State) -> State:
    copy = dict(state, queues=dict(state["queues"]))
    for table in TABLES:
        copy[table] = {key: dict(row) for key, row in state[table].items()}
    return copy


def _diff(before: State, after: State) -> State:
    entry: State = {key: after[key] for key in SCALARS}
    for table in TABLES:
        old, new = before[table], after[table]
        changed: dict[str, Any] = {k: row for k, row in new.items() if old.get(k) != row}
        changed.update(dict.fromkeys(old.keys() - new.keys()))
        entry[table] = changed
    return entry


def _apply(state: State, entry: State) -> None:
    if entry.get("snapshot"):
        # Over an empty state: an older snapshot lacks tables added since.
        state.clear()
        state.update(empty_state())
        state.update({k: v for k, v in entry.items() if k != "snapshot"})
        return
    for table in TABLES:
        rows = state[table]
        # An older line lacks tables added since: it changed none of their rows.
        for key, row in entry.get(table, {}).items():
            if row is None:
                rows.pop(key, None)
            else:
                rows[key] = row
    for key in SCALARS:
        state[key] = entry[key]
