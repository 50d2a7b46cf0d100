"""Seq-gap alerts across a gateway restart: a gap reported before it, filled by the
device's resend right after it (before the first gap check), is settled (acknowledged by
``gateway``, audited); and a device's seq_gap alerts are all taken up at start, however
many, page after page, so that an old gap is not reported again and an old open alert
is still settled."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.gateway import pipeline as pipeline_mod
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.store.base import Alert

T0 = 1_700_000_000


def _msg(seq: int) -> bytes:
    return json.dumps({"ts": T0 + seq, "metrics": {"a": float(seq)}, "seq": seq}).encode()


class _Audit:
    """A security stand-in that only records the audit entries it is given."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str, dict[str, Any]]] = []

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        self.entries.append((actor, action, target, detail))


def test_a_gap_filled_by_a_resend_right_after_a_restart_is_settled(tmp_path: Path) -> None:
    """Seqs 3 and 4 are reported missing; the gateway restarts; the device's resend of 3
    and 4 (never acknowledged) arrives before the restarted gateway's first gap check,
    so the watermark reaches the device's newest seq at once. The alert is acknowledged
    by ``gateway`` ("all arrived later") and audited, as without the restart, instead of
    staying open for ever."""
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    store = open_store(url)
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=30.0, detect_async=False)
    for s in (1, 2, 5, 6):
        p.ingest("pump-1", _msg(s))
    (raised,) = p.check_gaps(now=time.monotonic() + 31)
    assert raised.message == "messages seq 3..4 missing (2)"
    p.close()
    store.close()

    store = open_store(url)
    audit = _Audit()
    p = Pipeline(store, Settings(data_dir=tmp_path), audit, gap_grace_s=30.0,
                 detect_async=False)
    try:
        assert p.ingest("pump-1", _msg(3)).ack_seq == 3
        assert p.ingest("pump-1", _msg(4)).ack_seq == 6  # nothing missing any more
        assert p.check_gaps(now=time.monotonic() + 1) == []  # well within the grace
        a = store.get_alert(raised.id)
        assert (a.status, a.acked_by, a.message) == (
            "acknowledged", "gateway", "messages seq 3..4 missing (2), all arrived later"), (
            f"the seq_gap alert {raised.id} of a gap the device filled after a restart was "
            f"left {a.status!r} (acked by {a.acked_by!r}, message {a.message!r}); it must "
            f"be acknowledged by 'gateway' as 'all arrived later'")
        assert audit.entries == [("gateway", "alert.ack", raised.id,
                                  {"device": "pump-1", "reason": "seq gap filled"})]
        # later checks report nothing again
        assert p.check_gaps(now=time.monotonic() + 3600) == []
        assert len(store.list_alerts(kind="seq_gap")) == 1
    finally:
        p.close()
        store.close()


def test_every_seq_gap_alert_is_taken_up_at_start_page_after_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device has five seq_gap alerts (one per missing even seq 2..10), more than a
    page of the read that takes them up at start (lowered here to 2, and the store made
    to answer no more than 2 a read, as one holding more than a page does). After a
    restart, a new gap (12) is the only one reported, and the oldest alert (seq 2, on
    the last page) is settled when its seq arrives."""
    page = 2
    monkeypatch.setattr(pipeline_mod, "ADOPT_PAGE", page, raising=False)
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    list_alerts = store.list_alerts

    def at_most_a_page(*args: Any, **kw: Any) -> list[Alert]:
        return list_alerts(*args, **kw)[:page]

    monkeypatch.setattr(store, "list_alerts", at_most_a_page)
    store.append([], seqs={"pump-1": [1, 3, 5, 7, 9, 11]})
    t = time.time_ns() - 10**12
    made = [store.add_alert(Alert("pump-1", t + k * 10**9, t + k * 10**9, 1.0,
                                  kind="seq_gap", message=f"messages seq {2 * k}..{2 * k} "
                                                          f"missing (1)"))
            for k in range(1, 6)]
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False)
    try:
        p.ingest("pump-1", _msg(13))
        p.ingest("pump-1", _msg(2))  # the oldest gap's seq, resent
        new = p.check_gaps(now=time.monotonic() + 1)
        assert [a.message for a in new] == ["messages seq 12..12 missing (1)"], (
            f"after a restart the gaps reported were {[a.message for a in new]}; only the "
            f"new one, 12..12, must be: the device's five earlier ones have alerts already")
        oldest = store.get_alert(made[0].id)
        assert (oldest.status, oldest.acked_by) == ("acknowledged", "gateway"), (
            f"the oldest seq_gap alert {oldest.id} (seq 2, resent) is {oldest.status!r}, "
            f"acked by {oldest.acked_by!r}; it must be acknowledged by 'gateway'")
        assert all(store.get_alert(a.id).status == "open" for a in made[1:])
    finally:
        p.close()
        store.close()
