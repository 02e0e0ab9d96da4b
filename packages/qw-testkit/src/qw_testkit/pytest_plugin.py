"""The ``pytest11`` plugin of qw-testkit: markers, options and the run summary only."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "qw_contract: a qw storage-contract test (qw_testkit)")
