"""The key layout of one namespace: every key of a shard shares its hash tag.

All keys start ``qw:{<namespace>}:``, so a namespace lives in one Cluster
slot and every script's keys are co-located. A sharded namespace (see
:mod:`qw_redis.sharded`) has that layout once per shard: shard 0 is the
plain one, shard ``s`` starts ``qw:{<namespace>/<s>}:``, each in its own
slot. Only validated names are ever
put into a key: the namespace and queue patterns of :mod:`qw.validation`
exclude ``{``, ``}``, ``:``, ``*`` and whitespace, so no name can move a key
to another slot or collide with another key's shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from qw.errors import InvalidName
from qw.model import JobStatus, ParentFailure, WorkflowState
from qw.transitions import EVENT_CANCELLED, REASON_PARENT_FAILED, workflow_event
from qw.validation import validate_namespace, validate_queue

__all__ = [
    "COLUMNS",
    "COMMON",
    "FLOW_COLUMNS",
    "FLOW_COMMON",
    "LEGACY_COLUMNS",
    "PACKED",
    "SCHEDULE_KEYS",
    "SCHEMA_VERSION",
    "SCRIPT_KEYS",
    "Keyspace",
    "lua_prelude",
    "packed_queue",
    "referenced_keys",
]

#: The layout version of a namespace's keys, kept in ``qw:{ns}:schema``.
#: 1 (qw-redis 0.1.0, no marker): one hash per field, for every field.
#: 2: the fields fixed at enqueue packed into ``f:job``; workflows.
#: 3: flow control (limit keys, fair ranks, parking); version-2 data is
#: version 3's as it is (a job without ``f:lim`` has no key and rank 0), the
#: marker only moved so that a qw-redis knowing 2 refuses a namespace whose
#: ready sets may hold ranked members (see ``lua/common.lua``'s ready_member).
#: 4: progress (``f:prog``); version-3 data is version 4's as it is (a job
#: without ``f:prog`` has reported no progress). The marker moves so that a
#: qw-redis knowing 3, which neither reads nor purges ``f:prog``, cannot
#: open the namespace: its purge would leave a job's progress behind, to
#: show on a later job created with the same id.
SCHEMA_VERSION = 4

#: Namespace-wide keys every script receives first, in this order.
COMMON: tuple[str, ...] = (
    "seq",  # INCR: FIFO sequence and event cursors
    "wake",  # pub/sub channel (a channel, not a key; declared so Cluster routes it)
    "ended",  # pub/sub channel: ids of jobs that became terminal (for wait_finished)
    "running",  # ZSET id -> lease expiry (µs)
    "counts",  # HASH "<queue>:<status>" -> count
    "dedupe",  # HASH dedupe key -> id of the live job holding it
    "switch",  # HASH "*" | "q:<queue>" -> "0"/"1"
    "ids",  # ZSET (lex) every job id
    "done",  # ZSET id -> finished_at (µs) of terminal jobs
    "events",  # STREAM the outbox, entry id "<cursor>-0"
    "ev_unacked",  # ZSET cursor -> cursor
    "ev_acked",  # ZSET cursor -> created_at (µs)
    "workers",  # HASH worker id -> JSON
    "wstart",  # HASH worker id -> started_at (µs)
    "wseen",  # HASH worker id -> last_seen (µs)
    "st_waiting",  # ZSET (lex) ids by status, for list_jobs
    "st_queued",
    "st_running",
    "st_succeeded",
    "st_failed",
    "st_cancelled",
    # Flow control (see lua/limits.lua). Members "<key>\n..." of the lex
    # sorted sets (score 0) group by limit key: keys are printable text, so
    # '\n' never occurs in one and every byte of a key sorts above it.
    "limits",  # HASH limit key -> the operators' limit ("<c>,<rate>,<per>")
    "lkeys",  # ZSET (lex) the keys of 'limits', for keys() paging
    "kjobs",  # ZSET (lex) "<key>\n<id>" of every job with a key, for list_jobs(key=)
    "lq",  # ZSET (lex) "<key>\n<id>" of its queued jobs (parked ones included)
    "lrun",  # ZSET (lex) "<key>\n<id>" of its running jobs: the concurrency count
    "lstart",  # ZSET (lex) "<key>\n<start µs, 16 digits>\n<id>": recent rate-limited starts
    "fnext",  # HASH "<queue>\n<key>" -> the next fair rank of the pair
    "fclock",  # HASH queue -> its fair clock
    "parked",  # ZSET (lex) held-back due jobs out of their ready set (see claim.lua)
    "pkq",  # ZSET (lex) "<key>\n<queue>" where the key has parked jobs
    "kfree",  # ZSET key -> kfseq when it last may have made room for its parked jobs
    "kfseq",  # INCR: the order of kfree's entries
    "kcur",  # HASH queue -> the kfseq up to which its claims looked at kfree
    "pwake",  # ZSET (lex) "<queue>\n<µs, 16 digits>\n<key>": when a rate window makes room
    "pwt",  # HASH "<queue>\n<key>" -> its pwake time (16 digits)
    # A sharded namespace (qw_redis.sharded): on shard 0 only.
    "shards",  # STRING how many shards new queues are spread over (absent: never sharded)
    "placement",  # HASH queue -> the shard holding it, fixed when first used
)

#: Namespace-wide keys of workflows, received after :data:`COLUMNS` by the
#: scripts that may touch a workflow step (see ``scripts.FLOWS``); the others
#: (enqueue, renew, the outbox, workers, switches) do without, so a plain
#: job's enqueue declares no more keys than before workflows. A 0.1.0
#: namespace has none of them, and every job in it is plain.
FLOW_COMMON: tuple[str, ...] = (
    "wf_ids",  # ZSET (lex) every workflow id
    "ws_running",  # ZSET (lex) workflow ids by state, for list_workflows
    "ws_succeeded",
    "ws_failed",
    "ws_cancelled",
    "wrec",  # HASH workflow id -> "<state> <cancel 0|1> <created µs> <finished µs|-> <output|->"
    "wnum",  # HASH "<workflow>:live|failed|cancelled" -> count of its steps
    "wqueues",  # HASH workflow id -> the queues of its steps, space-separated
    "wsteps",  # ZSET (lex) "<workflow> <step id>", for list_jobs(workflow=) and purge
    "wcounts",  # HASH "<workflow>:<status>" -> count of its steps
    "wdone",  # ZSET workflow id -> finished_at (µs) of ended workflows, for purge
)

#: Job fields: one HASH per field, ``id -> value`` (times are integer µs).
#: ``job`` packs the fields fixed at enqueue (:data:`PACKED`) into one value,
#: so enqueue writes, and claim reads, one field instead of seven.
COLUMNS: tuple[str, ...] = (
    "job",
    "run_at",
    "att",
    "status",
    "result",
    "error",
    "started",
    "finished",
    "worker",
    "lease",
    "cancel",
    "token",
    "fby",
    "lim",  # flow control: "<fair 0|1> <rank> <limit or -> <key>" (absent: no limit key)
    "prog",  # progress: "<at µs> <fraction or -> <m<message> or n>" (absent: none reported)
)

#: Job fields of workflow steps, received after :data:`FLOW_COMMON`; a job
#: without ``wf`` is a plain job and has none of them.
FLOW_COLUMNS: tuple[str, ...] = (
    "wf",  # the workflow id
    "parents",  # parent ids, space-separated, in order
    "children",  # child ids, space-separated, in the order they were added
    "opf",  # on_parent_failure
    "fparents",  # parents that ended failed or cancelled, in the order they ended
    "pending",  # parents not ended yet, while waiting (absent: none)
)

#: The fields packed in the ``job`` column, in order:
#: ``prio:max:created:seq:queue:<dedupe length or -1>:<dedupe><payload>``.
#: Only the last two can hold ':' (a dedupe key by its length, the payload by
#: coming last); queue names exclude ':'.
PACKED: tuple[str, ...] = ("prio", "max", "created", "seq", "queue", "dedupe", "payload")

#: The hashes of version 1 that version 2 packs into ``f:job`` (the PACKED fields).
LEGACY_COLUMNS: tuple[str, ...] = PACKED


#: The schedule records (lua/schedules.lua), kept apart from the job keys:
#: name -> "<spec>\n<tz>\n<queue>\n<task>" and name -> last tick (µs).
SCHEDULE_KEYS: tuple[str, ...] = ("sched", "stick")

#: Every key a script's prelude can name, by its name after the prefix
#: (a column's hash is ``f:<column>``), in the order a script's ``KEYS``
#: lists those it declares (:func:`referenced_keys`).
SCRIPT_KEYS: tuple[str, ...] = (
    *COMMON,
    *(f"f:{c}" for c in COLUMNS),
    *FLOW_COMMON,
    *(f"f:{c}" for c in FLOW_COLUMNS),
)

# A Lua string literal (kept: it may hold '--') or a comment (dropped).
_LUA_TOKEN = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|--[^\n]*""")
_COLUMN_NAMES = frozenset((*COLUMNS, *FLOW_COLUMNS))


