"""Where the MongoDB tests run: a real server by URL, or the mongomock stand-in."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from qw_mongodb import MongoBackend
from qw_testkit.servers import require_server, required_backends, server_url

STAND_IN = "mongomock"
URL = server_url("mongodb")


def redacted(url: str) -> str:
    """``url`` without its user and password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def probe(url: str) -> None:
    import pymongo

    client: pymongo.MongoClient[Any]
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=3000) as client:
        client.admin.command("ping")


def stand_in_backend(client: Any, namespace: str) -> MongoBackend:
    """A backend on the mongomock client, declaring what the stand-in cannot do."""
    backend = MongoBackend.from_client(client, namespace=namespace, wakeup="poll")
    backend.capabilities = replace(
        backend.capabilities,
        stand_in=STAND_IN,
        thread_safe=False,
        multi_process=False,
        native_wakeup=False,
        durable=False,  # mongomock keeps everything in this process's memory
    )
    return backend


class Store:
    """One store for a test: opens backends on it and drops their databases afterwards."""

    def __init__(self, client: Any, url: str | None) -> None:
        self.client = client
        self.url = url
        self.databases: set[str] = set()

    def open(self, namespace: str, **options: Any) -> MongoBackend:
        if self.url is None:
            backend = stand_in_backend(self.client, namespace)
        elif options:
            backend = MongoBackend.from_client(self.client, namespace=namespace, **options)
        else:
            backend = MongoBackend.from_url(self.url, namespace=namespace)
        self.databases.add(backend.database)
        return backend

    def drop(self) -> None:
        for name in self.databases:
            self.client.drop_database(name)


_mock_client: Any = None


def store_client() -> Any:
    """The client of this run: a real server's, or one shared mongomock client."""
    global _mock_client
    if URL is None:
        required = required_backends()
        if "mongodb" in required or "all" in required:
            pytest.fail(
                "QW_REQUIRE_BACKENDS requires mongodb but QW_TEST_MONGODB_URL is not set; "
                f"the stand-in {STAND_IN!r} does not count",
                pytrace=False,
            )
        import mongomock

        if _mock_client is None:
            _mock_client = mongomock.MongoClient(tz_aware=True)
        return _mock_client
    import pymongo

    return pymongo.MongoClient(require_server("mongodb", URL, probe), tz_aware=True)
