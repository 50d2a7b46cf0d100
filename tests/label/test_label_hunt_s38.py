"""Label hunt, session 38: a snapshot past SQLite's variable limit, feedback words, the query
mix's device spread, label CSV headers, the last window's half, the bench's comparison lines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import edgewise.bench.active as active
from edgewise.bench.active import to_markdown
from edgewise.detect.zscore import EWZScore
from edgewise.errors import InvalidParameterError
from edgewise.label.feedback import FeedbackDetector
from edgewise.label.store import LabelStore, check_label, read_labels_csv
from edgewise.label.strategies import DefaultMix, Pool, TopScore
from edgewise.label.windows import windows_from_series
from tests.in_process import edgewise_here


# -- 1: labels_at put one '?' per label id into WHERE id IN (...) -----------------------------
def test_labels_at_reads_a_snapshot_of_more_labels_than_sqlite_variables(tmp_path: Path) -> None:
    """Old: OperationalError "too many SQL variables" (train --with-labels and train
    transfer failed on such a snapshot, reported as a bad database). The limit is lowered
    to 999, SQLite's default before 3.32, to keep the test small."""
    with LabelStore(tmp_path) as st:
        st._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        st.add_many([("pump-1", i * 10, i * 10 + 10, "anomaly" if i % 7 else "normal", "")
                     for i in range(1000)])
        st.add("pump-2", 0, 10, "seal_leak")
        sid = st.snapshot_id()
        st.add("pump-1", 0, 10, "bearing_wear")  # relabelled after: not in the snapshot
        got = st.labels_at(sid)
        assert len(got) == 1001
        assert [(x.device_id, x.start_ns) for x in got] == sorted(
            (x.device_id, x.start_ns) for x in got)
        assert got[0].label == "normal" and got[-1].label == "seal_leak"
        assert len(st.labels_at(st.snapshot_id("pump-2"))) == 1
        assert st.labels_at(st.snapshot_id("pump-3")) == []


# -- 2: FeedbackDetector.feedback took anything but "normal" as a confirmed fault -------------
def _trained() -> FeedbackDetector:
    det = FeedbackDetector(EWZScore())
    for t in range(300):
        x = {"v": 20.0 + (t % 7) * 0.1}
        det.score_one(x)
        det.learn_one(x)
    return det


@pytest.mark.parametrize("word", ["false_alarm", "true_alarm", "Normal", "normal ", "normal\n",
                                  "", None])
def test_feedback_refuses_verdicts_and_malformed_labels(word: object) -> None:
    """Old: "false_alarm", "Normal", "normal " counted as a confirmed fault (the false alarm
    kept alarming), "true_alarm" as a fault class; now refused as LabelStore.add refuses
    them, and nothing changes."""
    det = _trained()
    before = det.score_one({"v": 23.0})
    with pytest.raises(InvalidParameterError, match=r"FeedbackDetector\.feedback") as exc:
        det.feedback([{"v": 23.0}], word)  # type: ignore[arg-type]
    assert exc.value.field == "label"
    assert repr(word) in str(exc.value)
    assert (det.n_confirmed_, det.n_false_alarms_) == (0, 0)
    assert det.score_one({"v": 23.0}) == before


def test_feedback_and_store_share_one_label_check() -> None:
    det = _trained()
    det.feedback([{"v": 23.0}], "normal")
    assert det.n_false_alarms_ == 1 and det.score_one({"v": 23.0}) < 0.9
    det.feedback([{"v": 30.0}], "bearing_wear")
    assert det.n_confirmed_ == 1
    with pytest.raises(InvalidParameterError, match="alert's verdict"):
        check_label("false_alarm")
    with pytest.raises(InvalidParameterError, match="The 'label' of a label"):
        LabelStore._check("pump-1", 0, 10, "Normal")


# -- 3: DefaultMix looked for another device in the first 200 windows of an order only -------
def test_mix_spreads_over_devices_past_the_first_200_windows() -> None:
    """Old: device A's alarm storm held the first 300 windows of the strongest-alarm order,
    so the mix asked A twice and B never: ['A', 'A']."""
    n = 300
    margin = np.r_[np.linspace(0.1, 5, n), np.linspace(-5, -0.1, n)]
    groups = np.array(["A"] * n + ["B"] * n, dtype=object)
    pool = Pool(margin=margin, groups=groups, labels=np.full(2 * n, -1))
    pick = DefaultMix(strategies=[TopScore(seed=0)], seed=0).select(pool, 2)
    assert groups[pick].tolist() == ["A", "B"]
    assert pick[0] == n - 1 and pick[1] == 2 * n - 1  # each device's strongest window
    # one device only: the spread cannot hold, the order is followed
    solo = Pool(margin=margin[:n], groups=groups[:n], labels=np.full(n, -1))
    assert DefaultMix(strategies=[TopScore(seed=0)], seed=0).select(solo, 2).tolist() == [
        n - 1, n - 2]