def referenced_keys(code: str) -> tuple[str, ...]:
    """The names (of :data:`SCRIPT_KEYS`) of the keys Lua ``code`` can reach, in that order.

    A script is sent only these, so each call packs and converts as few
    keys as it needs (on a Cluster too, every key it touches is declared).
    Read from the code, never listed by hand: ``K.<name>``, ``F.<column>``,
    ``ST.<status>`` / ``WS.<state>`` (a subscript of ``ST`` or ``WS`` that
    is not a literal reaches every status or state). ``F[...]`` (common.lua's
    overlay) reaches a column only by a name the code spells as a literal
    (``get('status', id)``, ``ipairs({'job', 'lim'})``; a packed field is
    the ``job`` column), and ``pairs(F)`` (purge) reaches every column. The
    prelude makes reaching any other name an error (see :func:`lua_prelude`).
    """
    code = _LUA_TOKEN.sub(lambda m: "" if m.group().startswith("--") else m.group(), code)
    found = set(re.findall(r"\bK\.(\w+)", code))
    found.update(f"f:{c}" for c in re.findall(r"\bF\.(\w+)", code))
    for table, prefix in (("ST", "st_"), ("WS", "ws_")):
        found.update(prefix + n for n in re.findall(rf"\b{table}\.(\w+)", code))
        found.update(prefix + n for n in re.findall(rf"\b{table}\['(\w+)'\]", code))
        if re.search(rf"\b{table}\[(?!')", code):
            found.update(n for n in SCRIPT_KEYS if n.startswith(prefix))
    if re.search(r"\bpairs\(F\)", code):
        found.update(n for n in SCRIPT_KEYS if n.startswith("f:"))
    elif re.search(r"\bF\[", code):
        literals = set(re.findall(r"'(\w+)'", code))
        found.update(f"f:{c}" for c in literals & _COLUMN_NAMES)
        if literals & set(PACKED):
            found.add("f:job")
    unknown = found - set(SCRIPT_KEYS)
    if unknown:
        raise ValueError(f"Lua code names keys that are not in the layout: {sorted(unknown)}")
    return tuple(n for n in SCRIPT_KEYS if n in found)


