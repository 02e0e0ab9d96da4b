"""qw_testkit: the qw storage contract as a pytest suite that backend authors subclass.

::

    import qw
    from qw_testkit import BackendContractTests

    class TestMyStoreContract(BackendContractTests):
        def make_backend(self, namespace: str) -> qw.Backend:
            return MyBackend.from_url(MY_URL, namespace=namespace)

        def backend_url(self) -> str | None:  # optional: enables the multi-process test
            return MY_URL

Tests a backend's capabilities do not cover are skipped with the reason.
"""

from __future__ import annotations

from qw_testkit.base import ContractBase, OpenClient, Snapshot, new_namespace, snapshot
from qw_testkit.gates import capability_skip_reason, requires, stand_in_note
from qw_testkit.suite.async_client import AsyncClientTests
from qw_testkit.suite.bad_input import BadInputTests
from qw_testkit.suite.claim import ClaimTests
from qw_testkit.suite.concurrency import ConcurrencyTests
from qw_testkit.suite.cross_queue import CrossQueueTests
from qw_testkit.suite.enqueue import EnqueueTests
from qw_testkit.suite.inspection import InspectionTests
from qw_testkit.suite.isolation import IsolationTests
from qw_testkit.suite.leases import LeaseTests
from qw_testkit.suite.limits import LimitTests
from qw_testkit.suite.outbox import OutboxTests
from qw_testkit.suite.periodic import PeriodicTests
from qw_testkit.suite.progress import ProgressTests
from qw_testkit.suite.results import ResultTests
from qw_testkit.suite.retry import RetryTests
from qw_testkit.suite.schedules import ScheduleTests
from qw_testkit.suite.state_machine import StateMachineTests
from qw_testkit.suite.switches import SwitchTests
from qw_testkit.suite.terminals import TerminalTests
from qw_testkit.suite.transactions import TransactionTests
from qw_testkit.suite.wait import WaitTests
from qw_testkit.suite.workflows import WorkflowTests

__all__ = [
    "AsyncClientTests",
    "BackendContractTests",
    "BadInputTests",
    "ClaimTests",
    "ConcurrencyTests",
    "CrossQueueTests",
    "ContractBase",
    "EnqueueTests",
    "InspectionTests",
    "IsolationTests",
    "LeaseTests",
    "LimitTests",
    "OpenClient",
    "OutboxTests",
    "PeriodicTests",
    "ProgressTests",
    "ResultTests",
    "RetryTests",
    "ScheduleTests",
    "Snapshot",
    "StateMachineTests",
    "SwitchTests",
    "TerminalTests",
    "TransactionTests",
    "WaitTests",
    "WorkflowTests",
    "capability_skip_reason",
    "new_namespace",
    "requires",
    "snapshot",
    "stand_in_note",
]


class BackendContractTests(
    EnqueueTests,
    ClaimTests,
    LeaseTests,
    TerminalTests,
    OutboxTests,
    WaitTests,
    SwitchTests,
    InspectionTests,
    IsolationTests,
    BadInputTests,
    ConcurrencyTests,
    CrossQueueTests,
    StateMachineTests,
    WorkflowTests,
    LimitTests,
    ScheduleTests,
    PeriodicTests,
    AsyncClientTests,
    TransactionTests,
    ProgressTests,
    ResultTests,
    RetryTests,
):
    """The whole storage contract. Subclass it and implement ``make_backend``.

    Each concern is also its own class (``LeaseTests``, ...) for running a part.
    """
