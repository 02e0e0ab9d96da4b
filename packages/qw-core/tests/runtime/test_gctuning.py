"""The collector is tuned while workers run and restored when the last one stops."""

from __future__ import annotations

import gc

from qw.worker import gctuning


def test_tuning_nests_and_the_last_worker_restores_it() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with gctuning.tuned_gc():
        assert gc.get_threshold()[0] == max(before[0], gctuning.GEN0_THRESHOLD)
        assert gc.get_freeze_count() > frozen
        with gctuning.tuned_gc():
            pass
        # An inner worker stopping does not undo the outer one's tuning.
        assert gc.get_threshold()[0] == max(before[0], gctuning.GEN0_THRESHOLD)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_disabled_tuning_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    with gctuning.tuned_gc(False):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