# -- 4: label CSV header names were taken exactly as written ----------------------------------
def test_label_csv_header_with_spaces_and_capitals(tmp_path: Path) -> None:
    """Old: "device_id, start, end, label" was refused as "Missing: end, label, start"."""
    p = tmp_path / "l.csv"
    p.write_text("device_id, start, end, label, Note\n"
                 "pump-1,1704067200,1704067800,anomaly,seal\n")
    assert read_labels_csv(p) == [("pump-1", 1704067200 * 10**9, 1704067800 * 10**9,
                                   "anomaly", "seal")]
    p.write_text("Device_ID;Start;End;LABEL\npump-1;1704067200;1704067800;normal\n")
    assert read_labels_csv(p)[0][3] == "normal"


def test_label_csv_header_errors_quote_the_header(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("device,start,end\npump-1,1704067200,1704067800\n")
    with pytest.raises(InvalidParameterError, match=r"Missing: device_id, label; the header "
                                                    r"names \['device', 'start', 'end'\]"):
        read_labels_csv(p)
    p.write_text("device_id,start,end,label,Label \npump-1,1704067200,1704067800,normal,"
                 "anomaly\n")
    with pytest.raises(InvalidParameterError, match="'label' more than once"):
        read_labels_csv(p)


# -- 5: the last, shorter window was kept below half full for odd lengths ---------------------
@pytest.mark.parametrize(("T", "length", "sizes"), [
    (7, 3, [3, 4]),          # old: [3, 3, 1], a window of a third
    (12, 5, [5, 7]),         # old: [5, 5, 2]
    (8, 3, [3, 3, 2]),       # 2 of 3: at least half, kept
    (25, 10, [10, 10, 5]),   # exactly half: kept
    (24, 10, [10, 14]),
    (3, 5, [3]),             # one short window: the only one, kept
])
def test_last_window_kept_only_when_at_least_half_full(T: int, length: int,
                                                       sizes: list[int]) -> None:
    ws = windows_from_series(np.random.default_rng(0).normal(size=T), np.arange(T) * 10**9,
                             "d", length=length)
    starts = [int(s // 10**9) for s in ws.start_ns]
    assert np.diff([*starts, T]).tolist() == sizes


# -- 6: bench active printed None for comparisons it had not measured -------------------------
def _entry(*strategies: str) -> dict[str, object]:
    e: dict[str, object] = {"budgets": [0, 10, 25, 50, 100], "note": "n", "windows": 10,
                            "anomalous_windows": 1, "events": 1, "seconds": 0.1}
    for s in strategies:
        key = "active" if s == "mix" else s
        for suffix in ("_f1", "_f1_std", "_window_f1", "_window_f1_std"):
            e[key + suffix] = [0.1, 0.2, 0.3, 0.4, 0.5]
    return e


def test_markdown_says_comparisons_need_mix_and_random() -> None:
    """Old: "Gain ...: None (goal >= 0.8)." and "Active beats random ...: None." for a run
    of mix alone (or without mix)."""
    for strategies in (("mix",), ("uncertainty", "random")):
        md = to_markdown({"pumps": _entry(*strategies)}, "cmd")
        assert "None" not in md
        assert "need both strategies 'mix' (active) and 'random'" in md
    e = _entry("mix", "random")
    e["gain_ratio_active25_vs_random100"] = 1.5
    e["active_beats_random"] = [True, False, True, True]
    md = to_markdown({"pumps": e}, "cmd")
    assert "(event F1): 1.5 (goal >= 0.8)." in md
    assert "at budgets [10, 25, 50, 100]: [True, False, True, True]." in md
    e["gain_ratio_active25_vs_random100"] = None  # random gained nothing
    assert "n/a (100 random labels gained nothing)" in to_markdown({"pumps": e}, "cmd")


def test_cli_gain_line_needs_mix_and_random(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """Old: "gain ratio (25 active / 100 random): None" for --strategies mix."""
    monkeypatch.setattr(active, "run_benchmark",
                        lambda items, strategies, **kw: {"pumps": _entry(*strategies)})
    done = edgewise_here("bench", "active", "--datasets", "pumps", "--strategies", "mix",
                         "--seeds", "1", "--out", str(tmp_path / "a.md"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "gain ratio (25 active / 100 random): needs both --strategies mix and random" in (
        done.stdout)
    assert "None" not in done.stdout
    assert "None" not in (tmp_path / "a.md").read_text()
