"""The streaming cleaner: nothing dropped silently, idempotent, never crashes on junk."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.errors import PayloadError, QualityError
from edgewise.quality import stream
from edgewise.quality.limits import Limits
from edgewise.quality.report import device_report, fleet_report
from edgewise.quality.spikes import resolution
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

readings = st.lists(
    st.builds(
        Reading,
        device_id=st.sampled_from(["a", "b"]),
        metric=st.sampled_from(["t", "p"]),
        ts_ns=st.integers(0, 50),
        value=st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 1.0, 1.0, 2.0]),
        ),
        unit=st.sampled_from([None, "Cel", "%RH"]),
    ),
    max_size=80,
)
LIMITS = {"t": Limits(low=-50.0, high=150.0, max_rate=1e9), "p": Limits(max_rate=5e8)}


@given(readings)
@settings(max_examples=150, deadline=None)
def test_counts_add_up_and_cleaning_is_idempotent(rs: list[Reading]) -> None:
    """Check kept + removed-by-reason == seen, and a second pass keeps everything."""
    first = StreamCleaner(limits=LIMITS, spike_window=5)
    kept = first.clean(rs)
    c = first.counts()
    assert c["kept"] + sum(c["removed"].values()) == c["seen"] == len(rs)
    second = StreamCleaner(limits=LIMITS, spike_window=5)
    assert second.clean(kept) == kept
    assert second.counts()["flagged"] == c["flagged"]


@given(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.floats(),
                          st.fixed_dictionaries({"device_id": st.text(max_size=3),
                                                 "metric": st.text(max_size=3),
                                                 "ts_ns": st.one_of(st.integers(), st.floats()),
                                                 "value": st.one_of(st.floats(), st.text()),
                                                 "unit": st.one_of(st.none(), st.integers(),
                                                                   st.text(max_size=4))}),
                          st.dictionaries(st.text(max_size=8), st.one_of(
                              st.integers(), st.floats(), st.text(max_size=4), st.none()),
                              max_size=6)), max_size=20))
@settings(max_examples=150, deadline=None)
def test_junk_rows_raise_only_quality_errors(rows: list) -> None:
    """Check that arbitrary junk given to the report fails only with QualityError."""
    try:
        fleet_report(rows)
    except (QualityError, PayloadError):
        pass


def test_known_faults_are_counted_by_reason() -> None:
    """Check each kind of fault in a crafted stream lands under its own reason."""
    base = 10**18
    vals = [20.0 + 0.1 * math.sin(i) for i in range(40)]
    rs = [Reading("d", "t", base + i * 10**9, v) for i, v in enumerate(vals)]
    rs.insert(10, rs[9])                                              # duplicate
    rs.insert(20, Reading("d", "t", rs[19].ts_ns, 99.0))              # conflict
    rs.insert(30, Reading("d", "t", base, 20.0))                      # out of order
    rs.append(Reading("d", "t", base + 100 * 10**9, float("nan")))    # invalid
    rs.append(Reading("d", "t", base + 101 * 10**9, 500.0))           # out of range
    rs.append(Reading("d", "t", base + 102 * 10**9, 40.0))            # spike (kept, flagged)
    rs.append(Reading("d", "h", base, -3.0, unit="%RH"))              # impossible for unit
    c = StreamCleaner(limits={"t": Limits(-40.0, 125.0)})
    kept = c.clean(rs)
    assert dict(c.removed) == {"duplicate": 1, "conflict": 1, "out_of_order": 1, "invalid": 1,
                               "out_of_range": 2}
    assert c.flagged["spike"] == 1
    assert len(kept) == 41


def test_stuck_sensor_is_flagged_not_removed() -> None:
    """Check that a flat-lined sensor is kept, and its whole run counts as stuck once it
    reaches stuck_run readings, as the batch report counts it."""
    rs = [Reading("d", "t", i, 5.0) for i in range(30)]
    c = StreamCleaner(stuck_run=20)
    assert len(c.clean(rs)) == 30
    assert c.flagged["stuck"] == 30


def test_bad_parameters_are_named() -> None:
    """Check that parameter errors name the parameter."""
    with pytest.raises(QualityError, match="'spike_window' parameter of StreamCleaner"):
        StreamCleaner(spike_window=2)
    with pytest.raises(QualityError, match="map metric names to Limits"):
        StreamCleaner(limits={"t": (0, 1)})


def test_device_report_on_a_faulty_series() -> None:
    """Check the report's figures on a series with planted faults."""
    rng = np.random.default_rng(0)
    rows = [{"device_id": "p", "metric": "temp", "ts_ns": i * 10**9,
             "value": 20 + rng.normal(0, 0.2), "unit": "Cel"} for i in range(300)]
    rows += [dict(rows[3]), dict(rows[4], value=99.0)]       # duplicate, conflict
    del rows[100:150]                                       # a 50 s outage
    rows[200]["value"] = 60.0                               # spike
    for r in rows[220:250]:
        r["value"] = 21.0                                   # stuck
    rep = device_report(rows)
    m = rep["metrics"]["temp"]
    assert (m["duplicates"], m["conflicts"], m["gaps"]) == (1, 1, 1)
    assert m["spikes"] == 1 and m["stuck"] == 30
    assert m["completeness"] == pytest.approx(250 / 300, abs=0.01)
    assert m["unit_known"] is True
    with pytest.raises(QualityError, match="covers one device"):
        device_report([*rows, {"device_id": "q", "metric": "x", "ts_ns": 1, "value": 1.0}])


