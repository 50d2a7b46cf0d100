"""A device deletion's purge failed at its CHECKPOINT ("Cannot CHECKPOINT: there are other
write transactions active") after the gateway had settled a seq_gap alert.

Cause: ``get_alert`` read the alert with ``fetchone`` on the calling thread's reader
cursor. DuckDB streams a query's result and keeps its (read) transaction open until the
last row is fetched, so the cursor of a thread that ran no further query (the webhook
thread, which reads the alert before each POST and then sleeps until its next poll, 60 s
by default) held a transaction. An alert UPDATE committed after it began (the settled
gap's new message, its acknowledgement) cannot be cleaned up while it is open and keeps a
shared checkpoint lock, so the purge's CHECKPOINT was refused and the deletion answered
``purge_pending: true``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgewise.store.base import Alert
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
from tests.conftest import random_values, values_on_disk
from tests.gateway.test_alert_webhooks import Receiver, _msg, _settings, running


def _on_thread(fn: Callable[[], object]) -> None:
    """Run ``fn`` on a thread of its own (its own reader cursor), to the end."""
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def test_a_settled_gap_after_a_webhook_send_leaves_no_purge_pending(tmp_path: Path) -> None:
    """Check that on a running gateway with a webhook, a device whose seq_gap alert was
    sent and then settled by its resent seqs is deleted with its purge done: nothing
    pending, none of its values left in the file."""
    # Prepare: seqs 1 and 4 (2..3 missing), the gap alert sent by the webhook thread,
    # which then waits for its next poll (60 s) without another query
    recv = Receiver().start()
    try:
        gone = random_values(7, 4)
        with running(_settings(tmp_path, recv.url, alert_webhook_poll_s=60.0)) as gw:
            gw.security.add_device("pump-7")
            t0 = int(time.time()) - 10
            gw.pipeline.ingest("pump-7", _msg(1, t0, temp=gone[0]))
            gw.pipeline.ingest("pump-7", _msg(4, t0 + 3, temp=gone[3]))
            (alert,) = gw.pipeline.check_gaps(now=time.monotonic() + 1)
            recv.wait_for(1)
            gw.pipeline.ingest("pump-7", _msg(2, t0 + 1, temp=gone[1]))  # resent
            gw.pipeline.ingest("pump-7", _msg(3, t0 + 2, temp=gone[2]))
            gw.pipeline.check_gaps(now=time.monotonic() + 1)  # settles: UPDATE, acknowledge
            (settled,) = gw.store.list_alerts(device_id="pump-7")
            assert (settled.id, settled.status, settled.acked_by) == (
                alert.id, "acknowledged", "gateway")
            path = Path(gw.store.path)  # type: ignore[attr-defined]
            # Execute: what DELETE /v1/devices/pump-7 does
            gw.pipeline.forget_device("pump-7")
            rows = gw.store.delete_device("pump-7")
            pending = gw.store.purge_pending  # type: ignore[attr-defined]
            # Assert
            assert rows >= 4
            assert pending is False
            assert values_on_disk(path, gone) == 0
    finally:
        recv.stop()


def test_a_get_alert_on_another_thread_does_not_block_a_checkpoint(tmp_path: Path) -> None:
    """Check that after another thread read an alert (get_alert) and an UPDATE of it
    committed, CHECKPOINT runs: the reader's transaction ended with its read."""
    # Prepare
    s = DuckDBStore(tmp_path / "ew.duckdb")
    try:
        a = s.add_alert(Alert("pump-7", 0, 0, 1.0, kind="seq_gap", message="seq 2..3"))
        _on_thread(lambda: s.get_alert(a.id))
        s.update_alert(a.id, message="seq 2..3 missing; all arrived later")
        s.acknowledge_alert(a.id, by="gateway")
        # Execute
        s.checkpoint()
        # Assert
        assert s.get_alert(a.id).status == "acknowledged"
    finally:
        s.close()


def test_a_reader_left_mid_result_does_not_fail_a_device_purge(tmp_path: Path) -> None:
    """Check that a reader cursor whose result was not read to its end (a thread that
    stopped after its first row) does not make a deletion's purge fail: the purge ends
    the readers' transactions (it holds the gate alone) before its checkpoint."""
    # Prepare
    path = tmp_path / "ew.duckdb"
    s = DuckDBStore(path)
    try:
        gone, kept = random_values(1, 50), random_values(2, 50)
        s.append([Reading("pump-7", "t", i, v) for i, v in enumerate(gone)])
        s.append([Reading("pump-8", "t", i, v) for i, v in enumerate(kept)])
        a = s.add_alert(Alert("pump-7", 0, 0, 1.0, kind="seq_gap", message="seq 2..3"))

        def first_row_only() -> None:
            with s._gate.shared():
                s._reader().execute("SELECT * FROM readings ORDER BY ts_ns").fetchone()

        _on_thread(first_row_only)
        s.update_alert(a.id, message="seq 2..3 missing; all arrived later")
        # Execute
        rows = s.delete_device("pump-7")
        # Assert
        assert rows >= len(gone)
        assert s.purge_pending is False
        assert values_on_disk(path, gone) == 0
        assert [v for _, _, v in s.query("pump-8")] == kept
    finally:
        s.close()
