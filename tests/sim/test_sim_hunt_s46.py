"""Hunt s46 on ``edgewise.sim``: each pump's samples go out under its own id whatever the
order of the credentials (they went under another pump's name, where the labels did not
say), and a runner's bad durations and probabilities are refused when it is made, not
in its thread (where NaN killed it with a traceback and nothing was sent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.sim.device import MqttDevice
from edgewise.sim.fleet import FleetRunner
from edgewise.sim.pumps import PumpFleet

T0 = 1_700_000_000 * 10**9
CLEAN = dict(p_gap=0.0, p_dropout=0.0, p_duplicate=0.0, p_swap=0.0)


def _kept(r: FleetRunner) -> dict[str, list[dict[str, object]]]:
    """What each (unconnected) device holds to publish under its own id, in seq order."""
    return {d.device_id: [json.loads(p) for p in d.pending.values()] for d in r.devices}


def test_credentials_in_another_order_send_each_pump_under_its_own_id() -> None:
    """Before: devices were paired with the fleet's pumps by position, so credentials
    given as [pump-02, pump-01] sent pump-01's samples (and its faults) as pump-02."""
    fleet = PumpFleet(3, seed=1, fault_rate_per_h=3600.0)
    r = FleetRunner(fleet, [("pump-03", "c"), ("pump-01", "a"), ("pump-02", "b")], **CLEAN)
    truth = PumpFleet(3, seed=1, fault_rate_per_h=3600.0)
    want: dict[str, list[dict[str, float]]] = {d: [] for d in truth.device_ids}
    for i in range(20):
        r._emit(T0 + i * 10**9)
        for dev, metrics in truth.step(T0 + i * 10**9):
            want[dev].append(metrics)
    kept = _kept(r)
    assert sorted(kept) == ["pump-01", "pump-02", "pump-03"]
    for dev, recs in kept.items():
        assert [rec["metrics"] for rec in recs] == want[dev], dev
    # and so a label's fault is in the readings of the device it names
    for f in fleet.labels():
        rec = next(x for x in kept[str(f["device_id"])] if x["ts"] * 1e9 == f["start_ns"])
        assert set(f["metrics"]) <= set(rec["metrics"])  # type: ignore[arg-type]


def test_a_pump_without_credentials_is_stepped_not_sent_and_has_no_labels() -> None:
    """Before: fewer credentials than pumps killed the runner's thread (zip strict) at
    its first sample, with a traceback, and nothing was sent."""
    fleet = PumpFleet(3, seed=0, fault_rate_per_h=3600.0)
    r = FleetRunner(fleet, [("pump-02", "b")], **CLEAN)
    for i in range(5):
        r._emit(T0 + i * 10**9)
    assert list(_kept(r)) == ["pump-02"] and len(_kept(r)["pump-02"]) == 5
    assert r.labels() == []  # nothing acknowledged: no label of any pump


@pytest.mark.parametrize(("creds", "bad"), [
    ([("pump-01", "a"), ("pump-9", "x")], "'pump-9', which is no pump of the fleet"),
    ([("pump-01", "a"), ("pump-01", "b")], "'pump-01', which is given twice"),
], ids=["unknown", "twice"])
def test_credentials_for_no_pump_or_twice_are_refused(creds: list[tuple[str, str]],
                                                      bad: str) -> None:
    with pytest.raises(InvalidParameterError, match=bad):
        FleetRunner(PumpFleet(2), creds)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"backfill_s": float("nan")}, "backfill_s must be a finite number of seconds"),
    ({"backfill_s": float("inf")}, "backfill_s must be a finite number of seconds"),
    ({"backfill_s": -600.0}, r"backfill_s must be .* 0 or more .* Got -600.0"),
    ({"p_gap": 1.5}, r"p_gap must be a probability in \[0, 1\] .* Got 1.5"),
    ({"p_swap": -0.1}, r"p_swap must be a probability"),
    ({"p_dropout": float("nan")}, r"p_dropout must be a probability"),
    ({"p_duplicate": 2}, r"p_duplicate must be a probability"),
])
def test_bad_durations_and_probabilities_are_refused_when_made(kw: dict[str, float],
                                                               msg: str) -> None:
    """Before: all taken; NaN or inf backfill raised in the runner's thread (ValueError,
    OverflowError: nothing sent), a negative one sent nothing for that long."""
    with pytest.raises(InvalidParameterError, match=msg):
        FleetRunner(PumpFleet(1), [("pump-01", "s")], **kw)


@pytest.mark.parametrize("batch", [1.5, 0, True, "100"])
def test_a_resend_batch_that_is_no_whole_number_is_refused(batch: object) -> None:
    """Before: 1.5 (and True) were taken, and every stalled-ack resend then raised
    ``TypeError: slice indices must be integers`` out of ``tick()`` (a real broker run:
    the device never resent what the gateway had not acknowledged)."""
    with pytest.raises(InvalidParameterError) as info:
        MqttDevice("pump-01", "s", resend_batch=batch)  # type: ignore[arg-type]
    assert f"resend_batch must be an int >= 1. Got {batch!r} instead." in str(info.value)


def test_a_numpy_int_resend_batch_is_taken() -> None:
    d = MqttDevice("pump-01", "s", resend_batch=np.int64(50))
    assert d.resend_batch == 50
