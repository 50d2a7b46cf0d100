"""gaps.find_gaps/completeness/timeliness with a metric's history (``every_ns`` its spacing,
``prev_ns`` its last reading before the span) and metric_issues' ``before``: a series with
fewer than two readings in its span is judged by the spacing its history gives, where it
was 0 % complete with gaps for want of one; without a history nothing changes (the batch
``edgewise quality``)."""

from __future__ import annotations

import numpy as np

from edgewise.quality.gaps import completeness, find_gaps, timeliness
from edgewise.quality.report import device_report, metric_issues

S = 10**9
H = 3600 * S


def _figures(ts: list[int], span: tuple[int, int], before: list[int] | None) -> tuple:
    f = metric_issues(np.array(ts, dtype=np.int64), np.ones(len(ts)), span=span,
                      before=before)["figures"]
    return f["completeness"], f["timeliness"], f["gaps"], f["interval_s"]


def test_one_hourly_reading_in_an_hour_is_judged_by_its_history() -> None:
    """Check one reading of an hourly series in an hour range: 0 % with 2 gaps alone (as
    before), whole with its history; likewise one 1 s reading in a 1 s range."""
    span = (10 * H, 11 * H)
    assert _figures([10 * H + 1800 * S], span, None) == (0.0, 0.0, 2, 0.0)
    hist = [h * H + 1800 * S for h in range(5, 10)]
    assert _figures([10 * H + 1800 * S], span, hist) == (1.0, 1.0, 0, 3600.0)
    assert _figures([20 * S], (20 * S, 21 * S), [15 * S, 16 * S, 17 * S, 18 * S, 19 * S]) == (
        1.0, 1.0, 0, 1.0)


def test_a_silent_span_is_a_gap_only_past_the_spacing_from_the_last_reading() -> None:
    """Check an empty span with a spacing: whole and on time while the silence since the
    last reading is short, a gap (the whole span) and 0 % once longer than 2.5 spacings."""
    span, p = (10 * H, 11 * H), 9 * H + 1800 * S
    assert (find_gaps([], H, span=span, prev_ns=p), completeness(
        [], H, span=span, prev_ns=p), timeliness([], H, span=span, prev_ns=p)) == (
        [], 1.0, 1.0)
    # the reading due at 10 h is late (2 h since the last), not yet a gap (2.5 h)
    assert (find_gaps([], H, span=span, prev_ns=9 * H), completeness(
        [], H, span=span, prev_ns=9 * H), timeliness([], H, span=span, prev_ns=9 * H)) == (
        [], 1.0, 0.0)
    assert (find_gaps([], H, span=span, prev_ns=7 * H), completeness(
        [], H, span=span, prev_ns=7 * H), timeliness([], H, span=span, prev_ns=7 * H)) == (
        [(10 * H, 11 * H - 1)], 0.0, 0.0)
    assert _figures([], span, [h * H + 1800 * S for h in range(5, 10)])[:3] == (1.0, 1.0, 0)
    assert _figures([], span, [h * H for h in range(3, 8)])[:3] == (0.0, 0.0, 1)


def test_the_silence_before_the_first_reading_counts_from_the_last_one_before() -> None:
    """Check a 1 s series back 1.2 s into its span after a 100 s outage: no gap judged
    from the span's start alone (as before), a gap of that 1.2 s judged from its last
    reading; a last reading just before the span is none."""
    ts = [(12 + i) * S for i in range(20)]
    span = (10 * S + 800_000_000, 32 * S)
    assert (find_gaps(ts, span=span), timeliness(ts, span=span)) == ([], 1.0)
    assert completeness(ts, span=span) == 1.0
    assert find_gaps(ts, span=span, prev_ns=-90 * S) == [(span[0], 12 * S)]
    assert timeliness(ts, span=span, prev_ns=-90 * S) == 19 / 20
    assert completeness(ts, span=span, prev_ns=-90 * S) == 20 / 21
    assert (find_gaps(ts, span=span, prev_ns=11 * S), completeness(
        ts, span=span, prev_ns=11 * S)) == ([], 1.0)


def test_no_spacing_known_is_none_and_a_summary_leaves_it_out() -> None:
    """Check a single reading with an empty history is unknown (None), no gap, and
    device_report's means leave it out; without history it is still 0.0."""
    span = (0, H)
    assert _figures([1800 * S], span, [])[:3] == (None, None, 0)
    rows = [{"device_id": "p", "metric": "t", "ts_ns": i * 60 * S, "value": 1.0 + i % 2}
            for i in range(60)] + [{"device_id": "p", "metric": "once", "ts_ns": 1800 * S,
                                    "value": 1.0}]
    rep = device_report(rows, span=span, before={"t": []})
    assert rep["metrics"]["once"]["completeness"] is None
    assert rep["summary"]["completeness"] == rep["metrics"]["t"]["completeness"]
    plain = device_report(rows, span=span)
    assert plain["metrics"]["once"]["completeness"] == 0.0  # the batch report's, unchanged
