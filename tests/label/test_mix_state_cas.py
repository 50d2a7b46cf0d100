"""The label queue's mix state is saved as a compare-and-swap: a ``device delete`` (another
connection, as another process) while a suggest of that device is fitting and selecting is
not undone by the suggest's save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.label import strategies
from edgewise.label.store import LabelStore
from edgewise.label.workflow import suggest


def _history() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, 2000)
    v[900:904] += 5
    return (1_700_000_000 + 60 * np.arange(2000)) * 10**9, v[:, None], ["temp_c"]


def test_a_device_deleted_during_its_suggest_keeps_no_mix_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a suggest of pump-1 in flight (read the mix state, fitting and selecting) while
    another connection deletes pump-1 does not write pump-1's state back: it read the
    state unlocked and saved whatever it had, and the deleted device's asks, hits and open
    questions (spans of its history) came back."""
    hist = _history()
    gateway, cli = LabelStore(tmp_path), LabelStore(tmp_path)
    gateway.add("pump-1", int(hist[0][900]), int(hist[0][910]), "anomaly")
    suggest(hist, "pump-1", gateway, k=3)
    assert gateway.mix_state("pump-1") is not None
    select = strategies.DefaultMix.select
    deleted: list[int] = []

    def select_then_delete(self: strategies.DefaultMix, pool: object, k: int) -> object:
        out = select(self, pool, k)
        deleted.append(cli.delete_device("pump-1"))  # the delete lands mid-suggest
        return out

    monkeypatch.setattr(strategies.DefaultMix, "select", select_then_delete)
    picks = suggest(hist, "pump-1", gateway, k=3)
    assert len(picks) == 3 and deleted == [1]
    assert cli.mix_state("pump-1") is None
    assert gateway.mix_state("pump-1") is None
    assert cli.labels("pump-1") == []
    gateway.close()
    cli.close()


def test_a_suggest_after_the_delete_starts_a_fresh_state(tmp_path: Path) -> None:
    """Check the compare-and-swap does not block the ordinary path: a first suggest (none
    stored) saves, a later one updates it, and after a delete the next suggest saves
    afresh."""
    hist = _history()
    with LabelStore(tmp_path) as store:
        store.add("pump-1", int(hist[0][900]), int(hist[0][910]), "anomaly")
        suggest(hist, "pump-1", store, k=3)
        first = store.mix_state("pump-1")
        assert first is not None and len(first["pending"]) == 3
        suggest(hist, "pump-1", store, k=3)
        assert store.mix_state("pump-1") != first  # updated over the state as read
        store.delete_device("pump-1")
        suggest(hist, "pump-1", store, k=2)
        again = store.mix_state("pump-1")
        assert again is not None and len(again["pending"]) == 2


def test_save_mix_state_with_expected_skips_a_changed_or_gone_state(tmp_path: Path) -> None:
    """Check ``expected``: written (True) only when the stored state is the one expected
    (None: none stored); without it the save writes as before."""
    with LabelStore(tmp_path) as store:
        assert store.save_mix_state("pump-1", {"hits": [1]}, expected=None) is True
        assert store.save_mix_state("pump-1", {"hits": [9]}, expected=None) is False
        assert store.mix_state("pump-1") == {"hits": [1]}
        assert store.save_mix_state("pump-1", {"hits": [2]}, expected={"hits": [1]}) is True
        assert store.save_mix_state("pump-1", {"hits": [3]}, expected={"hits": [1]}) is False
        assert store.mix_state("pump-1") == {"hits": [2]}
        store.delete_device("pump-1")
        assert store.save_mix_state("pump-1", {"hits": [4]}, expected={"hits": [2]}) is False
        assert store.mix_state("pump-1") is None
        assert store.save_mix_state("pump-1", {"hits": [5]}) is True  # no expected: writes
        assert store.mix_state("pump-1") == {"hits": [5]}
