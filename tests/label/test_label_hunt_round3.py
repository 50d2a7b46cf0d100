"""Labelling fixes of the third hunt: the query mix learning on a growing history, its
state file shared by processes, a label CSV naming one window twice, and exact times in
``edgewise label list``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore, read_labels_csv
from edgewise.label.workflow import suggest

REPO = Path(__file__).resolve().parents[2]


def _history(n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, 5300)
    v[1500:1504] += 5
    v[3000:3004] += 4
    ts = (1_700_000_000 + 60 * np.arange(5300)) * 10**9
    return ts[:n], v[:n, None], ["temp_c"]


@pytest.mark.parametrize("grown", [5000, 5100, 5300])
def test_the_mix_learns_from_answers_when_the_history_grew_meanwhile(
        tmp_path: Path, grown: int) -> None:
    """Check every answered question is credited to the strategy that asked it when the
    history grew between the two calls (the live gateway's queue): questions were kept by
    window start, and windows are len(history) // 100 readings long, so 100 more readings
    moved every key and each answer was dropped unlearned (asks stayed [0, 0, 0, 0])."""
    labels = LabelStore(tmp_path)
    first = suggest(_history(5000), "pump-1", labels, k=5)
    asked = labels.mix_state("pump-1")["pending"]
    by = {_start(key): (j, alarm) for key, j, alarm in asked}
    assert sorted(by) == sorted(it["start_ns"] for it in first)
    for it in first:  # a person answers each question, saying the opposite of the model
        labels.add("pump-1", it["start_ns"], it["end_ns"],
                   "normal" if it["alarm"] else "anomaly")
    suggest(_history(grown), "pump-1", labels, k=5)
    state = labels.mix_state("pump-1")
    want_asks = np.bincount([j for j, _ in by.values()], minlength=4)
    assert state["asks"] == want_asks.tolist()
    assert state["hits"] == want_asks.tolist()  # every answer contradicted the model
    # the questions just asked are open; the answered ones are not asked again
    assert len(state["pending"]) == 5
    assert not {_start(key) for key, _, _ in state["pending"]} & set(by)
    if grown == 5000:  # the span of the window asked about is kept with the question
        assert sorted(key for key, _, _ in asked) == sorted(
            [it["start_ns"], it["end_ns"]] for it in first)
    labels.close()


def _start(key: int | list[int]) -> int:
    """The window start of an open question's key: ``[start, end]`` (a start alone before)."""
    return key[0] if isinstance(key, list) else key


def test_a_mix_state_of_window_starts_is_still_taken_up(tmp_path: Path) -> None:
    """Check a state saved before questions kept their span (keys: window starts) still
    credits an answered question whose window is unchanged."""
    labels = LabelStore(tmp_path)
    hist = _history(5000)
    first = suggest(hist, "pump-1", labels, k=3)
    state = labels.mix_state("pump-1")
    labels.save_mix_state("pump-1", {**state, "pending": [
        [_start(key), j, alarm] for key, j, alarm in state["pending"]]})
    for it in first:
        labels.add("pump-1", it["start_ns"], it["end_ns"], "normal")
    suggest(hist, "pump-1", labels, k=3)
    assert sum(labels.mix_state("pump-1")["asks"]) == 3
    labels.close()


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgewise.label.store import LabelStore
    data_dir, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = LabelStore(data_dir)
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        store.save_mix_state(f"{prefix}{i}", {"hits": [i]})
    store.close()
""")


def test_mix_states_saved_by_two_processes_are_all_kept(tmp_path: Path) -> None:
    """Check the gateway's queue and an 'edgewise label suggest' (two processes) saving
    query-mix states at once keep every one: the read-modify-write of label-mix.json held a
    lock of its own process only, and 300 saves kept about 200."""
    LabelStore(tmp_path).close()
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), prefix, "80",
                               str(go)], env=env) for prefix in ("gw-", "cli-")]
    time.sleep(0.5)  # both imported and waiting (or nearly): start together
    go.touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with LabelStore(tmp_path) as store:
        kept = set(store._mix_states())
    assert kept == {f"{p}{i}" for p in ("gw-", "cli-") for i in range(80)}


def test_a_device_delete_during_a_save_of_another_device_stays_deleted(
        tmp_path: Path) -> None:
    """Check a mix state saved for pump-2 while pump-1 is deleted (another connection, as
    'device delete' beside a running gateway) does not write pump-1's state back: the
    save read the states, the delete ran, the save wrote them all back."""
    with LabelStore(tmp_path) as setup:
        setup.save_mix_state("pump-1", {"hits": [1]})
        setup.add("pump-1", 0, 10, "anomaly")
    saver, deleter = LabelStore(tmp_path), LabelStore(tmp_path)
    deleted = threading.Event()
    read = saver._mix_states

    def read_then_wait() -> dict:
        states = read()
        threading.Thread(target=lambda: (deleter.delete_device("pump-1"), deleted.set()),
                         daemon=True).start()
        deleted.wait(1.0)  # the old code let the delete finish here
        return states

    saver._mix_states = read_then_wait  # type: ignore[method-assign]
    saver.save_mix_state("pump-2", {"hits": [2]})
    assert deleted.wait(15)
    with LabelStore(tmp_path) as after:
        assert after.mix_state("pump-1") is None
        assert after.mix_state("pump-2") == {"hits": [2]}
        assert after.labels("pump-1") == []
    saver.close()
    deleter.close()


def test_a_label_csv_naming_a_window_twice_with_other_notes_is_refused(
        tmp_path: Path) -> None:
    """Check two rows of one window and label with different notes are refused naming both
    lines (each import wrote both again: 2 new versions per import, the snapshot moving),
    and a file imported twice adds no version the second time."""
    f = tmp_path / "l.csv"
    head = "device_id,start,end,label,note\n"
    row = "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,{}\n"
    f.write_text(head + row.format("seal leak") + row.format("seen by ana"))
    with pytest.raises(InvalidParameterError,
                       match=r"lines 2 and 3 label the same window of 'pump-1' 'anomaly' "
                             r"with different notes \('seal leak', then 'seen by ana'\)"):
        read_labels_csv(f)
    f.write_text(head + row.format("seal leak") + row.format("seal leak"))
    with LabelStore(tmp_path / "d") as store:
        store.add_many(read_labels_csv(f))
        before, snap = store.last_id(), store.snapshot_id()
        store.add_many(read_labels_csv(f))
        assert (store.last_id(), store.snapshot_id()) == (before, snap)
        assert len(store.history("pump-1")) == 1


def test_label_list_shows_a_single_reading_window_with_start_before_end(
        tmp_path: Path) -> None:
    """Check 'edgewise label list' prints the window [t, t + 1 ns) of one reading with an
    end after its start (times went through a float of seconds: both printed as t)."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    t = 1_704_067_200_000_000_000
    with LabelStore(tmp_path) as labels:
        labels.add("pump-1", t, t + 1, "spike")
        labels.add("pump-1", t + 60 * 10**9 + 5000, t + 120 * 10**9, "normal")
    load_commands()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["label", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.stderr or res.exception
    assert "2024-01-01T00:00:00Z" in res.stdout
    assert "2024-01-01T00:00:00.000000001Z" in res.stdout
    assert "2024-01-01T00:01:00.000005Z" in res.stdout
    assert "2024-01-01T00:02:00Z" in res.stdout
