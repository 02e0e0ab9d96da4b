"""Settings of the test project: one SQLite database and, when given, one PostgreSQL database.

The tests (conftest.py) pass the places by environment, so that the worker
subprocesses they start read the very same settings:
``QWDJ_SQLITE_PATH`` (a file), ``QWDJ_PG`` (a JSON object: NAME, HOST,
PORT, USER, PASSWORD; absent when no PostgreSQL server answers).
"""

import json
import os

SECRET_KEY = "qw-django tests only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["qw_django", "qwdj_shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["QWDJ_SQLITE_PATH"],
        # The worker writes while the tests read: wait for the lock, never fail at once.
        "OPTIONS": {"timeout": 20},
    }
}
# "idle" is a queue no test worker serves.
QUEUES = ["default", "prio", "later", "idle"]
TASKS = {
    "default": {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"DATABASE": "default"},
    },
    "sqlite_on_commit": {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"DATABASE": "default", "ENQUEUE_ON_COMMIT": True},
    },
    "sqlite_retry": {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"DATABASE": "default", "MAX_ATTEMPTS": 2},
    },
}

if os.environ.get("QWDJ_PG"):
    PG = json.loads(os.environ["QWDJ_PG"])
    DATABASES["pg"] = {"ENGINE": "django.db.backends.postgresql", **PG}
    TASKS["pg"] = {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        # A schema of its own, to show STORE_OPTIONS reaching the derived URL.
        "OPTIONS": {"DATABASE": "pg", "STORE_OPTIONS": {"schema": "qw_jobs"}},
    }
    TASKS["pg_retry"] = {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {"DATABASE": "pg", "STORE_OPTIONS": {"schema": "qw_jobs"}, "MAX_ATTEMPTS": 2},
    }
    TASKS["pg_on_commit"] = {
        "BACKEND": "qw_django.QwTaskBackend",
        "QUEUES": QUEUES,
        "OPTIONS": {
            "DATABASE": "pg",
            "STORE_OPTIONS": {"schema": "qw_jobs"},
            "ENQUEUE_ON_COMMIT": True,
        },
    }
