"""Backend discovery on real entry-point metadata (the fixture distributions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import qw
from qw import registry
from qw.backends.memory import MemoryBackend
from qw.errors import BackendConflict, BackendNotFound, BackendUnavailable, ConfigurationError

DRIVER_MODULES = (
    "psycopg",
    "redis",
    "pymongo",
    "mongomock",
    "qw_postgres",
    "qw_redis",
    "qw_mongodb",
)


def _modules_after(code: str, env: dict[str, str]) -> list[str]:
    """The qw/fixture/driver modules a fresh interpreter holds after running ``code``."""
    script = (
        "import json, sys\n"
        f"{code}\n"
        "prefixes = ('qw', 'qw_fixture') + " + repr(DRIVER_MODULES) + "\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith(prefixes))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
    )
    return list(json.loads(out.stdout))


# -- names and URLs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("memory://", "memory"),
        ("memory://store", "memory"),
        ("memory", "memory"),
        ("sqlite:///var/jobs.db", "sqlite"),
        ("postgres://u@h/db", "postgres"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("mongodb://h", "mongodb"),
        ("MEMORY://", "memory"),
    ],
)
def test_backend_name_for_urls_and_names(given: str, name: str) -> None:
    # Aliases (pg, rediss, ...) come from their distributions' metadata: see
    # test_the_shipped_aliases_come_from_their_distributions_metadata.
    assert registry.backend_name_for(given) == name


@pytest.mark.parametrize("bad", ["c:\\jobs.db", "host:6379", "://nothing"])
def test_backend_name_for_rejects_non_urls(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        registry.backend_name_for(bad)


def test_load_backend_by_url_name_and_alias() -> None:
    assert registry.load_backend("memory") is MemoryBackend
    assert registry.load_backend("memory://anything") is MemoryBackend


def test_open_accepts_a_bare_backend_name(memory_url: str) -> None:
    with qw.open("memory", namespace="bare") as client:
        assert isinstance(client.backend, MemoryBackend)
        assert client.namespace == "bare"


def test_memory_is_found_through_entry_points_like_any_backend() -> None:
    (entry,) = registry.discover()["memory"]
    assert entry.distribution == "qw-core"
    assert entry.target == "qw.backends.memory"
    assert entry.version == qw.__version__


# -- not found ---------------------------------------------------------------


def test_unknown_backend_names_what_is_installed() -> None:
    with pytest.raises(BackendNotFound) as info:
        registry.load_backend("nosuchbackend://x")
    message = str(info.value)
    assert "'nosuchbackend'" in message
    assert "memory" in message  # the installed ones are listed
    assert "pip install" not in message  # no hint for a name nobody ships


def test_a_known_but_missing_backend_carries_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.INSTALL_HINTS, "qwfixturemissing", "qw-fixture-missing")
    with pytest.raises(BackendNotFound, match=r"pip install qw-fixture-missing"):
        registry.load_backend("qwfixturemissing://somewhere")


def test_the_shipped_backends_have_install_hints() -> None:
    assert registry.INSTALL_HINTS == {
        "postgres": "qw-postgres",
        "redis": "qw-redis",
        "mongodb": "qw-mongodb",
    }


def test_backend_not_found_is_a_lookup_error_and_a_qw_error() -> None:
    with pytest.raises(LookupError):
        registry.load_backend("nosuchbackend")
    with pytest.raises(qw.QwError):
        registry.load_backend("nosuchbackend")


# -- the fixture distributions ------------------------------------------------


def test_discover_reads_metadata_of_installed_distributions(fixture_dists: Path) -> None:
    found = registry.discover()
    assert [e.distribution for e in found["lazyone"]] == ["qw-fixture-lazy"]
    assert found["lazyone"][0].version == "0.3.0"
    assert found["lazyone"][0].target == "qw_fixture_lazy.one"
    assert sorted(e.distribution for e in found["dupname"]) == [
        "qw-fixture-dup-a",
        "qw-fixture-dup-b",
    ]


def test_discover_imports_nothing(subprocess_env: dict[str, str]) -> None:
    loaded = _modules_after("import qw.registry; qw.registry.discover()", subprocess_env)
    assert not [m for m in loaded if m.startswith("qw_fixture")]
    assert "qw.backends.memory" not in loaded
    assert not [m for m in loaded if m.split(".")[0] in DRIVER_MODULES]


def test_importing_qw_imports_no_backend_and_no_driver(subprocess_env: dict[str, str]) -> None:
    loaded = _modules_after("import qw", subprocess_env)
    assert not [m for m in loaded if m.startswith(("qw.backends.", "qw_fixture"))]
    assert not [m for m in loaded if m.split(".")[0] in DRIVER_MODULES]


def test_naming_one_backend_imports_only_its_module(subprocess_env: dict[str, str]) -> None:
    loaded = _modules_after(
        "import qw.registry; qw.registry.load_backend('lazyone')", subprocess_env
    )
    assert "qw_fixture_lazy.one" in loaded
    fixtures = [m for m in loaded if m.startswith("qw_fixture")]
    assert fixtures == ["qw_fixture_lazy", "qw_fixture_lazy.one"]
    assert not [m for m in loaded if m.startswith("qw.backends.")]
    assert not [m for m in loaded if m.split(".")[0] in DRIVER_MODULES]


def test_opening_memory_imports_no_other_backend(subprocess_env: dict[str, str]) -> None:
    loaded = _modules_after("import qw; qw.open('memory://', namespace='x')", subprocess_env)
    assert [m for m in loaded if m.startswith("qw.backends.")] == ["qw.backends.memory"]
    assert not [m for m in loaded if m.startswith("qw_fixture")]
    assert not [m for m in loaded if m.split(".")[0] in DRIVER_MODULES]


def test_load_backend_returns_the_class_the_hook_registers(fixture_dists: Path) -> None:
    cls = registry.load_backend("lazyone")
    assert cls.__module__ == "qw_fixture_lazy.one"
    assert cls.name == "lazyone"
    assert cls.capabilities.stand_in == "fixture-one"
    assert registry.load_backend("lazyone://x") is cls  # loaded once, then cached


def test_duplicate_backend_name_is_an_error_naming_both_distributions(
    fixture_dists: Path,
) -> None:
    with pytest.raises(BackendConflict) as info:
        registry.load_backend("dupname")
    message = str(info.value)
    assert "qw-fixture-dup-a 1.0.0" in message
    assert "qw-fixture-dup-b 2.0.0" in message
    assert "'dupname'" in message
    # Neither claimant was imported: a conflict is refused before loading.
    assert "qw_fixture_dup_a" not in sys.modules
    assert "qw_fixture_dup_b" not in sys.modules


def test_duplicate_backend_name_through_qw_open(fixture_dists: Path) -> None:
    with pytest.raises(BackendConflict, match=r"qw-fixture-dup-a.*qw-fixture-dup-b"):
        qw.open("dupname://", namespace="x")


def test_load_failure_names_the_distribution(fixture_dists: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        registry.load_backend("broken")
    message = str(info.value)
    assert "qw-fixture-lazy 0.3.0" in message
    assert "qw_fixture_driver_that_is_not_installed" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_a_hook_without_the_announced_class_is_reported(fixture_dists: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"qw-fixture-lazy announces backend 'noclass'"):
        registry.load_backend("noclass")


def test_fixture_distributions_vanish_with_their_path(fixture_site: Path) -> None:
    # Guards the other tests: the fixtures are visible only where put on sys.path.
    assert "dupname" not in registry.discover()
    with pytest.raises(BackendNotFound):
        registry.load_backend("dupname")


# -- extra URL schemes (the qw.url_schemes group) ------------------------------


def test_a_distribution_can_announce_an_extra_url_scheme(fixture_dists: Path) -> None:
    assert registry.backend_name_for("lazy+one://somewhere") == "lazyone"
    assert registry.load_backend("LAZY+ONE://somewhere").name == "lazyone"
    (entry,) = registry.url_schemes()["lazy+one"]
    assert (entry.distribution, entry.target) == ("qw-fixture-lazy", "lazyone")


def test_resolving_an_extra_scheme_imports_only_that_backend(
    subprocess_env: dict[str, str],
) -> None:
    loaded = _modules_after(
        "import qw.registry; qw.registry.load_backend('lazy+one://x')", subprocess_env
    )
    assert [m for m in loaded if m.startswith("qw_fixture")] == [
        "qw_fixture_lazy",
        "qw_fixture_lazy.one",
    ]
    assert not [m for m in loaded if m.startswith("qw.backends.")]


def test_two_distributions_claiming_one_scheme_is_a_conflict_naming_both(
    fixture_dists: Path,
) -> None:
    with pytest.raises(BackendConflict) as info:
        registry.backend_name_for("dup+scheme://x")
    message = str(info.value)
    assert "'dup+scheme'" in message
    assert "qw-fixture-dup-a 1.0.0" in message
    assert "qw-fixture-dup-b 2.0.0" in message


@pytest.mark.parametrize(
    ("scheme", "backend"),
    [
        ("pg", "postgres"),
        ("postgresql", "postgres"),
        ("mongo", "mongodb"),
        ("mongodb+srv", "mongodb"),
        ("rediss", "redis"),
        ("redis+cluster", "redis"),
        ("rediss+cluster", "redis"),
    ],
)
def test_the_shipped_aliases_come_from_their_distributions_metadata(
    scheme: str, backend: str
) -> None:
    claims = registry.url_schemes().get(scheme)
    if claims is None:
        pytest.skip(f"qw-{backend} is not installed here, so nothing announces {scheme!r}")
    assert [e.target for e in claims] == [backend]
    assert claims[0].distribution == f"qw-{backend}"
    assert registry.backend_name_for(f"{scheme}://h") == backend
