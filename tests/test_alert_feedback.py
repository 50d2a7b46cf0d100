"""Live false-alarm feedback in the alert manager: a false-alarm verdict raises the bar for
the next anomaly of its device led by the same metric; a true alarm removes it; the bar
decays on the device's time, survives a restart and is forgotten with the device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.alerts import AlertManager
from edgewise.store import open_store
from edgewise.store.base import Alert, Store

S = 10**9
HOUR, DAY = 3600 * S, 86400 * S


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


def manager(store: Store, held_back: list[tuple[str, str]] | None = None,
            **kw: object) -> AlertManager:
    return AlertManager(store, write_every_s=0.0, feedback=True,
                        on_suppressed=(lambda d, m: held_back.append((d, m)))
                        if held_back is not None else None, **kw)  # type: ignore[arg-type]


def anomalies(store: Store) -> list[Alert]:
    return store.list_alerts(kind="anomaly", limit=1000)


def test_a_false_alarm_holds_back_a_like_alert_and_lets_a_higher_or_other_one_through(
        store: Store) -> None:
    held_back: list[tuple[str, str]] = []
    am, t = manager(store, held_back), 10**18
    first = am.observe("pump-1", t, 0.95, {"temp": 0.9, "rpm": 0.1})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t) == pytest.approx(0.96)
    # the same device, led by the same metric, no higher: not raised, counted once
    assert am.observe("pump-1", t + HOUR, 0.955, {"temp": 1.0}) is None
    assert am.observe("pump-1", t + HOUR + S, 0.95, {"temp": 1.0}) is None
    assert held_back == [("pump-1", "temp")]
    assert len(anomalies(store)) == 1
    # led by another metric, or another device: raised
    assert am.observe("pump-1", t + 2 * HOUR, 0.95, {"rpm": 1.0}) is not None
    assert am.observe("pump-2", t + 2 * HOUR, 0.95, {"temp": 1.0}) is not None
    # higher than the bar: raised
    higher = am.observe("pump-1", t + 3 * HOUR, 0.99, {"temp": 1.0})
    assert higher is not None and higher.score == 0.99
    # an episode held back that grows past the bar is raised over all its readings
    assert am.observe("pump-1", t + 4 * HOUR, 0.93, {"temp": 1.0}) is None
    grown = am.observe("pump-1", t + 4 * HOUR + 10 * S, 0.999, {"temp": 1.0})
    assert grown is not None and grown.start_ns == t + 4 * HOUR
    assert len(anomalies(store)) == 5
    assert held_back == [("pump-1", "temp")] * 2


def test_an_extreme_score_always_alerts(store: Store) -> None:
    am, t = manager(store), 10**18
    first = am.observe("pump-1", t, 1.0, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t) == pytest.approx(0.999)  # capped
    assert am.observe("pump-1", t + HOUR, 0.99, {"temp": 1.0}) is None
    assert am.observe("pump-1", t + 2 * HOUR, 1.0, {"temp": 1.0}) is not None


def test_a_true_alarm_verdict_removes_the_bar(store: Store) -> None:
    am, t = manager(store), 10**18
    first = am.observe("pump-1", t, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    real = am.observe("pump-1", t + HOUR, 0.99, {"temp": 1.0})
    assert real is not None
    am.label(real.id, "true_alarm", by="ops")
    assert am.bar("pump-1", "temp", t + 2 * HOUR) is None
    assert am.observe("pump-1", t + 2 * HOUR, 0.95, {"temp": 1.0}) is not None
    # relabelling the false alarm a true one removes its bar too
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t + 3 * HOUR) is not None
    am.label(first.id, "true_alarm", by="ops")
    assert am.bar("pump-1", "temp", t + 3 * HOUR) is None


def test_the_bar_decays_on_the_devices_clock_and_lapses(store: Store) -> None:
    am, t = manager(store, feedback_half_life_s=86400.0), 10**18
    first = am.observe("pump-1", t, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t + DAY) == pytest.approx(0.93)  # one half-life
    assert am.bar("pump-1", "temp", t + 2 * DAY) == pytest.approx(0.915)
    assert am.observe("pump-1", t + DAY // 2, 0.94, {"temp": 1.0}) is None  # bar 0.942
    assert am.observe("pump-1", t + 2 * DAY, 0.94, {"temp": 1.0}) is not None  # bar 0.915
    assert am.bar("pump-1", "temp", t + 5 * DAY) is None  # four half-lives: forgotten


def test_seq_gap_alerts_are_never_held_back_nor_set_a_bar(store: Store) -> None:
    am, t = manager(store), 10**18
    gap = am.raise_alert(Alert("pump-1", t, t, 1.0, kind="seq_gap", message="seq 5..6"))
    am.label(gap.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "", t) is None and not am._bars
    first = am.observe("pump-1", t + HOUR, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    again = am.raise_alert(Alert("pump-1", t + 2 * HOUR, t + 2 * HOUR, 0.5, kind="seq_gap"))
    assert any(a.id == again.id for a in store.list_alerts(kind="seq_gap"))


def test_deleting_a_device_forgets_its_bars(store: Store) -> None:
    am, t = manager(store), 10**18
    for device in ("pump-1", "pump-2"):
        a = am.observe(device, t, 0.95, {"temp": 1.0})
        assert a is not None
        am.label(a.id, "false_alarm", by="ops")
    am.forget("pump-1")
    assert am.bar("pump-1", "temp", t + HOUR) is None
    assert am.bar("pump-2", "temp", t + HOUR) is not None
    assert am.observe("pump-1", t + HOUR, 0.95, {"temp": 1.0}) is not None


def test_feedback_off_changes_nothing(store: Store) -> None:
    am, t = AlertManager(store, write_every_s=0.0, feedback=False), 10**18
    first = am.observe("pump-1", t, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t) is None
    assert am.observe("pump-1", t + HOUR, 0.95, {"temp": 1.0}) is not None


def test_the_verdicts_survive_a_restart(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'alerts.duckdb'}"
    t = time.time_ns() - 2 * HOUR  # within the horizon the store is read back over
    store = open_store(url)
    try:
        am = manager(store)
        false_temp = am.observe("pump-1", t, 0.95, {"temp": 1.0})
        false_rpm = am.observe("pump-1", t + 10 * 60 * S, 0.95, {"rpm": 1.0})
        assert false_temp is not None and false_rpm is not None
        am.label(false_temp.id, "false_alarm", by="ops")
        am.label(false_rpm.id, "false_alarm", by="ops")
        true_rpm = am.observe("pump-1", t + 20 * 60 * S, 0.99, {"rpm": 1.0})
        assert true_rpm is not None
        am.label(true_rpm.id, "true_alarm", by="ops")  # the newest verdict on rpm counts
        am.flush(force=True)
    finally:
        store.close()
    store = open_store(url)
    try:
        held_back: list[tuple[str, str]] = []
        again = manager(store, held_back)
        assert again.bar("pump-1", "temp", t + HOUR) is not None
        assert again.bar("pump-1", "rpm", t + HOUR) is None
        assert again.observe("pump-1", t + HOUR, 0.95, {"temp": 1.0}) is None
        assert again.observe("pump-1", t + HOUR + 5 * 60 * S, 0.95, {"rpm": 1.0}) is not None
        assert held_back == [("pump-1", "temp")]
    finally:
        store.close()


def _bars_after_restart(store: Store) -> dict[tuple[str, str], tuple[float, int, str]]:
    """The bars a manager started on ``store`` reads back from its verdicts."""
    return dict(manager(store)._bars)


def test_relabelling_a_true_alarm_drops_the_bar_its_false_alarm_set_after_the_lead_moved(
        store: Store) -> None:
    """A false alarm led by temp sets a bar on temp; the fault goes on led by rpm and is
    relabelled a true alarm: the temp bar goes (it was that alert's), a temp anomaly just
    below it is raised, and a restart reads back the same bars."""
    am, t = manager(store), time.time_ns() - 3 * HOUR
    first = am.observe("pump-1", t, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    assert am.bar("pump-1", "temp", t) == pytest.approx(0.96)
    for k in range(1, 30):  # the same fault, led by rpm now
        am.observe("pump-1", t + k * S, 0.95, {"rpm": 1.0})
    am.label(first.id, "true_alarm", by="ops", note="it was real after all")
    assert am._bars == {}
    assert am.bar("pump-1", "temp", t + HOUR) is None
    assert am.observe("pump-1", t + HOUR, 0.955, {"temp": 1.0}) is not None
    am.flush(force=True)
    assert _bars_after_restart(store) == am._bars == {}


def test_relabelling_a_false_alarm_moves_its_bar_to_its_new_top_driver(store: Store) -> None:
    """Labelled a false alarm again once rpm leads it, the alert's bar is on rpm alone (not
    on temp too), as after a restart."""
    am, t = manager(store), time.time_ns() - 3 * HOUR
    first = am.observe("pump-1", t, 0.95, {"temp": 1.0})
    assert first is not None
    am.label(first.id, "false_alarm", by="ops")
    for k in range(1, 30):
        am.observe("pump-1", t + k * S, 0.95, {"rpm": 1.0})
    am.label(first.id, "false_alarm", by="ops")
    assert set(am._bars) == {("pump-1", "rpm")}
    assert am.observe("pump-1", t + HOUR, 0.955, {"temp": 1.0}) is not None
    am.flush(force=True)
    assert _bars_after_restart(store) == am._bars