def packed_queue(value: str) -> str:
    """The queue named in a ``job`` column value."""
    return value.split(":", 5)[4]


_FORBIDDEN = frozenset("{}*:?[]\\ \t\r\n")


def _check_safe(name: str, what: str) -> str:
    # Redundant with the core's patterns on purpose: a future pattern change
    # must not silently alter the key layout.
    if not name or _FORBIDDEN.intersection(name):
        raise InvalidName(f"{what} {name!r} contains characters that would change the key layout")
    return name


class Keyspace:
    """Key names for one namespace."""

    def __init__(self, namespace: str, shard: int = 0) -> None:
        self.namespace = _check_safe(validate_namespace(namespace), "namespace")
        self.shard = shard
        # '/' is in no namespace name, so no shard's tag is another namespace's.
        self.tag = self.namespace if shard == 0 else f"{self.namespace}/{shard}"
        self.prefix = f"qw:{{{self.tag}}}:"
        self._named = {name: self.prefix + name for name in (*COMMON, *FLOW_COMMON)}
        self._columns = {col: self.prefix + "f:" + col for col in (*COLUMNS, *FLOW_COLUMNS)}
        self.channel = self._named["wake"]
        #: Where the scripts that end jobs publish the ids they ended.
        self.ended_channel = self._named["ended"]

    def script_keys(self, names: Sequence[str] = SCRIPT_KEYS) -> list[str]:
        """The keys named ``names`` (of :data:`SCRIPT_KEYS`; by default all), in that order."""
        return [self.prefix + name for name in names]

    @property
    def schema_keys(self) -> list[str]:
        """The keys ``lua/migrate.lua`` gets after the common ones: marker, legacy hashes."""
        return [self.prefix + "schema"] + [self.prefix + "f:" + col for col in LEGACY_COLUMNS]

    @property
    def shards_key(self) -> str:
        """Shard 0's string: how many shards new queues are spread over (absent: 1)."""
        return self._named["shards"]

    @property
    def placement_key(self) -> str:
        """Shard 0's hash: queue -> the shard holding it, fixed when first used."""
        return self._named["placement"]

    @property
    def schedule_keys(self) -> list[str]:
        """The keys of ``lua/schedules.lua``: definitions, then ticks."""
        return [self.prefix + name for name in SCHEDULE_KEYS]

    def key(self, name: str) -> str:
        """A namespace-wide key by its name in :data:`COMMON` or :data:`FLOW_COMMON`."""
        return self._named[name]

    def column(self, name: str) -> str:
        """The hash holding job field ``name`` (of :data:`COLUMNS` or :data:`FLOW_COLUMNS`)."""
        return self._columns[name]

    @staticmethod
    def check_queue(queue: str) -> str:
        """``queue`` if it is a valid queue name that is safe in a key, else InvalidName."""
        return _check_safe(validate_queue(queue), "queue")

    def queue_keys(self, queues: Sequence[str]) -> list[str]:
        """``[ready, scheduled]`` for each queue, after validating every name."""
        keys: list[str] = []
        for queue in queues:
            q = _check_safe(validate_queue(queue), "queue")
            keys.append(f"{self.prefix}q:{q}:ready")
            keys.append(f"{self.prefix}q:{q}:sched")
        return keys


