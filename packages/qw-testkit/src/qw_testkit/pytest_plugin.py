"""The ``pytest11`` plugin of qw-testkit: markers, an option and the run summary only.

The suite itself is not collected from here; a backend's tests import
:class:`qw_testkit.BackendContractTests` and subclass it.
"""

from __future__ import annotations

import os

import pytest

from qw.capabilities import Capabilities

__all__ = ["PROFILE_ENV", "record_backend"]

#: Environment variable naming the Hypothesis effort: "default", "thorough", or "quick"
#: (no shrinking of a failure).
PROFILE_ENV = "QW_TESTKIT_HYPOTHESIS_PROFILE"

_seen_key = pytest.StashKey[dict[str, tuple[Capabilities, str]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qw-testkit")
    group.addoption(
        "--qw-hypothesis-profile",
        choices=("default", "thorough", "quick"),
        default=None,
        help=f"effort of the qw state-machine test (overrides ${PROFILE_ENV})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "qw_requires(*flags): needs these backend capabilities")
    config.stash[_seen_key] = {}
    profile = config.getoption("--qw-hypothesis-profile", default=None)
    if profile:
        os.environ[PROFILE_ENV] = profile


def record_backend(config: pytest.Config, name: str, caps: Capabilities, note: str) -> None:
    """Remember that contract tests ran against backend ``name`` (for the summary)."""
    seen = config.stash.get(_seen_key, None)
    if seen is not None:
        seen.setdefault(name, (caps, note))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seen = terminalreporter.config.stash.get(_seen_key, {})
    if not seen:
        return
    terminalreporter.section("qw-testkit contract")
    for name, (caps, note) in sorted(seen.items()):
        flags = ", ".join(f"{k}={v}" for k, v in caps.flags().items())
        terminalreporter.write_line(f"backend {name!r}: {flags}")
        if note:
            terminalreporter.write_line(f"!!! STAND-IN STORE !!! {note}", yellow=True, bold=True)
