"""Repeated identical glitches are spikes, each of them: a spike's own way down and back
up is no resolution of the sensor, in the batch report and in the gateway's stream
cleaner, while a quantised sensor's moves by one step stay no spikes."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.report import device_report
from edgewise.quality.spikes import hampel_mask, resolution
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9


def _rows(metric: str, values: np.ndarray | list[float]) -> list[dict]:
    return [{"device_id": "v1", "metric": metric, "ts_ns": i * S, "value": float(x)}
            for i, x in enumerate(values)]


def _stream_flags(values: np.ndarray | list[float], drop_spikes: bool = False) -> list[int]:
    """The positions the stream cleaner flags (or drops) as spikes."""
    c = StreamCleaner(drop_spikes=drop_spikes)
    found = []
    for i, x in enumerate(values):
        before = c.flagged["spike"] + c.removed["spike"]
        c.clean_one(Reading("v1", "m", i * S, float(x)))
        if c.flagged["spike"] + c.removed["spike"] > before:
            found.append(i)
    return found


def test_more_identical_dropouts_are_more_spikes_in_the_report() -> None:
    """Check a valve at 100 % that drops to 0.0 once, three or ten times has that many
    spikes in the report. Before, one dropout was one spike and three were none: their
    steps of 100 recurred, so 100 became the 'resolution' below which nothing is judged."""
    for where in ([250], [100, 250, 400], list(range(30, 500, 50))):
        v = np.full(500, 100.0)
        v[where] = 0.0
        assert device_report(_rows("valve_pos", v))["metrics"]["valve_pos"]["spikes"] == len(
            where)
        assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == where


def test_dropouts_are_no_resolution() -> None:
    """Check the resolution of a flat series with two dropouts is 0, not the dropout (20.0
    before), unless the dropouts are said to be no outliers."""
    v = [20.0] * 10 + [0.0] + [20.0] * 10 + [0.0] + [20.0] * 10
    assert resolution(v) == 0.0
    assert resolution(v, outliers=[False] * len(v)) == 20.0


def test_the_stream_flags_every_repeated_dropout() -> None:
    """Check the gateway's stream cleaner flags each of ten dropouts to 0.0 of a valve at
    100 %, as it removes each when it drops spikes. Before, flagging only, it flagged the
    first (i=30) and let i=80, 130, ... pass: the flagged dropout's way down and up was
    counted as the valve's resolution, while a dropped one was not."""
    v = np.full(500, 100.0)
    where = list(range(30, 500, 50))
    v[where] = 0.0
    assert _stream_flags(v) == where
    assert _stream_flags(v, drop_spikes=True) == where


@pytest.mark.parametrize(("name", "make"), [
    # quieter than their step: the value, and now and then a lone step off it, one way
    ("tenths", lambda n, rng: np.round(20.02 + 0.012 * rng.standard_normal(n), 1)),
    ("integers", lambda n, rng: np.round(15.2 + 0.12 * rng.standard_normal(n))),
    # ... or both ways, about 0, where every step is large beside the readings
    ("tenths_about_0", lambda n, rng: np.round(0.02 * rng.standard_normal(n), 1)),
    # noisier: the value moves between two steps for stretches
    ("halves", lambda n, rng: np.round((10.2 + 0.12 * rng.standard_normal(n)) * 2) / 2),
    ("counter", lambda n, rng: np.cumsum(rng.random(n) < 0.05).astype(float) + 1000.0),
])
def test_a_device_with_a_failing_valve_and_quantised_sensors(name: str, make) -> None:
    """Check one device's report and stream: its valve's three identical dropouts are all
    spikes, and its quantised sensor's moves by one step (tenths, whole units, halves, a
    counter that counts by one) none, though the quiet ones leave their value only for
    lone readings that their window calls outliers. The stream may flag such moves while
    it warms up, before it has seen the step recur, never later."""
    rng = np.random.default_rng(3)
    valve = np.full(3000, 100.0)
    valve[[500, 1500, 2500]] = 0.0
    quantised = make(3000, rng)
    assert 0.005 < np.mean(quantised != np.median(quantised)) or name == "counter"
    rows = _rows("valve_pos", valve) + _rows(name, quantised)
    metrics = device_report(rows)["metrics"]
    assert (metrics["valve_pos"]["spikes"], metrics[name]["spikes"]) == (3, 0)
    assert _stream_flags(valve) == [500, 1500, 2500]
    assert [i for i in _stream_flags(quantised) if i >= 100] == []