def lua_prelude(
    publish_command: str, flows: bool = False, keys: Sequence[str] = SCRIPT_KEYS
) -> str:
    """Lua that names a script's keys (``K.*``, ``F.*``, ``ST.*``, ``WS.*``) and the job statuses.

    ``keys`` are names of :data:`SCRIPT_KEYS` (a script's, from
    :func:`referenced_keys`), declared as ``KEYS[1..NC]`` in that order, so
    the Python and Lua sides cannot disagree on the order of ``KEYS``; any
    other name of ``K``, ``F``, ``ST`` or ``WS`` raises a script error
    instead of reading as nil. Generated from :class:`~qw.model.JobStatus`
    too, on how a status is spelled: ``STATUS.RUNNING`` is ``'running'``,
    and ``TERMINAL[s]`` is true for the terminal statuses. Nothing else of
    the state machine is in Lua: the scripts are handed decided transitions,
    except the settle rule of workflow steps, which must run inside the
    write that ends a step (``lua/workflow.lua``); the words it writes
    (workflow states, their events, the parent-failure policy, the reason
    and event of a settle-cancel) are generated here from :mod:`qw.model`
    and :mod:`qw.transitions` too, when ``flows`` (the scripts of
    ``scripts.FLOWS``).
    """
    statuses = ", ".join(f"{s.name} = '{s.value}'" for s in JobStatus)
    order = ", ".join(f"'{s.value}'" for s in JobStatus)
    terminal = ", ".join(f"{s.value} = true" for s in JobStatus if s.is_terminal)
    states = ", ".join(f"{s.name} = '{s.value}'" for s in WorkflowState)
    events = ", ".join(f"{s.value} = '{workflow_event('', s)[0]}'" for s in WorkflowState)
    policies = ", ".join(f"{p.name} = '{p.value}'" for p in ParentFailure)
    declared: dict[str, list[str]] = {"K": [], "F": [], "ST": [], "WS": []}
    for i, name in enumerate(keys, start=1):
        if name.startswith("f:"):
            declared["F"].append(f"{name[2:]} = KEYS[{i}]")
        elif name.startswith("st_"):
            declared["ST"].append(f"{name[3:]} = KEYS[{i}]")
        elif name.startswith("ws_"):
            declared["WS"].append(f"{name[3:]} = KEYS[{i}]")
        elif name in SCRIPT_KEYS:
            declared["K"].append(f"{name} = KEYS[{i}]")
        else:
            raise ValueError(f"{name!r} is not a key of the layout")
    lines = [
        "local UNDECLARED = {__index = function(_, name)",
        "  error('qw-redis: this script does not declare key ' .. tostring(name))",
        "end}",
    ]
    for table in ("K", "F", "ST") + (("WS",) if flows else ()):
        lines.append(f"local {table} = setmetatable({{{', '.join(declared[table])}}}, UNDECLARED)")
    lines += [
        f"local STATUS = {{{statuses}}}",
        f"local TERMINAL = {{{terminal}}}",
    ]
    if flows:
        lines += [
            f"local STATUSES = {{{order}}}",
            f"local WSTATE = {{{states}}}",
            f"local WF_EVENT = {{{events}}}",
            f"local PF = {{{policies}}}",
            f"local EV_CANCELLED = '{EVENT_CANCELLED}'",
            f"local REASON_PARENT_FAILED = '{REASON_PARENT_FAILED}'",
        ]
    fields = ", ".join(f"{name} = {i}" for i, name in enumerate(PACKED, start=1))
    lines.append(f"local PACKED = {{{fields}}}")
    lines.append(f"local NC = {len(keys)}")
    lines.append(f"local PUBCMD = '{publish_command}'")
    return "\n".join(lines) + "\n"
