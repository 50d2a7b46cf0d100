"""The quality report judges a device's completeness, timeliness and gaps over the range
asked, to now for a live window: a sensor that sent ten one-minute readings of the hour and
went silent read as complete, timely and without a gap on the dashboard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgewise.server.routes.quality import _plot, _report
from edgewise.store import open_store
from edgewise.telemetry import Reading

M = 60 * 10**9
T0 = 1_700_000_000 * 10**9


@pytest.fixture
def store() -> Iterator[object]:
    st = open_store("duckdb://:memory:")
    yield st
    st.close()


def test_a_sensor_silent_for_most_of_the_range_is_incomplete_with_a_gap(store) -> None:
    """Check 10 of an hour's 60 one-minute readings are 1/6 complete with the silence after
    them a gap, beside a metric sent all hour; the report lists its plot, which is drawn
    (a metric with nothing flagged is a 404)."""
    store.append([Reading("p", "temp", T0 + i * M, 20.0 + 0.1 * (i % 3)) for i in range(10)])
    store.append([Reading("p", "hum", T0 + i * M, 50.0 + 0.1 * (i % 3)) for i in range(60)])
    rep = _report(store, "p", T0, T0 + 60 * M)
    temp, hum = rep["metrics"]["temp"], rep["metrics"]["hum"]
    assert (temp["completeness"], temp["timeliness"], temp["gaps"]) == (0.1667, 0.9, 1)
    assert temp["longest_gap_s"] == 3060.0
    assert (hum["completeness"], hum["timeliness"], hum["gaps"]) == (1.0, 1.0, 0)
    assert rep["summary"]["gaps"] == 1
    assert [(p["metric"], p["flagged"]) for p in rep["plots"]] == [("temp", {"gaps": 1})]
    assert _plot(store, "p", "temp", T0, T0 + 60 * M).startswith(b"\x89PNG")


def test_a_live_window_ends_now_and_starts_at_the_device_first_reading(store) -> None:
    """Check a window with no end is judged to now (the 50 silent minutes since the last
    reading are a gap), an end after now is now (no reading can come later), and a device
    whose first reading came during the window misses none before it."""
    now = T0 + 60 * M
    store.append([Reading("p", "temp", T0 + i * M, 20.0 + 0.1 * (i % 3)) for i in range(10)])
    rep = _report(store, "p", T0, None, now_ns=now)["metrics"]["temp"]
    assert (rep["completeness"], rep["gaps"]) == (0.1667, 1)
    store.append([Reading("q", "temp", T0 + i * M, 20.0 + 0.1 * (i % 3)) for i in range(30, 60)])
    for end in (None, T0 + 120 * M):
        rep = _report(store, "q", T0, end, now_ns=now + 30 * 10**9)["metrics"]["temp"]
        assert (rep["completeness"], rep["timeliness"], rep["gaps"]) == (1.0, 1.0, 0), end


def test_a_metric_silent_over_the_whole_range_is_listed_not_left_out(store) -> None:
    """A sensor that sent readings earlier and none in the hour asked was absent from the
    report, so a dead sensor left the device's mean completeness at 1.0: it is listed
    with completeness 0 and the range one gap, and the summary counts it; it has no plot
    (nothing to draw)."""
    store.append([Reading("p", "temp", T0 - 120 * M + i * M, 20.0 + 0.1 * (i % 3))
                  for i in range(60)])  # the hour before the range, then nothing
    store.append([Reading("p", "hum", T0 + i * M, 50.0 + 0.1 * (i % 3)) for i in range(60)])
    rep = _report(store, "p", T0, T0 + 60 * M)
    temp = rep["metrics"]["temp"]
    assert (temp["readings"], temp["completeness"], temp["timeliness"]) == (0, 0.0, 0.0)
    assert (temp["gaps"], temp["longest_gap_s"]) == (1, 3600.0)
    assert rep["summary"]["completeness"] == 0.5 and rep["summary"]["gaps"] == 1
    assert [p["metric"] for p in rep["plots"]] == []
