"""wait: woken promptly by new work from another client; bounded when nothing happens."""

from __future__ import annotations

import threading
import time

import qw
from qw_testkit.base import ContractBase, OpenClient
from qw_testkit.gates import requires

#: How soon after an enqueue a waiting worker must have its job (generous: a loaded machine).
PROMPT = 1.0


class WaitTests(ContractBase):
    def test_waiting_worker_gets_work_enqueued_elsewhere_promptly(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        producer = open_client(client.namespace)
        assert client.claim(["q"], worker="w") == []
        got: list[tuple[str, float]] = []

        def worker() -> None:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                claims = client.claim(["q"], worker="w")
                if claims:
                    got.append((claims[0].job.id, time.monotonic()))
                    return
                client.wait(["q"], timeout=5)

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.3)
        answer = producer.enqueue_one("q", 1)
        enqueued = time.monotonic()
        thread.join(15)
        assert got, "the waiting worker never got the job"
        job_id, at = got[0]
        assert job_id == answer.id
        assert at - enqueued < PROMPT

    @requires("native_wakeup")
    def test_wait_returns_true_when_work_arrives(
        self, client: qw.Client, open_client: OpenClient
    ) -> None:
        producer = open_client(client.namespace)
        assert client.claim(["q"], worker="w") == []
        result: list[tuple[bool, float]] = []

        def waiter() -> None:
            start = time.monotonic()
            woke = client.wait(["q"], timeout=5)
            result.append((woke, time.monotonic() - start))

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
        producer.enqueue_one("q", 1)
        thread.join(10)
        ((woke, took),) = result
        assert woke is True
        assert took < 0.3 + PROMPT

    @requires("native_wakeup")
    def test_wait_times_out_quietly(self, client: qw.Client) -> None:
        assert client.claim(["q"], worker="w") == []
        start = time.monotonic()
        assert client.wait(["q"], timeout=0.4) is False
        took = time.monotonic() - start
        assert 0.35 <= took < 0.4 + PROMPT

    def test_wait_never_sleeps_much_past_its_timeout(self, client: qw.Client) -> None:
        assert client.claim(["q"], worker="w") == []
        for timeout in (0.0, 0.3):
            start = time.monotonic()
            client.wait(["q"], timeout=timeout)
            assert time.monotonic() - start < timeout + PROMPT

    def test_wait_is_woken_by_a_retry_and_a_release(self, client: qw.Client) -> None:
        client.enqueue_one("q", 1, max_attempts=5)
        lease = self.claim_one(client).lease
        assert client.claim(["q"], worker="w") == []
        client.release(lease)
        start = time.monotonic()
        assert client.wait(["q"], timeout=5) is True
        assert time.monotonic() - start < PROMPT
        lease = self.claim_one(client).lease
        assert client.claim(["q"], worker="w") == []
        client.fail(lease, retry_in=0)
        start = time.monotonic()
        assert client.wait(["q"], timeout=5) is True
        assert time.monotonic() - start < PROMPT
