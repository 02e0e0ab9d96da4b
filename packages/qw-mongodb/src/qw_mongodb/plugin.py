"""Entry point of the ``mongodb`` backend; pymongo is imported only when it is loaded."""

from __future__ import annotations

from typing import Any

from qw.plugin import hookimpl


@hookimpl
def qw_register_backends() -> list[Any]:
    from qw_mongodb.backend import MongoBackend

    return [MongoBackend]
