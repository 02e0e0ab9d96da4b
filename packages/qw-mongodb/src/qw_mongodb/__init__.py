"""qw_mongodb: the MongoDB backend of qw (pymongo).

It relies only on single-document atomicity and unique indexes, so it works on
a standalone ``mongod``, a replica set or a sharded cluster alike.
"""

from __future__ import annotations

from qw_mongodb.backend import MongoBackend

__all__ = ["MongoBackend"]
