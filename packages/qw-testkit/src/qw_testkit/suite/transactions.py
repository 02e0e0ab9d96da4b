"""The application's transaction: jobs enqueued and finished in it exist iff it commits.

Gated on capability ``transactional``. The tests hold an application
connection from the hook :meth:`~qw_testkit.base.ContractBase.app_connection`
and write an application table of their own beside qw's through it, with
plain SQL that runs unchanged on psycopg and sqlite3 (``cursor().execute``
of literals), so that "both commit or neither" is checked on real rows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import qw
from qw.model import JobStatus, NewJob, WorkflowState
from qw_testkit.base import ContractBase, OpenClient, snapshot
from qw_testkit.gates import requires

#: The application's table: one row per (namespace, tag) a test wrote.
APP_TABLE = "qw_testkit_app_rows"
#: How long a claim racing an open transaction is given before the commit.
_RACE_S = 0.3


def _sql(conn: Any, statement: str) -> list[tuple[Any, ...]]:
    """Run ``statement`` on a DB-API connection; its rows, if it returns any."""
    cursor = conn.cursor()
    try:
        cursor.execute(statement)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        cursor.close()


class TransactionTests(ContractBase):
    # -- the application's side ----------------------------------------------

    @contextlib.contextmanager
    def _app(self, client: qw.Client) -> Iterator[Any]:
        """An application connection from the hook; a missing hook fails the test, naming it."""
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(self.app_connection())
            except NotImplementedError as exc:
                pytest.fail(
                    f"backend {client.backend.name!r} declares capability transactional, so "
                    f"the transaction tests need the hook app_connection(self): {exc}"
                )
            yield conn

    @pytest.fixture
    def app(self, client: qw.Client) -> Iterator[Any]:
        """The application's connection, with the application's table created and committed."""
        with self._app(client) as conn:
            _sql(conn, f"CREATE TABLE IF NOT EXISTS {APP_TABLE} (ns TEXT NOT NULL, tag TEXT)")
            conn.commit()
            yield conn

    def _insert_row(self, app: Any, client: qw.Client, tag: str) -> None:
        # Namespaces and tags are [a-z0-9-]: safe as literals.
        _sql(app, f"INSERT INTO {APP_TABLE} (ns, tag) VALUES ('{client.namespace}', '{tag}')")

    def _committed_rows(self, client: qw.Client) -> list[str]:
        """The tags of the namespace's committed rows, as a fresh connection reads them."""
        with self._app(client) as conn:
            rows = _sql(
                conn,
                f"SELECT tag FROM {APP_TABLE} WHERE ns = '{client.namespace}' ORDER BY tag",
            )
            conn.rollback()
        return [str(tag) for (tag,) in rows]

    @staticmethod
    def _missing(client: qw.Client, job_id: str) -> bool:
        try:
            client.get(job_id)
        except qw.JobNotFound:
            return True
        return False

    # -- enqueue ------------------------------------------------------------

    @requires("transactional")
    def test_jobs_enqueued_in_a_committed_transaction_are_claimable(
        self, client: qw.Client, app: Any
    ) -> None:
        self._insert_row(app, client, "order")
        answers = client.enqueue(
            [NewJob("q", {"i": 0}, id="tx-a"), NewJob("q", {"i": 1}, id="tx-b")], connection=app
        )
        assert [(a.id, a.created) for a in answers] == [("tx-a", True), ("tx-b", True)]
        app.commit()
        assert self._committed_rows(client) == ["order"]
        claims = client.claim(["q"], worker="w", limit=10)
        assert [(c.job.id, c.job.payload) for c in claims] == [
            ("tx-a", {"i": 0}),
            ("tx-b", {"i": 1}),
        ]

    @requires("transactional")
    def test_jobs_enqueued_in_a_rolled_back_transaction_never_exist(
        self, client: qw.Client, app: Any
    ) -> None:
        before = snapshot(client)
        self._insert_row(app, client, "order")
        client.enqueue([NewJob("q", 1, id="tx-a")], connection=app)
        app.rollback()
        assert self._committed_rows(client) == []
        assert self._missing(client, "tx-a")
        assert client.claim(["q"], worker="w", limit=10) == []
        assert snapshot(client) == before

    @requires("transactional")
    def test_jobs_are_invisible_to_another_client_until_the_commit(
        self, client: qw.Client, open_client: OpenClient, app: Any
    ) -> None:
        other = open_client(client.namespace)
        client.enqueue([NewJob("q", 1, id="tx-a")], connection=app)
        assert self._missing(other, "tx-a")
        assert other.list_jobs() == []
        assert other.counts().get("q", {}).get(JobStatus.QUEUED, 0) == 0
        # A claim racing the open transaction must not get the job before the
        # commit: it answers nothing, or (a store with one writer at a time)
        # waits for the commit and only then may take it.
        claimed: list[tuple[list[str], float]] = []

        def claim() -> None:
            claims = other.claim(["q"], worker="w", limit=10)
            claimed.append(([c.job.id for c in claims], time.monotonic()))

        racer = threading.Thread(target=claim)
        racer.start()
        time.sleep(_RACE_S)
        committed = time.monotonic()
        app.commit()
        racer.join(60)
        assert claimed, "the racing claim did not return within 60 s of the commit"
        ids, returned = claimed[0]
        assert ids == [] or returned >= committed, (
            f"a claim returned {ids} {committed - returned:.3f} s before the transaction committed"
        )
        assert other.get("tx-a").status in (JobStatus.QUEUED, JobStatus.RUNNING)

    # -- workflows ----------------------------------------------------------

    @requires("transactional")
    def test_a_workflow_created_in_the_transaction_exists_only_once_committed(
        self, client: qw.Client, open_client: OpenClient, app: Any
    ) -> None:
        steps = [NewJob("q", 1, id="tx-a"), NewJob("q", 2, id="tx-b", parents=("tx-a",))]
        assert client.create_workflow("tx-wf", steps, connection=app).created
        with pytest.raises(qw.WorkflowNotFound):
            open_client(client.namespace).get_workflow("tx-wf")
        app.rollback()
        with pytest.raises(qw.WorkflowNotFound):
            client.get_workflow("tx-wf")
        assert self._missing(client, "tx-a")
        assert self._missing(client, "tx-b")
        assert client.create_workflow("tx-wf", steps, connection=app).created
        app.commit()
        assert client.get_workflow("tx-wf").state is WorkflowState.RUNNING
        assert [c.job.id for c in client.claim(["q"], worker="w", limit=10)] == ["tx-a"]

    # -- finishing ------------------------------------------------------------

    @requires("transactional")
    def test_complete_in_the_transaction_commits_with_the_apps_row(
        self, client: qw.Client, open_client: OpenClient, app: Any
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(client).lease
        self._insert_row(app, client, "shipped")
        status = client.complete(lease, {"shipped": True}, connection=app)
        assert status is JobStatus.SUCCEEDED
        assert open_client(client.namespace).get(job_id).status is JobStatus.RUNNING
        app.commit()
        job = client.get(job_id)
        assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"shipped": True})
        assert self._committed_rows(client) == ["shipped"]

    @requires("transactional")
    def test_complete_in_a_rolled_back_transaction_leaves_the_job_running(
        self, client: qw.Client, app: Any
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(client).lease
        self._insert_row(app, client, "shipped")
        client.complete(lease, "in-tx", connection=app)
        app.rollback()
        assert self._committed_rows(client) == []
        job = client.get(job_id)
        assert (job.status, job.result) == (JobStatus.RUNNING, None)
        # The lease is still held: the job can be finished again, outside.
        assert client.complete(lease, "outside") is JobStatus.SUCCEEDED

    @requires("transactional")
    def test_a_stale_lease_raises_lease_lost_and_the_apps_row_is_rolled_back(
        self, client: qw.Client, app: Any
    ) -> None:
        job_id = client.enqueue_one("q", 1, max_attempts=3).id
        lease = self.claim_one(client).lease
        client.fail(lease, "boom", retry_in=0)  # that attempt ended: the lease is stale
        events = client.fetch_events(limit=1000)
        self._insert_row(app, client, "shipped")
        with pytest.raises(qw.LeaseLost):
            client.complete(lease, "late", connection=app)
        app.rollback()
        assert self._committed_rows(client) == []
        job = client.get(job_id)
        assert (job.status, job.attempts, job.result) == (JobStatus.QUEUED, 1, None)
        assert client.fetch_events(limit=1000) == events

    # -- what connection= accepts --------------------------------------------

    @requires("transactional")
    @pytest.mark.parametrize("bad", ["object", "url"])
    def test_what_is_no_connection_of_the_store_is_refused_before_any_write(
        self, client: qw.Client, bad: str
    ) -> None:
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(client).lease
        before = snapshot(client)
        conn: object = object() if bad == "object" else "sqlite:///elsewhere.db"
        with pytest.raises(qw.InvalidInput):
            client.enqueue([NewJob("q", 2)], connection=conn)
        with pytest.raises(qw.InvalidInput):
            client.create_workflow("tx-wf", [NewJob("q", 3)], connection=conn)
        with pytest.raises(qw.InvalidInput):
            client.complete(lease, "x", connection=conn)
        assert snapshot(client) == before
        assert client.get(job_id).status is JobStatus.RUNNING

    def test_without_the_capability_connection_is_unsupported(self, client: qw.Client) -> None:
        if client.capabilities.transactional:
            pytest.skip(
                f"backend {client.backend.name!r} declares capability transactional: "
                "this test is for stores without it"
            )
        job_id = client.enqueue_one("q", 1).id
        lease = self.claim_one(client).lease
        before = snapshot(client)
        conn = object()
        with pytest.raises(qw.Unsupported, match="transactional"):
            client.enqueue([NewJob("q", 2)], connection=conn)
        with pytest.raises(qw.Unsupported, match="transactional"):
            client.create_workflow("tx-wf", [NewJob("q", 3)], connection=conn)
        with pytest.raises(qw.Unsupported, match="transactional"):
            client.complete(lease, "x", connection=conn)
        assert snapshot(client) == before
        assert client.get(job_id).status is JobStatus.RUNNING
