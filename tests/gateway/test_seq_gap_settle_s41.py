"""A device whose seq gaps never fill is not re-settled every second: each check of its
open seq_gap alerts against the same gaps cost time for every alert it ever had."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgewise.config import Settings
from edgewise.gateway import pipeline as pipeline_mod
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from tests.gateway.test_seq_gap_restart_hunt import _msg


def test_open_gaps_are_settled_again_only_when_something_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that after seqs 3..4 and 7 are reported missing (two alerts) and settled once
    together, ten checks after new messages that fill nothing settle nothing (before: every
    alert, every check, acknowledged ones too: 9 us an alert, every second), that
    seq 3 arriving settles once (the first alert's message now names seq 4 alone) and seq 4
    acknowledges it, while the other stays open."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=30.0, detect_async=False)
    settled: list[str] = []
    real = pipeline_mod._gap_message
    monkeypatch.setattr(pipeline_mod, "_gap_message",
                        lambda head, still: settled.append(head) or real(head, still))
    try:
        for s in (1, 2, 5, 6):
            p.ingest("pump-1", _msg(s))
        clock = time.monotonic()  # after the ingests: a slow first one must not count
        (first,) = p.check_gaps(now=clock + 31)
        p.ingest("pump-1", _msg(8))
        clock = time.monotonic() + 62
        (second,) = p.check_gaps(now=clock)
        assert (first.message, second.message) == ("messages seq 3..4 missing (2)",
                                                   "messages seq 7..7 missing (1)")
        settled.clear()
        p.ingest("pump-1", _msg(9))  # the gaps settled once with the new alert among them
        assert p.check_gaps(now=clock + 1) == [] and len(settled) == 2, settled
        settled.clear()
        for s in range(10, 20):  # nothing filled: the same gaps each time
            p.ingest("pump-1", _msg(s))
            assert p.check_gaps(now=clock + s) == []
        assert settled == [], f"settled {len(settled)} times against unchanged gaps"
        p.ingest("pump-1", _msg(3))
        p.check_gaps(now=clock + 30)
        assert len(settled) == 2  # both alerts looked at once
        assert store.get_alert(first.id).message == (
            "messages seq 3..4 missing (2); 4..4 still missing (1)")
        p.ingest("pump-1", _msg(4))
        p.check_gaps(now=clock + 31)
        a, b = store.get_alert(first.id), store.get_alert(second.id)
        assert (a.status, a.acked_by) == ("acknowledged", "gateway")
        assert b.status == "open" and b.message == "messages seq 7..7 missing (1)"
    finally:
        p.close()
        store.close()
