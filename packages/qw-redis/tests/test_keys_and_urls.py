"""Key layout and URL handling: no I/O, no server needed."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from qw.errors import ConfigurationError, InvalidName
from qw.registry import backend_name_for
from qw_redis.keys import (
    COLUMNS,
    COMMON,
    FLOW_COLUMNS,
    FLOW_COMMON,
    PACKED,
    SCRIPT_KEYS,
    Keyspace,
    lua_prelude,
    referenced_keys,
)
from qw_redis.scripts import FLOWS, NAMES, key_names, reached, source
from qw_redis.urls import parse_url


@pytest.mark.parametrize(
    "namespace",
    ["a{b", "a}b", "a*b", "{acme}", "a:b", "a b", "A", "", "a?b", "a[b]", "x" * 64, "-a"],
)
def test_a_namespace_that_could_change_the_key_layout_is_refused(namespace: str) -> None:
    with pytest.raises(InvalidName):
        Keyspace(namespace)


@pytest.mark.parametrize("queue", ["q{x}", "q}", "q*", "q:ready", "q x", "", ".q", "q\n"])
def test_a_queue_that_could_change_the_key_layout_is_refused(queue: str) -> None:
    with pytest.raises(InvalidName):
        Keyspace("acme").queue_keys([queue])


def test_every_key_of_a_namespace_shares_one_hash_tag_and_slot() -> None:
    keys = Keyspace("acme")
    all_keys = (
        keys.script_keys()
        + keys.schema_keys
        + keys.schedule_keys
        + keys.queue_keys(["emails", "a.b-c_d", "Q9"])
    )
    assert all(k.startswith("qw:{acme}:") for k in all_keys)
    assert {key_slot(k.encode()) for k in all_keys} == {key_slot(b"acme")}
    assert len(set(all_keys)) == len(all_keys)


def test_two_namespaces_never_share_a_key() -> None:
    a, b = Keyspace("acme"), Keyspace("acme2")
    keys_a, keys_b = a.script_keys() + a.queue_keys(["q"]), b.script_keys() + b.queue_keys(["q"])
    assert not set(keys_a) & set(keys_b)


def test_the_lua_prelude_names_keys_in_the_order_python_sends_them() -> None:
    prelude = lua_prelude("PUBLISH")
    assert "seq = KEYS[1]" in prelude
    assert f"{COLUMNS[0]} = KEYS[{len(COMMON) + 1}]" in prelude
    assert f"local NC = {len(SCRIPT_KEYS)}" in prelude
    flows = lua_prelude("PUBLISH", flows=True)
    assert f"{FLOW_COMMON[0]} = KEYS[{len(COMMON) + len(COLUMNS) + 1}]" in flows
    every = len(COMMON) + len(COLUMNS) + len(FLOW_COMMON) + len(FLOW_COLUMNS)
    assert f"{FLOW_COLUMNS[-1]} = KEYS[{every}]" in flows
    assert f"local NC = {len(Keyspace('acme').script_keys())}" in flows
    assert "local WS" not in prelude
    some = lua_prelude("PUBLISH", keys=("ids", "st_queued", "f:job"))
    assert "local K = setmetatable({ids = KEYS[1]}, UNDECLARED)" in some
    assert "local ST = setmetatable({queued = KEYS[2]}, UNDECLARED)" in some
    assert "local F = setmetatable({job = KEYS[3]}, UNDECLARED)" in some
    assert "local NC = 3" in some
    with pytest.raises(ValueError, match="nope"):
        lua_prelude("PUBLISH", keys=("nope",))
    for name in NAMES:
        # Declared once in a script that publishes, not at all in one that never does.
        code = source(name, "SPUBLISH")
        assert code.count("local PUBCMD = 'SPUBLISH'") == int("PUBCMD," in code), name
    assert "local PUBCMD" in source("enqueue", "SPUBLISH")
    assert "local PUBCMD" not in source("now", "SPUBLISH")


def test_a_script_declares_the_keys_its_code_reaches_in_layout_order() -> None:
    assert referenced_keys("redis.call('INCR', K.seq) redis.call('HGET', F.att, id)") == (
        "seq",
        "f:att",
    )
    # Comments reach nothing; a string holding '--' does not hide the code after it.
    assert referenced_keys("-- K.ids\nlocal s = '--' redis.call('GET', K.seq)") == ("seq",)
    # The overlay reaches the columns spelled as literals; a packed field is 'job'.
    assert referenced_keys("redis.call('HGET', F[col], id) get('queue', id) get('att', id)") == (
        "f:job",
        "f:att",
    )
    assert set(referenced_keys("for _, k in pairs(F) do end")) == {
        n for n in SCRIPT_KEYS if n.startswith("f:")
    }
    assert referenced_keys("ST['queued'] WS.running") == ("st_queued", "ws_running")
    assert set(referenced_keys("ST[m.to]")) == {n for n in SCRIPT_KEYS if n.startswith("st_")}
    with pytest.raises(ValueError, match="nope"):
        referenced_keys("K.nope")
    # enqueue sends what it reaches, not the whole layout: no workflow, worker
    # or outbox key, and of the columns only those an insert writes or checks.
    enqueue = key_names("enqueue")
    assert {"seq", "ids", "dedupe", "wake", "counts", "st_queued", "f:job", "f:status"} <= set(
        enqueue
    )
    assert not {"events", "workers", "running", "f:result", "f:wf", "wf_ids"} & set(enqueue)
    assert len(enqueue) < len(SCRIPT_KEYS) // 2
    for name in NAMES:
        assert list(key_names(name)) == sorted(key_names(name), key=SCRIPT_KEYS.index), name


def test_scripts_only_reach_keys_through_KEYS() -> None:
    # Every key argument of every redis.call is a KEYS-derived name (K.*, F.*,
    # ST[...], WS[...], the queue header's ready_key/sched_key, migrate.lua's
    # SCHEMA and OLD.* (KEYS after the common ones), or a local bound to one of
    # those), never a string the script builds.
    call = re.compile(r"redis\.call\((?:'(\w+)'|PUBCMD),\s*([^,)]+)")
    allowed = re.compile(
        r"(K\.\w+|F\.\w+|F\[col\]|ST\.\w+|ST\[\w+\]|WS\[[\w.]+\]|ready_key\(.+|sched_key\(.+|sched|col"
        r"|key|index|SCHEMA|OLD\.\w+)$"
    )
    keyless = {"TIME", "INCR"}
    for name in NAMES:
        for command, first in call.findall(source(name, "PUBLISH")):
            if command == "TIME":
                continue
            assert allowed.match(first.strip()), (name, command, first)
            assert command not in keyless or first.startswith("K."), (name, command, first)
        # F[col] only ever names a column hash passed in KEYS.
        used = re.findall(r"\b(?:get|put|prefetch)\('(\w+)'", source(name, "PUBLISH"))
        listed = re.findall(
            r"'(\w+)'", " ".join(re.findall(r"ipairs\(\{([^}]*)\}", source(name, "PUBLISH")))
        )
        # A packed field (get('queue', ...)) is read through the 'job' column;
        # only the scripts that get the workflow keys touch a step column.
        known = set(COLUMNS) | set(PACKED) | (set(FLOW_COLUMNS) if name in FLOWS else set())
        assert set(used) | set(listed) <= known, name
        if name not in FLOWS:
            assert not re.search(
                r"\b(K\.(" + "|".join(FLOW_COMMON) + r")|WS\[)", source(name, "PUBLISH")
            ), name


@pytest.mark.parametrize(
    ("url", "cluster", "driver"),
    [
        ("redis://127.0.0.1:6379/0", False, "redis://127.0.0.1:6379/0"),
        ("rediss://h:6380/2", False, "rediss://h:6380/2"),
        ("redis+cluster://127.0.0.1:7000", True, "redis://127.0.0.1:7000"),
        ("rediss+cluster://u:p@h:7000", True, "rediss://u:p@h:7000"),
        (
            "redis://h/1?poll_interval=0.2&socket_timeout=3",
            False,
            "redis://h/1?socket_timeout=3",
        ),
    ],
)
def test_urls(url: str, cluster: bool, driver: str) -> None:
    config = parse_url(url)
    assert config.cluster is cluster
    assert config.driver_url == driver
    assert backend_name_for(url) == "redis"


def test_qw_options_are_read_and_stripped() -> None:
    config = parse_url("redis://h/0?poll_interval=0.25")
    assert config.poll_interval == 0.25
    assert "poll_interval" not in config.driver_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0?bogus=1",
        "redis://h/0?poll_interval=-1",
        "redis://h/0?poll_interval=nan",
        "redis://h/0?db=1&db=2",
        "redis+cluster://h:7000/3",
        "redis+cluster://h:7000?db=2",
        "redis://h/notanumber",
        "redis://:6379/0",
        "memcached://h/0",
        "redis://h:99999/0",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)


def test_a_password_never_shows_in_the_display_url() -> None:
    assert "secret" not in parse_url("redis://user:secret@h:6379/0").display


PW = "Sup3rSecretPW"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PW}@127.0.0.1:99999/0",
        f"redis://:{PW[:4]}/{PW[4:]}@127.0.0.1/0",
        f"redis://:{PW}@127.0.0.1/0?bogus=1",
        f"redis://:{PW}@[::1/0",
        f"redis://u:{PW}@/0",
    ],
)
def test_url_errors_never_show_the_password(url: str) -> None:
    from click.testing import CliRunner

    import qw
    from qw.cli import main

    with pytest.raises(ConfigurationError) as caught:
        qw.open(url)
    assert PW[4:] not in str(caught.value)
    result = CliRunner().invoke(main, ["status", "--url", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("qw: error: ConfigurationError: ")
    assert PW[4:] not in result.stdout + result.stderr


def test_the_display_url_hides_secret_options_too() -> None:
    shown = parse_url(f"redis://h:6379/0?ssl_password={PW}").display
    assert PW not in shown
    assert "ssl_password=***" in shown


def test_a_script_holds_only_the_shared_definitions_its_code_reaches() -> None:
    library = (
        "local N = tonumber(ARGV[1])\n"
        "for i = 1, N do end\n"
        "-- about f\n"
        "local function f(x) return g(x) end\n"
        "local g\n"
        "local function unused() return 'f(1)' end\n"  # a string reaches nothing
        "g = function(x)\n  return x.unused\nend\n"  # nor does a field
        "local T, U = {}, {}\n"
    )
    kept = reached(library, "return f(1) .. #U")
    assert kept == (
        "local N = tonumber(ARGV[1])\n"
        "for i = 1, N do end\n"
        "-- about f\n"
        "local function f(x) return g(x) end\n"
        "local g\n"
        "g = function(x)\n  return x.unused\nend\n"
        "local T, U = {}, {}\n"
        "return f(1) .. #U"
    )
    # A script's unreached helpers are not composed in, nor their keys declared.
    assert "local function flush()" not in source("get", "PUBLISH")
    assert "local function mark_parked" not in source("enqueue", "PUBLISH")
    assert "local function mark_parked" in source("claim", "PUBLISH")
    assert "pwake" not in key_names("enqueue")