@pytest.mark.parametrize("unit", [2.0**-30, 2.0**30])
def test_the_units_of_a_metric_do_not_change_its_quality_flags(unit: float) -> None:
    """Check a metric read in tiny (nA for A) or huge units gets the same spikes, stuck
    readings and drift, in the report and in the gateway's stream cleaner: no floor is
    absolute. Powers of two scale exactly."""
    rng = np.random.default_rng(1)
    v = 0.01 * rng.standard_normal(400)                       # a small current around 0
    v[[50, 210, 330]] += [0.3, -0.4, 0.5]                    # spikes
    v[120:160] = v[120]                                       # stuck
    v[300:] += 0.05                                           # a lasting shift

    def flags(scale: float) -> tuple:
        rows = [{"device_id": "p", "metric": "amps", "ts_ns": i * 10**9,
                 "value": float(x * scale)} for i, x in enumerate(v)]
        m = device_report(rows)["metrics"]["amps"]
        c = StreamCleaner()
        c.clean([Reading("p", "amps", i * 10**9, float(x * scale)) for i, x in enumerate(v)])
        return m["spikes"], m["stuck"], m["drift"], dict(c.flagged)

    ref = flags(1.0)
    assert ref[0] >= 3 and ref[1] >= 20 and ref[3].get("spike", 0) >= 3
    assert flags(unit) == ref


@pytest.mark.parametrize("noise", [0.02, 0.04, 0.08])
def test_a_sensor_that_reports_tenths_has_only_its_real_spikes(noise: float) -> None:
    """Check that a steady sensor quantised to 0.1 (most readings repeat, so the window has
    no spread) is not called spiky for moving a tenth or two: only the two planted 25.0
    readings are spikes, in the batch report and in the gateway's stream cleaner (which may
    flag the first move before it has seen the sensor's resolution). Before, 19% of the
    readings at noise 0.04 were 'spikes'."""
    rng = np.random.default_rng(0)
    x = np.round(20 + noise * rng.standard_normal(5000), 1)
    x[[1000, 3000]] = 25.0
    rows = [{"device_id": "d", "metric": "t", "ts_ns": i * 10**9, "value": float(v)}
            for i, v in enumerate(x)]
    assert device_report(rows)["metrics"]["t"]["spikes"] == 2
    c = StreamCleaner()
    c.clean([Reading("d", "t", i * 10**9, float(v)) for i, v in enumerate(x)])
    assert 2 <= c.flagged["spike"] <= 3


def test_a_flat_stream_s_first_spike_sets_no_floor_for_the_next() -> None:
    """Check both spikes on a flat stream are flagged, as the batch report flags them.
    Before, the first spike's own step (80) became the resolution floor of the stream's
    Hampel test, so the later 60 (|60 - 20| = 40 < 5 * 80) passed as no spike."""
    v = [20.0] * 300
    v[100], v[200] = 100.0, 60.0
    c = StreamCleaner()
    c.clean([Reading("d", "t", i * 10**9, x) for i, x in enumerate(v)])
    assert c.flagged["spike"] == 2
    rows = [{"device_id": "d", "metric": "t", "ts_ns": i * 10**9, "value": x}
            for i, x in enumerate(v)]
    assert device_report(rows)["metrics"]["t"]["spikes"] == 2


def test_unquantised_noise_keeps_a_bounded_state_that_pickles() -> None:
    """Check a stream whose steps never recur holds at most MAX_CANDIDATE_STEPS candidate
    steps (no resolution, as in the batch), and that the cleaner pickled mid-stream goes on
    exactly as the one that was not."""
    rng = np.random.default_rng(2)
    v = 20 + rng.standard_normal(3000)
    v[[500, 1500, 2500]] += [15.0, -12.0, 9.0]
    rs = [Reading("d", "t", i, float(x)) for i, x in enumerate(v)]
    whole = StreamCleaner()
    whole.clean(rs)
    s = whole._state[("d", "t")]
    assert s.step == math.inf and resolution(v) == 0.0
    assert len(s.cand_steps) == len(s.cand_counts) == stream.MAX_CANDIDATE_STEPS
    assert whole.flagged["spike"] >= 3
    first = StreamCleaner()
    first.clean(rs[:1000])
    resumed = pickle.loads(pickle.dumps(first))
    resumed.clean(rs[1000:])
    assert resumed.counts() == whole.counts()
    assert resumed._state[("d", "t")] == s
