"""The Lua scripts, composed once per process and called by SHA.

Each script is the generated prelude (:func:`qw_redis.keys.lua_prelude`,
naming only the keys the script's code reaches: :func:`key_names`),
the shared helpers of ``lua/common.lua``, those of ``lua/apply.lua`` and
``lua/workflow.lua`` for the scripts that apply decided transitions (and so
may end workflow steps), those of ``lua/steps.lua`` for the scripts that
insert steps, and its own body; of the prelude and the helpers, only the
definitions its body reaches (:func:`reached`), since every call runs each
definition a script holds. redis-py's
``register_script`` sends ``EVALSHA`` and falls back to loading the source
once when a server has not seen it (after a restart, or on a new node).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from qw_redis.keys import SCHEDULE_KEYS, lua_prelude, referenced_keys

__all__ = ["FLOWS", "NAMES", "READS", "STANDALONE", "key_names", "reached", "source"]

#: Scripts that change state.
WRITES = (
    "enqueue",
    "enqueue_one",
    "claim",
    "renew",
    "finish",
    "reclaim",
    "cancel",
    "switch",
    "heartbeat",
    "remove_worker",
    "ack",
    "purge",
    "create_workflow",
    "add_steps",
    "cancel_workflow",
    "migrate",
    "set_limit",
    "set_progress",
    "retry",
)
#: Scripts that only read (one round trip, one consistent snapshot).
READS = (
    "now",
    "expired",
    "get",
    "list",
    "fetch",
    "workers",
    "get_workflow",
    "list_workflows",
    "limit_keys",
)
NAMES = WRITES + READS
#: Scripts with KEYS of their own (the schedule records, keys.SCHEDULE_KEYS)
#: and no prelude: they touch no job.
STANDALONE = ("schedule_advance", "schedule_remove", "schedule_list")

#: Scripts that may touch a workflow step or record: they get the workflow
#: keys too (keys.FLOW_COMMON, keys.FLOW_COLUMNS) and ``lua/flows.lua``.
FLOWS = frozenset(
    {
        "claim",
        "finish",
        "reclaim",
        "cancel",
        "expired",
        "get",
        "list",
        "purge",
        "create_workflow",
        "add_steps",
        "cancel_workflow",
        "get_workflow",
        "list_workflows",
        "set_progress",  # no workflow is touched: it needs lua/flows.lua's outbox writer
        "retry",  # a plain job only (a step is refused before): the outbox writer too
    }
)
_NEEDS_ROW = frozenset({"get", "list"})
#: Scripts that apply decided transitions (``lua/apply.lua``), and so may end
#: workflow steps (``lua/workflow.lua``: the settle rule and workflow accounting).
_APPLIES = frozenset({"finish", "reclaim", "cancel", "cancel_workflow", "retry"})
#: Scripts that insert workflow steps (``lua/steps.lua``).
_INSERTS_STEPS = frozenset({"create_workflow", "add_steps"})


def _text(name: str) -> str:
    return files("qw_redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


# A top-level definition of shared Lua: its first line starts in column 0.
_DEFINES = re.compile(r"local function (\w+)|local ((?:\w+\s*,\s*)*\w+)\b|(\w+) = function")
# A Lua string literal or comment (neither names anything).
_NO_NAMES = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|--[^\n]*""")
# A name, unless it follows a single '.' or ':' (a field or method, not a variable).
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_]\w*|(?<=\.\.)[A-Za-z_]\w*")


def _names(code: str) -> set[str]:
    return set(_NAME.findall(_NO_NAMES.sub(" ", code)))


def _chunks(library: str) -> list[tuple[str, frozenset[str]]]:
    """``library``'s top-level statements, each with the names it defines (none: not a definition).

    A statement starts at a line in column 0 that is neither ``end``, a
    closing bracket nor a comment; the comments and blank lines before it
    belong to it.
    """
    chunks: list[tuple[list[str], frozenset[str]]] = []
    pending: list[str] = []
    for line in library.splitlines(keepends=True):
        if not line.strip() or line.startswith("--"):
            pending.append(line)
        elif line[0].isspace() or re.match(r"(end\b|[)}\]])", line):
            if not chunks:
                chunks.append(([], frozenset()))
            chunks[-1][0].extend(pending)
            chunks[-1][0].append(line)
            pending = []
        else:
            m = _DEFINES.match(line)
            defined: frozenset[str] = frozenset()
            if m:
                defined = frozenset(
                    n.strip() for n in (m.group(1) or m.group(2) or m.group(3)).split(",")
                )
            chunks.append(([*pending, line], defined))
            pending = []
    if pending:
        chunks.append((pending, frozenset()))
    return [("".join(lines), defined) for lines, defined in chunks]


def reached(library: str, code: str) -> str:
    """Of shared Lua ``library``, the top-level statements ``code`` needs, in order, then ``code``.

    Those that define no name (the queue header's loop) and, transitively,
    those defining a name any kept statement or ``code`` uses: a definition
    of a name is kept with every other of the same name, so each name is
    bound as in the whole library. Definitions must not have side effects
    (a dropped one is never run); a name the code uses but nothing defines
    is Redis's own (``redis``, ``KEYS``, ``string``), or an error the
    script's first call reports (Redis scripts cannot read undefined globals).
    """
    chunks = _chunks(library)
    by_name: dict[str, list[int]] = {}
    for i, (_, defined) in enumerate(chunks):
        for n in defined:
            by_name.setdefault(n, []).append(i)
    keep = {i for i, (_, defined) in enumerate(chunks) if not defined}
    todo = [_names(code), *(_names(chunks[i][0]) for i in keep)]
    seen: set[str] = set()
    while todo:
        for n in todo.pop() - seen:
            seen.add(n)
            for i in by_name.get(n, ()):
                if i not in keep:
                    keep.add(i)
                    todo.append(_names(chunks[i][0]))
    return "".join(chunks[i][0] for i in sorted(keep)) + code


@cache
def _body(name: str) -> str:
    """Script ``name`` without its prelude: the shared helpers it reaches, then its own code."""
    if name not in NAMES:
        raise KeyError(name)
    parts = [_text("common")]
    if name in FLOWS:
        parts.append(_text("flows"))
    if name in _NEEDS_ROW:
        parts.append(_text("read"))
    if name in _APPLIES:
        parts.append(_text("apply"))
        parts.append(_text("workflow"))
    if name in _INSERTS_STEPS:
        parts.append(_text("steps"))
    return reached("\n".join(parts) + "\n", _text(name))


@cache
def key_names(name: str) -> tuple[str, ...]:
    """The names of the keys script ``name`` declares, in ``KEYS`` order, before its queues' keys.

    Those its code can reach (:func:`qw_redis.keys.referenced_keys`), so a
    call sends no key its script never touches; a standalone script's are
    :data:`~qw_redis.keys.SCHEDULE_KEYS`.
    """
    if name in STANDALONE:
        return SCHEDULE_KEYS
    return referenced_keys(_body(name))


@cache
def source(name: str, publish_command: str) -> str:
    """The full Lua source of script ``name`` for a server using ``publish_command``."""
    if name in STANDALONE:
        return _text(name)
    body = _body(name)
    return reached(lua_prelude(publish_command, name in FLOWS, key_names(name)), body)
