"""``edgewise demo``'s fault labels cover every stored reading of a fault, also one stored
above a seq gap (a reading the pump sent out of order, whose earlier one the stopping
gateway never read)."""

from __future__ import annotations

import json
from pathlib import Path

from edgewise.cli.gateway import _stored_seqs
from edgewise.sim.fleet import FleetRunner
from edgewise.sim.pumps import PumpFleet
from edgewise.store import open_store
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
S = 10**9


def test_a_reading_stored_above_a_seq_gap_is_inside_its_faults_label(tmp_path: Path) -> None:
    """Each reading is sent after the next one (p_swap=1): seqs 2, 1, 4, 3, 6, 5, ...
    The gateway stores what it read of each pump's stream when it stops: here up to seq 6,
    not 5. Before, the labels were cut at the seq watermark (4, the sample at T0 + 3 s),
    and the stored reading of seq 6 (T0 + 5 s) of the running fault was left outside its
    label, counted as normal: `tests/gateway/test_demo.py` saw 2.0 s of pump-07's fault
    unlabelled under load (the seq watermark 2 s before its newest stored reading)."""
    fleet = PumpFleet(1, seed=0, fault_rate_per_h=3600.0)  # a fault at every chance
    r = FleetRunner(fleet, [("pump-01", "s")], p_gap=0.0, p_dropout=0.0, p_duplicate=0.0,
                    p_swap=1.0)  # never connected: no acks, everything stays pending
    stamp: dict[int, int] = {}  # seq -> sample time
    for i in range(8):
        before = r.devices[0].next_seq
        r._emit(T0 + i * S)
        if r.devices[0].next_seq > before:
            stamp[before] = T0 + i * S
    assert sorted(stamp) == list(range(1, 9))  # seq n is the sample at T0 + (n - 1) s
    stored = [1, 2, 3, 4, 6]  # the stream 2, 1, 4, 3, 6 | 5, 8, 7 cut where it stopped
    url = f"duckdb:///{tmp_path / 'edgewise.duckdb'}"
    store = open_store(url)
    try:
        payloads = dict(r.devices[0].pending)  # what each seq's message says
        for seq in stored:
            msg = json.loads(payloads[seq])
            assert round(msg["ts"] * 1e9) == stamp[seq]
            store.append([Reading("pump-01", m, stamp[seq], float(v), seq=seq)
                          for m, v in msg["metrics"].items()], seqs={"pump-01": [seq]})
        assert store.seq_watermark("pump-01") == 4 and store.seq_gaps("pump-01") == [(5, 5)]
        newest = store.device("pump-01").last_ns
    finally:
        store.close()
    assert newest == T0 + 5 * S
    running = fleet.labels(until_ns={"pump-01": newest})
    assert running and max(int(f["end_ns"]) for f in running) == newest  # the fault runs

    got = r.labels(_stored_seqs(url, {"pump-01": sorted(stamp)}))
    assert got == running, (got, running)  # each fault's label holds every stored reading
    assert max(int(f["end_ns"]) for f in got) == newest  # none past the newest stored one


def test_the_runner_names_its_unacknowledged_seqs_for_the_store_to_answer() -> None:
    """The demo asks its store about every seq a pump sent that no ack covered (what the
    gateway may have stored after the last ack the pump saw), oldest first."""
    fleet = PumpFleet(2, seed=0)
    r = FleetRunner(fleet, [("pump-02", "s")], p_gap=0.0, p_dropout=0.0, p_duplicate=0.0,
                    p_swap=1.0)
    assert r.unacked_seqs() == {}
    for i in range(5):
        r._emit(T0 + i * S)
    # 1 held, then 2, 1 sent; 3 held, then 4, 3 sent; 5 held (taken, so noted: its time
    # is in the fault ground truth)
    assert r.unacked_seqs() == {"pump-02": [1, 2, 3, 4, 5]}
