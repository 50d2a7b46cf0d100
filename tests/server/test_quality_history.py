"""The quality report judges a metric with fewer than two readings in the range by its
history before it: a sensor read hourly (or a 1 s window of a 1 s sensor) had one reading
in the range, no spacing, and was always 0 % complete with gaps on the device page (the
default range and the dashboard's are the last hour)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgewise.server.problems import Problem
from edgewise.server.routes.quality import _plot, _report
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.server.conftest import Env

S = 10**9
H = 3600 * S
T0 = 1_700_000_000 * S - (1_700_000_000 * S) % H


@pytest.fixture
def store() -> Iterator[object]:
    st = open_store("duckdb://:memory:")
    yield st
    st.close()


def test_an_hourly_sensor_is_complete_in_any_hour(store) -> None:
    """Check one reading an hour for 48 h, all on time, is whole and gapless in a 1 h range
    (as in the 48 h range), judged at its hourly spacing, beside a 1-minute metric."""
    store.append([Reading("p", "battery", T0 + i * H, 100.0 - i) for i in range(49)])
    store.append([Reading("p", "temp", T0 + i * 60 * S, 20.0 + i % 3) for i in range(49 * 60)])
    for start in (T0 + 47 * H + 1800 * S, T0 + 47 * H, T0 + 47 * H - 1):
        rep = _report(store, "p", start, start + H, now_ns=T0 + 49 * H)
        bat = rep["metrics"]["battery"]
        assert bat["readings"] == 1, start
        assert (bat["completeness"], bat["timeliness"], bat["gaps"], bat["interval_s"]) == (
            1.0, 1.0, 0, 3600.0), start
        assert rep["summary"]["completeness"] == 1.0 and rep["summary"]["gaps"] == 0
        assert rep["plots"] == []
    full = _report(store, "p", T0, T0 + 48 * H + 1, now_ns=T0 + 49 * H)["metrics"]["battery"]
    assert (full["completeness"], full["gaps"]) == (1.0, 0)


def test_a_slow_sensor_between_readings_is_no_gap(store) -> None:
    """Check a sensor read every 2 h, silent over the 1 h range between two readings, is
    whole, on time and gapless (it was listed 0 % complete, the range one gap)."""
    store.append([Reading("p", "level", T0 + i * 2 * H, 1.0 + i) for i in range(10)])
    store.append([Reading("p", "temp", T0 + i * 60 * S, 20.0 + i % 3) for i in range(20 * 60)])
    rep = _report(store, "p", T0 + 5 * H, T0 + 6 * H, now_ns=T0 + 30 * H)["metrics"]["level"]
    assert (rep["readings"], rep["completeness"], rep["timeliness"], rep["gaps"]) == (
        0, 1.0, 1.0, 0)


def test_a_dead_slow_sensor_is_still_a_gap(store) -> None:
    """Check an hourly sensor whose last reading came 3 h before the range is a gap there
    and 0 % complete, with its reading then a gap from the range's start too; and a
    1-minute sensor dead for 3 h that sends again 10 s into the range has that 10 s as a
    gap (its silence counted from its last reading, not from the range's start)."""
    store.append([Reading("p", "battery", T0 + i * H, 100.0 - i) for i in range(10)])
    store.append([Reading("p", "temp", T0 + i * 60 * S, 20.0 + i % 3) for i in range(9 * 60)]
                 + [Reading("p", "temp", T0 + 12 * H + 10 * S + i * 60 * S, 20.0 + i % 3)
                    for i in range(60)])
    start = T0 + 12 * H
    rep = _report(store, "p", start, start + H, now_ns=start + H)
    bat, temp = rep["metrics"]["battery"], rep["metrics"]["temp"]
    assert (bat["readings"], bat["completeness"], bat["timeliness"], bat["gaps"]) == (
        0, 0.0, 0.0, 1)
    assert bat["longest_gap_s"] == 3600.0
    assert (temp["gaps"], temp["longest_gap_s"]) == (1, 10.0)
    assert [p["metric"] for p in rep["plots"]] == ["temp"]
    assert _plot(store, "p", "temp", start, start + H).startswith(b"\x89PNG")
    store.append([Reading("p", "battery", start + 1800 * S, 50.0)])  # back, after 3.5 h
    bat = _report(store, "p", start, start + H, now_ns=start + H)["metrics"]["battery"]
    assert (bat["readings"], bat["completeness"], bat["gaps"]) == (1, 1.0, 1)
    assert bat["longest_gap_s"] == 1800.0


def test_a_one_second_window_of_a_one_second_sensor_is_whole(store) -> None:
    """Check windows of 1, 2 and 10 s over readings every second are whole and gapless."""
    store.append([Reading("p", "a", T0 + i * S, float(i % 7)) for i in range(100)])
    for n in (1, 2, 10):
        rep = _report(store, "p", T0 + 20 * S, T0 + (20 + n) * S, now_ns=T0 + H)
        m = rep["metrics"]["a"]
        assert (m["readings"], m["completeness"], m["gaps"], m["interval_s"]) == (
            n, 1.0, 0, 1.0), n


def test_a_metric_with_no_spacing_known_is_unknown_not_zero(store) -> None:
    """Check a metric with one reading ever is null (unknown) complete and timely with no
    gap, left out of the summary's means (not 0 % with 2 gaps), and has no plot."""
    store.append([Reading("p", "temp", T0 + i * 60 * S, 20.0 + i % 3) for i in range(60)])
    store.append([Reading("p", "once", T0 + 1800 * S, 1.0)])
    rep = _report(store, "p", T0, T0 + H, now_ns=T0 + H)
    once = rep["metrics"]["once"]
    assert (once["completeness"], once["timeliness"], once["gaps"]) == (None, None, 0)
    assert rep["summary"]["completeness"] == 1.0 and rep["summary"]["timeliness"] == 1.0
    assert [p["metric"] for p in rep["plots"]] == []
    with pytest.raises(Problem):
        _plot(store, "p", "once", T0, T0 + H)
    later = _report(store, "p", T0 + H, T0 + 2 * H, now_ns=T0 + 2 * H)["metrics"]
    assert (later["once"]["completeness"], later["once"]["gaps"]) == (None, 0)


def test_the_route_reports_an_hourly_sensor_whole_by_default(env: Env) -> None:
    """Check GET /v1/devices/{id}/quality's default range (the last hour) over hourly
    readings: whole, no gap; and a metric with one reading ever is JSON null."""
    now = int(time.time())
    h0 = now - now % 3600 - 48 * 3600
    batch = [{"ts": h0 + 3600 * i, "metrics": {"battery": 100.0 - i}, "seq": i + 1}
             for i in range(49)]
    batch.append({"ts": now - 10, "metrics": {"once": 1.0}, "seq": 50})
    assert env.send(batch).json()["accepted"] == 50
    assert env.pipeline.flush()
    r = env.client.get(f"/v1/devices/{env.device}/quality", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    rep = r.json()
    bat = rep["metrics"]["battery"]
    assert (bat["readings"], bat["completeness"], bat["gaps"]) == (1, 1.0, 0)
    assert (rep["metrics"]["once"]["completeness"], rep["metrics"]["once"]["gaps"]) == (None, 0)
    assert rep["summary"]["completeness"] == 1.0 and rep["plots"] == []
