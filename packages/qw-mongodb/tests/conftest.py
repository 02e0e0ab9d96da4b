"""The banner that says which store this run used, and the ``store`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mongo_store import STAND_IN, URL, Store, redacted, store_client


def pytest_configure(config: pytest.Config) -> None:
    # mongomock itself calls datetime.utcnow(); that noise is the stand-in's, not ours.
    config.addinivalue_line(
        "filterwarnings", "ignore:datetime.datetime.utcnow:DeprecationWarning:mongomock"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    if URL:
        return [f"qw-mongodb: REAL MongoDB server at {redacted(URL)} (QW_TEST_MONGODB_URL)"]
    bar = "!" * 78
    return [
        bar,
        f"qw-mongodb: NO MongoDB SERVER. Running against the in-process stand-in {STAND_IN!r}.",
        "  These results say nothing about a real server. mongomock is not thread-safe and has",
        "  no change streams or capped collections: concurrency, multi-process and native",
        "  wake-up tests are SKIPPED (reason names the stand-in), never counted as passing.",
        "  For the real thing: docker run -d -p 27017:27017 mongo:7 &&",
        "  QW_TEST_MONGODB_URL=mongodb://127.0.0.1:27017 pytest packages/qw-mongodb/tests",
        bar,
    ]


@pytest.fixture
def store() -> Iterator[Store]:
    """The store of this run (real server or stand-in); databases dropped at teardown."""
    client = store_client()
    opened = Store(client, URL)
    yield opened
    opened.drop()
    if URL is not None:
        client.close()
