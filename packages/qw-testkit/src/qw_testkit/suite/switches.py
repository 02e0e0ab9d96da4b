"""The operator switch, per namespace and per queue, persisted in the store."""

from __future__ import annotations

import qw
from qw.model import JobStatus
from qw_testkit.base import ContractBase, OpenClient
from qw_testkit.gates import requires


class SwitchTests(ContractBase):
    def test_everything_is_on_at_first(self, client: qw.Client) -> None:
        assert client.is_enabled() is True
        assert client.is_enabled("q") is True
        assert client.switches() == qw.Switches(True, {})

    def test_namespace_off_stops_claims_and_on_resumes(self, client: qw.Client) -> None:
        answer = client.enqueue_one("q", 1)
        client.set_enabled(False)
        assert client.is_enabled() is False
        assert client.is_enabled("q") is False
        assert client.claim(["q"], worker="w", limit=10) == []
        assert client.get(answer.id).status is JobStatus.QUEUED
        # Producing still works while OFF.
        second = client.enqueue_one("q", 2)
        assert client.claim(["q", "other"], worker="w", limit=10) == []
        client.set_enabled(True)
        claims = client.claim(["q"], worker="w", limit=10)
        assert [c.job.id for c in claims] == [answer.id, second.id]

    def test_namespace_off_does_not_stop_finishing(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        lease = self.claim_one(client).lease
        client.set_enabled(False)
        assert client.renew(lease).token == lease.token
        assert client.complete(lease) is JobStatus.SUCCEEDED

    def test_switch_is_persisted_for_other_clients(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        client.enqueue_one("q", 1)
        client.set_enabled(False)
        other = open_client(client.namespace)
        assert other.is_enabled() is False
        assert other.claim(["q"], worker="w") == []
        other.set_enabled(True)
        assert client.is_enabled() is True
        assert len(client.claim(["q"], worker="w")) == 1

    def test_setting_a_switch_twice_is_harmless(self, client: qw.Client) -> None:
        client.set_enabled(False)
        client.set_enabled(False)
        assert client.is_enabled() is False
        client.set_enabled(True)
        client.set_enabled(True)
        assert client.is_enabled() is True

    @requires("queue_switch")
    def test_queue_off_stops_only_that_queue(self, client: qw.Client) -> None:
        paused = client.enqueue_one("paused", 1, priority=-10).id
        live = client.enqueue_one("live", 2).id
        client.set_enabled(False, queue="paused")
        assert client.is_enabled("paused") is False
        assert client.is_enabled("live") is True
        assert client.is_enabled() is True
        assert client.switches() == qw.Switches(True, {"paused": False})
        assert client.claim(["paused"], worker="w") == []
        claims = client.claim(["paused", "live"], worker="w", limit=10)
        assert [c.job.id for c in claims] == [live]
        client.set_enabled(True, queue="paused")
        assert client.is_enabled("paused") is True
        assert [c.job.id for c in client.claim(["paused"], worker="w")] == [paused]

    @requires("queue_switch")
    def test_namespace_off_wins_over_a_queue_on(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1)
        client.set_enabled(True, queue="q")
        client.set_enabled(False)
        assert client.claim(["q"], worker="w") == []
        client.set_enabled(True)
        client.set_enabled(False, queue="q")
        assert client.claim(["q"], worker="w") == []
        client.set_enabled(True, queue="q")
        assert len(client.claim(["q"], worker="w")) == 1

    @requires("queue_switch")
    def test_queue_switch_is_persisted_for_other_clients(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        client.enqueue_one("q", 1)
        client.set_enabled(False, queue="q")
        other = open_client(client.namespace)
        assert other.switches().queues == {"q": False}
        assert other.claim(["q"], worker="w") == []
        other.set_enabled(True, queue="q")
        assert client.is_enabled("q") is True
        assert len(client.claim(["q"], worker="w")) == 1
