"""A device that publishes each metric in its own message (one metric per reading time, a
few ms apart) gets its multivariate detector (T²) as one that sends them together does:
its rows are assembled (edgewise.gateway.split_rows), each sample scored and learned once,
never two samples mixed; a device that sends its metrics together is scored as before."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.detect import default_multivariate
from edgewise.gateway.pipeline import Pipeline, drop_device_state
from edgewise.gateway.split_rows import RowAssembler
from edgewise.store import open_store

T0 = 1_700_000_000
NAMES = ("flow", "current", "press")
#: flow = current / 0.3 = press / 2, each with its own noise: a sample in its own range
#: per metric that breaks the relation (current 2 sd of its own low given flow 105: 28.5
#: where 31.5 is expected) is caught only by a multivariate detector
BREAK = {"flow": 105.0, "current": 28.5, "press": 210.0}


def _samples(n: int = 600, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    q = rng.normal(100, 5, n)
    cols = np.column_stack([q, 0.3 * q + rng.normal(0, 0.2, n), 2 * q + rng.normal(0, 0.5, n)])
    return [dict(zip(NAMES, map(float, r), strict=True)) for r in cols]


def _messages(samples: list[dict[str, float]], split: bool, step_s: float = 1.0,
              apart_s: float = 0.003, seq0: int = 0,
              lost: frozenset[tuple[int, str]] = frozenset()) -> list[tuple[str, bytes]]:
    """One message a sample (``split`` False), or one a metric, ``apart_s`` after the last;
    readings ``(sample, metric)`` in ``lost`` are not sent."""
    out, seq = [], seq0
    for i, row in enumerate(samples):
        t = T0 + i * step_s
        if not split:
            seq += 1
            out.append(("pump-1", json.dumps({"ts": t, "seq": seq, "metrics": row}).encode()))
            continue
        for j, (k, v) in enumerate(row.items()):
            if (i, k) in lost:
                continue
            seq += 1
            out.append(("pump-1", json.dumps(
                {"ts": t + j * apart_s, "seq": seq, "metrics": {k: v}}).encode()))
    return out


def _ingest(p: Pipeline, msgs: list[tuple[str, bytes]]) -> None:
    for k in range(0, len(msgs), 50):  # one commit per 50 messages, as MQTT commits them
        assert all(not isinstance(r, Exception) for r in p.ingest_many(msgs[k:k + 50]))
    p.flush()


def _break_alerts(tmp_path: Path, split: bool) -> tuple[int, list[tuple[float, dict[str, float]]]]:
    """Alerts of 600 normal samples (how many), then of the break sent as the next sample
    (each alert's start, s after T0, and drivers)."""
    store = open_store(f"duckdb:///{tmp_path / 'mv.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path, assemble_split_rows=True), detect_async=False)
    try:
        samples = _samples()
        msgs = _messages([*samples, BREAK], split)
        cut = len(msgs) - (3 if split else 1)
        _ingest(p, msgs[:cut])
        before = {a.id for a in store.list_alerts(device_id="pump-1")}
        for m in msgs[cut:]:  # the break, each message committed alone
            p.ingest(*m)
        p.flush()
        new = [(a.start_ns / 1e9 - T0, a.drivers)
               for a in store.list_alerts(device_id="pump-1") if a.id not in before]
        return len(before), new
    finally:
        p.close()
        store.close()


def test_relation_break_in_one_message_is_caught(tmp_path: Path) -> None:
    """Check the control: all metrics in one message, the break raises one alert at its
    time whose top driver is current (measured: 0 alerts before, 1 at 600.0 s)."""
    before, new = _break_alerts(tmp_path, split=False)
    assert before == 0
    ((start, drivers),) = new
    assert start == 600.0
    assert max(drivers, key=drivers.get) == "current", drivers


def test_relation_break_sent_one_metric_per_message_is_caught(tmp_path: Path) -> None:
    """Check each metric in its own message, 3 ms apart: the break raises one alert at the
    time of its last reading, current its top driver, and no false alarm before (old code:
    0 alerts; its T² never ran)."""
    before, new = _break_alerts(tmp_path, split=True)
    assert before == 0
    ((start, drivers),) = new
    assert start == pytest.approx(600.006, abs=1e-4)
    assert max(drivers, key=drivers.get) == "current", drivers


def test_each_sample_is_learned_once_and_lost_readings_mix_no_samples() -> None:
    """Check 600 samples sent one metric per message, 9 readings lost: the T² learned one
    row per sample (the first, before an interval is known, none), none of two samples'
    readings (samples drawn independently: a mixed row would break the relation), and no
    alert was raised."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
    try:
        lost = frozenset((i, k) for i in (100, 250, 400) for k in NAMES[:2]) | {
            (300, "press"), (301, "flow"), (450, "current")}
        _ingest(p, _messages(_samples(), split=True, lost=lost))
        mv = p._mv["pump-1"]
        # 599 samples after the first; 3 left with press alone (not a row)
        assert mv.n_ == 599 - 3
        assert dict(zip(mv.metrics_, mv.counts_.tolist(), strict=True)) == {
            "flow": 599 - 3 - 1, "current": 599 - 3 - 1, "press": 599 - 3 - 1}
        assert store.list_alerts(device_id="pump-1") == []
    finally:
        p.close()
        store.close()


def test_metrics_of_one_time_committed_one_at_a_time_are_scored_together() -> None:
    """Check a device sending each metric of one time in its own message, each committed
    alone (over HTTP, or MQTT when it is quiet), gets its T² too: it learns one row a
    sample, and the break alerts (old code: no T², no alert)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
    try:
        samples = [{k: r[k] for k in NAMES[:2]} for r in _samples(120)]
        for i, row in enumerate([*samples, {"flow": 105.0, "current": 28.5}]):
            for j, (k, v) in enumerate(row.items()):
                p.ingest("pump-1", json.dumps({"ts": T0 + 60 * i, "seq": 2 * i + j + 1,
                                               "metrics": {k: v}}).encode())
        assert p._mv["pump-1"].n_ == 120  # 121 samples, the first before an interval
        (alert,) = store.list_alerts(device_id="pump-1")
        assert alert.start_ns == (T0 + 60 * 120) * 10**9
    finally:
        p.close()
        store.close()


def test_a_device_sending_its_metrics_together_is_scored_as_before() -> None:
    """Check the T² of a device sending all metrics in each message learned exactly what a
    default multivariate detector fed its rows learns, and no row was assembled."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
    try:
        samples = _samples(300)
        _ingest(p, _messages(samples, split=False))
        ref = default_multivariate()
        for row in samples:
            ref.score_one(row)
            ref.learn_one(row)
        mv = p._mv["pump-1"]
        assert mv.n_ == ref.n_ == 300
        np.testing.assert_array_equal(mv.mean_, ref.mean_)
        np.testing.assert_array_equal(mv.cov_, ref.cov_)
        assert p.mv_rows is not None and "pump-1" not in p.mv_rows
    finally:
        p.close()
        store.close()


def test_open_row_survives_a_restart_and_goes_with_the_device(tmp_path: Path) -> None:
    """Check a stop between two readings of one sample: the state file keeps the device's
    open row ("mv_rows"), the restarted gateway completes and learns it; forget_device and
    drop_device_state remove it; a state file without "mv_rows" (older) still loads."""
    state = tmp_path / "detectors.pickle"
    store = open_store(f"duckdb:///{tmp_path / 'mv.duckdb'}")
    msgs = _messages(_samples(100), split=True)
    p = Pipeline(store, Settings(data_dir=tmp_path, assemble_split_rows=True),
                 detect_async=False, state_path=state)
    _ingest(p, msgs[:-1])  # the last sample's press not yet sent
    learned = p._mv["pump-1"].n_
    # 98 samples after the first; one holds a reading the cleaner flags as a spike: not learned
    assert learned == 97
    assert p.quality_counts("pump-1")["metrics"]["current"]["flagged"] == {"spike": 1}
    p.close()
    saved = pickle.loads(state.read_bytes())
    assert set(saved["mv_rows"]["pump-1"].row) == {"flow", "current"}
    p = Pipeline(store, Settings(data_dir=tmp_path, assemble_split_rows=True),
                 detect_async=False, state_path=state)
    try:
        _ingest(p, msgs[-1:])
        assert p._mv["pump-1"].n_ == learned + 1
        assert "pump-1" in saved["multivariate"]
        assert drop_device_state(saved, "pump-1") > 0
        assert "pump-1" not in saved["mv_rows"] and "pump-1" not in saved["multivariate"]
        p.forget_device("pump-1")
        assert "pump-1" not in p.mv_rows  # type: ignore[operator]
        assert pickle.loads(state.read_bytes())["mv_rows"] == {}
    finally:
        p.close()
    old = pickle.loads(state.read_bytes())
    del old["mv_rows"]
    state.write_bytes(pickle.dumps(old))
    p = Pipeline(store, Settings(data_dir=tmp_path, assemble_split_rows=True),
                 detect_async=False, state_path=state)
    try:
        assert p.mv_rows is not None and p.mv_rows.devices_ == {}
    finally:
        p.close()
        store.close()


def test_assembler_rule_tolerance_and_expected_metrics() -> None:
    """Check the rule itself: half the median step is the tolerance; a metric already in
    the row closes it; a metric not sent for three intervals is no longer waited for; a
    reading beyond the tolerance opens a row of its own; a spike goes with its row."""
    a = RowAssembler()
    s, ms = 10**9, 10**6
    for i in range(3):
        a.add("p", "a", i * s, 1.0)
        a.add("p", "b", i * s + ms, 2.0)
        assert (a.add("p", "c", i * s + 2 * ms, 3.0) == []) == (i == 0)
    assert a.tolerance_ns("p") == s // 2 and a.interval_ns("p") == s
    assert a.add("p", "a", 3 * s, 1.1) == []
    assert a.add("p", "b", 3 * s + ms, 2.1) == []  # c lost: the row waits for it
    assert a.add("p", "a", 4 * s, 1.2) == [(3 * s + ms, {"a": 1.1, "b": 2.1}, False)]
    assert a.add("p", "b", 4 * s + ms, 2.2) == []  # c last sent 2 s ago: still waited for
    assert a.add("p", "a", 5 * s, 1.3) == [(4 * s + ms, {"a": 1.2, "b": 2.2}, False)]
    assert a.add("p", "b", 5 * s + ms, 2.3) == []
    assert a.add("p", "a", 6 * s, 1.4) == [(5 * s + ms, {"a": 1.3, "b": 2.3}, False)]
    # c over three intervals old: a row of a and b is complete with b, scored at once
    assert a.add("p", "b", 6 * s + ms, 2.4, spike=True) == [
        (6 * s + ms, {"a": 1.4, "b": 2.4}, True)]
    assert a.add("p", "a", 7 * s, 1.5) == []
    assert a.add("p", "b", 7 * s + 600 * ms, 2.5) == []  # 0.6 s after a: not its sample
    assert a.add("p", "a", 8 * s + 500 * ms, 1.6) == []  # 0.9 s after b: not b's either


def test_assembly_is_on_by_default_and_its_setting_turns_it_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On by default (the cross-sensor gate judges assembled rows as rows of one time),
    off by EDGEWISE_ASSEMBLE_SPLIT_ROWS=0; the pipeline's argument wins over the setting."""
    from edgewise.config import Settings as S

    assert S.load({}).assemble_split_rows is True
    assert S.load({"EDGEWISE_ASSEMBLE_SPLIT_ROWS": "off"}).assemble_split_rows is False
    store = open_store("duckdb://:memory:")
    try:
        for settings, arg, on in ((S(), None, True), (S(assemble_split_rows=False), None, False),
                                  (S(), False, False)):
            p = Pipeline(store, settings, detect_async=False, assemble_split_rows=arg)
            assert (p.mv_rows is not None) is on
            p.close()
    finally:
        store.close()
