"""The Lua scripts, composed once per process and called by SHA.

Each script is the generated prelude (:func:`qw_redis.keys.lua_prelude`,
naming only the keys the script's code reaches: :func:`key_names`),
the shared helpers of ``lua/common.lua``, those of ``lua/apply.lua`` and
``lua/workflow.lua`` for the scripts that apply decided transitions (and so
may end workflow steps), those of ``lua/steps.lua`` for the scripts that
insert steps, and its own body. redis-py's
``register_script`` sends ``EVALSHA`` and falls back to loading the source
once when a server has not seen it (after a restart, or on a new node).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from qw_redis.keys import SCHEDULE_KEYS, lua_prelude, referenced_keys

__all__ = ["FLOWS", "NAMES", "READS", "STANDALONE", "key_names", "source"]

#: Scripts that change state.
WRITES = (
    "enqueue",
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
    }
)
_NEEDS_ROW = frozenset({"get", "list"})
#: Scripts that apply decided transitions (``lua/apply.lua``), and so may end
#: workflow steps (``lua/workflow.lua``: the settle rule and workflow accounting).
_APPLIES = frozenset({"finish", "reclaim", "cancel", "cancel_workflow"})
#: Scripts that insert workflow steps (``lua/steps.lua``).
_INSERTS_STEPS = frozenset({"create_workflow", "add_steps"})


def _text(name: str) -> str:
    return files("qw_redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def _body(name: str) -> str:
    """Script ``name`` without its prelude: the shared helpers it uses, then its own code."""
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
    parts.append(_text(name))
    return "\n".join(parts)


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
    return lua_prelude(publish_command, name in FLOWS, key_names(name)) + _body(name)
