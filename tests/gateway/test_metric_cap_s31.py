"""Session 31 resource caps in the gateway: a device's metric names, and the cross-sensor
gate's metrics.

* A device that sent a new metric name in every reading grew the gateway without bound
  (each (device, metric) a detector of 128 KB: 60,000 names took RSS from 244 to
  1,233 MB and detectors.pickle to 8 GB, within the rate limit).
  :class:`~edgewise.gateway.metric_cap.MetricCap` remembers each device's names and says
  which new ones are past ``max_metrics_per_device`` (EDGEWISE_MAX_METRICS_PER_DEVICE).
* The cross-sensor gate modelled every fast metric of a device, its memory growing with
  the square (2,000 metrics: +360 MB; a row of 20,000 asked for a 12 GB array): it now
  models at most ``max_metrics`` and leaves the others' scores as they were.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError, InvalidParameterError
from edgewise.gateway.cross_sensor import CrossSensorGate
from edgewise.gateway.metric_cap import DEFAULT_MAX_METRICS, REASON, MetricCap
from edgewise.store import open_store
from edgewise.telemetry import MAX_LISTED_REJECTIONS, Reading, decode

# -- the setting ------------------------------------------------------------------------


def test_max_metrics_per_device_setting_defaults_and_reads_its_variable() -> None:
    """Check the setting's default (256, the class's) and that its variable is read."""
    assert Settings().max_metrics_per_device == DEFAULT_MAX_METRICS == 256
    s = Settings.load(env={"EDGEWISE_MAX_METRICS_PER_DEVICE": "40"})
    assert s.max_metrics_per_device == 40


@pytest.mark.parametrize("raw", ["0", "-3", "ten", "2.5"])
def test_max_metrics_per_device_out_of_range_is_one_line_naming_the_range(raw: str) -> None:
    """Check a value below 1 or no int is refused naming the setting, value and range."""
    with pytest.raises(ConfigError) as exc:
        Settings.load(env={"EDGEWISE_MAX_METRICS_PER_DEVICE": raw})
    assert str(exc.value) == (
        f"Setting 'max_metrics_per_device' (EDGEWISE_MAX_METRICS_PER_DEVICE) has value "
        f"{raw!r}. It must be an int in the range [1, inf).")


# -- MetricCap ----------------------------------------------------------------------------


def test_new_names_past_the_cap_are_refused_first_come_first_served() -> None:
    """Check names are admitted in order until the cap, then refused; a name admitted
    before is always admitted again; a name repeated in one call is refused once."""
    cap = MetricCap(max_metrics=3)
    assert cap.admit("p", ["a", "b"]) == set()
    assert cap.admit("p", ["c", "d", "a", "d", "e"]) == {"d", "e"}
    assert cap.known("p") == {"a", "b", "c"}
    assert cap.admit("p", ["a", "b", "c"]) == set()  # its names keep being taken
    assert cap.admit("p", ["d"]) == {"d"}  # a refused name stays refused
    assert cap.known("p") == {"a", "b", "c"}


def test_devices_have_caps_of_their_own() -> None:
    """Check one device's names neither count towards nor fill another's cap."""
    cap = MetricCap(max_metrics=2)
    assert cap.admit("p", ["a", "b", "c"]) == {"c"}
    assert cap.admit("q", ["c", "d"]) == set()
    assert cap.known("p") == {"a", "b"} and cap.known("q") == {"c", "d"}


def test_seeded_names_count_and_are_never_refused_even_past_the_cap() -> None:
    """Check names the store holds are taken though more than the cap (a cap lowered
    after the fact), and leave no room for new ones."""
    cap = MetricCap(max_metrics=2)
    cap.seed("p", ["a", "b", "c"])
    assert cap.admit("p", ["c", "a", "b"]) == set()
    assert cap.admit("p", ["d"]) == {"d"}
    cap.seed("q", ["a"])
    assert cap.admit("q", ["b", "c"]) == {"c"}


def test_forget_drops_a_device_so_the_id_starts_again_with_no_names() -> None:
    """Check a forgotten (deleted) device's names are gone: the id registered again may
    have a whole cap of new names; forgetting an unknown device is harmless."""
    cap = MetricCap(max_metrics=2)
    cap.admit("p", ["a", "b"])
    cap.forget("p")
    cap.forget("nobody")
    assert cap.known("p") == frozenset()
    assert cap.admit("p", ["x", "y", "z"]) == {"z"}


def test_from_store_seeds_every_device_with_its_stored_metrics() -> None:
    """Check the cap starts from the store's metrics per device (Store.devices())."""
    st = open_store("duckdb://:memory:")
    try:
        st.append([Reading("p", m, 1, 1.0) for m in ("a", "b", "c")]
                  + [Reading("q", "z", 1, 1.0)])
        cap = MetricCap.from_store(st, max_metrics=2)
        assert cap.max_metrics == 2
        assert cap.known("p") == {"a", "b", "c"} and cap.known("q") == {"z"}
        assert cap.admit("p", ["a", "d"]) == {"d"}
        assert cap.admit("q", ["y", "x"]) == {"x"}
    finally:
        st.close()


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "8", None])
def test_a_cap_that_is_no_positive_int_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(InvalidParameterError, match="'max_metrics' parameter of MetricCap"):
        MetricCap(bad)  # type: ignore[arg-type]


def test_refuse_past_cap_moves_readings_to_rejections_and_keeps_the_others() -> None:
    """Check a message's readings of names past the cap become rejections (reason
    too_many_metrics, one per reading, naming the metric, the device and the setting),
    its other readings and its seq stay."""
    cap = MetricCap(max_metrics=2)
    payload = {"seq": 7, "ts": 1_700_000_000,
               "metrics": {"flow": 1.0, "speed": 2.0, "junk1": 3.0, "junk2": 4.0}}
    dec = decode(json.dumps(payload).encode(), "pump-1")
    assert cap.refuse_past_cap(dec, "pump-1") == 2
    assert [r.metric for r in dec.readings] == ["flow", "speed"]
    assert dec.seqs == [7]
    assert dec.rejected_counts() == {REASON: 2}
    assert REASON == "too_many_metrics"
    first = dec.rejected[0]
    assert (first.device_id, first.field, first.value) == ("pump-1", "metric", "junk1")
    assert "EDGEWISE_MAX_METRICS_PER_DEVICE" in str(first) and "'pump-1'" in str(first)
    # the same names again: refused again, the known ones taken
    again = decode(json.dumps({**payload, "seq": 8}).encode(), "pump-1")
    assert cap.refuse_past_cap(again, "pump-1") == 2
    ok = decode(json.dumps({"ts": 1_700_000_001, "metrics": {"flow": 5.0}}).encode(),
                "pump-1")
    assert cap.refuse_past_cap(ok, "pump-1") == 0
    assert len(ok.readings) == 1 and not ok.rejected


def test_many_refused_readings_are_listed_up_to_the_decoder_limit_and_counted() -> None:
    """Check 60,000 new names in messages (the hunt's attack) leave the cap's memory at
    its size, and a message of 2,000 refused readings lists 100 and counts them all."""
    cap = MetricCap(max_metrics=256)
    for b in range(30):
        metrics = {f"m{b * 2000 + i:08d}": float(i % 7) for i in range(2000)}
        dec = decode(json.dumps({"ts": 1_700_000_000 + b, "metrics": metrics}).encode(), "d")
        moved = cap.refuse_past_cap(dec, "d")
        assert moved == (2000 - 256 if b == 0 else 2000)
        assert dec.rejected_total == moved
        assert len(dec.rejected) == min(moved, MAX_LISTED_REJECTIONS)
        assert dec.rejected_counts() == ({REASON: moved} if moved else {})
    assert len(cap.known("d")) == 256


def test_concurrent_admits_never_pass_the_cap() -> None:
    """Check threads admitting distinct new names at once together admit exactly the
    cap, and every other name is refused to one of them."""
    cap = MetricCap(max_metrics=100)
    refused: list[set[str]] = []
    start = threading.Barrier(8)

    def worker(k: int) -> None:
        start.wait()
        got = set()
        for i in range(50):
            got |= cap.admit("p", [f"t{k}-{i}"])
        refused.append(got)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cap.known("p")) == 100
    every = set().union(*refused)
    assert len(every) == 8 * 50 - 100 and not every & cap.known("p")


# -- the cross-sensor gate -----------------------------------------------------------------


def _row(names: list[str], rng: np.random.Generator) -> dict[str, float]:
    return dict(zip(names, rng.normal(10, 1, len(names)).tolist(), strict=True))


def test_cross_gate_models_at_most_max_metrics_of_a_device() -> None:
    """Check a device with 600 fast metrics is modelled over the first 256 (the
    default) only: its moments are 512 square, not 1,200 (they grow with the square)."""
    gate = CrossSensorGate()
    assert gate.max_metrics == 256
    names = [f"m{i}" for i in range(600)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        gate.observe("p", _row(names, rng), dict.fromkeys(names, 0.0), set(names))
        gate.learn("p")
    dev = gate.devices_["p"]
    assert dev.metrics == names[:256]
    assert dev.cov.shape == (512, 512)


def test_cross_gate_leaves_metrics_past_its_cap_to_their_own_detectors() -> None:
    """Check a metric past ``max_metrics`` keeps its per-metric score, is never modelled,
    and a wider model warming up after a new metric stays within the cap."""
    gate = CrossSensorGate(max_metrics=2, warmup=20)
    rng = np.random.default_rng(1)
    both = {"speed", "flow", "extra", "late"}
    for i in range(400):
        s = 0.8 + 0.1 * (i // 50 % 2)
        row = {"speed": 2950 * s + rng.normal(0, 3), "flow": 120 * s + rng.normal(0, 0.6),
               "extra": 5 + rng.normal(0, 0.1)}
        gate.observe("p", row, dict.fromkeys(row, 0.0), both)
        gate.learn("p")
    assert gate.devices_["p"].metrics == ["speed", "flow"]
    row = {"speed": 2950 * 0.95, "flow": 120 * 0.95, "extra": 50.0, "late": 1.0}
    out = gate.observe("p", row, {"speed": 1.0, "flow": 1.0, "extra": 1.0, "late": 0.7},
                       both)
    assert out["extra"] == 1.0 and out["late"] == 0.7  # left as they were
    assert out["speed"] < 0.5  # the modelled pair is still judged (explained)
    gate.learn("p")
    dev = gate.devices_["p"]
    assert dev.shadow is None and dev.metrics == ["speed", "flow"]


def test_cross_gate_state_saved_over_more_metrics_starts_afresh_within_the_cap() -> None:
    """Check a device model restored from a state saved before the cap (more metrics
    than ``max_metrics``) is dropped and learned afresh over the first ``max_metrics``."""
    old = CrossSensorGate(max_metrics=300)
    names = [f"m{i}" for i in range(300)]
    rng = np.random.default_rng(2)
    old.observe("p", _row(names, rng), dict.fromkeys(names, 0.0), set(names))
    old.learn("p")
    gate = CrossSensorGate(max_metrics=4)
    gate.devices_ = old.devices_  # as the pipeline restores detectors.pickle
    gate.observe("p", _row(names, rng), dict.fromkeys(names, 0.0), set(names))
    assert gate.devices_["p"].metrics == names[:4]
    assert gate.devices_["p"].cov.shape == (8, 8)


@pytest.mark.parametrize("bad", [1, 0, 2.5])
def test_cross_gate_max_metrics_below_two_is_refused(bad: object) -> None:
    with pytest.raises(InvalidParameterError, match="'max_metrics' parameter"):
        CrossSensorGate(max_metrics=bad)  # type: ignore[arg-type]


def test_the_pipeline_refuses_names_past_the_cap_across_a_restart_and_forgets_at_delete(
        tmp_path) -> None:
    """Check the gateway's ingest applies the cap: 3 of 5 new names stored, 2 refused
    ``too_many_metrics`` (the seq still acked), a restart on the same store keeps refusing
    new names (those stored seeded from the store), and a deleted device's are forgotten."""
    import json

    from edgewise.config import Settings
    from edgewise.gateway.pipeline import Pipeline
    from edgewise.store import open_store

    url = f"duckdb://{tmp_path / 'ew.duckdb'}"
    msg = {"ts": 1_700_000_000, "seq": 1, "metrics": {f"m{i}": float(i) for i in range(5)}}

    def run(seq: int, ts: int, forget: bool = False, prefix: str = "m",
            ) -> tuple[int, dict[str, int], int]:
        store = open_store(url)
        p = Pipeline(store, Settings(max_metrics_per_device=3), detect_async=False)
        try:
            if forget:
                p.forget_device("d")
                store.delete_device("d")
            metrics = {f"{prefix}{i}": float(i) for i in range(5)}
            res = p.ingest("d", json.dumps({**msg, "seq": seq, "ts": ts,
                                            "metrics": metrics}).encode())
            return res.accepted, res.rejected_counts, res.ack_seq
        finally:
            p.close()
            store.close()

    accepted, refused, ack = run(1, 1_700_000_000)
    assert (accepted, refused.get("too_many_metrics"), ack) == (3, 2, 1), (accepted, refused)
    # new names after a restart: the stored m0..m2 fill the cap (unseeded, 3 would be taken)
    accepted, refused, _ = run(2, 1_700_000_001, prefix="x")
    assert (accepted, refused.get("too_many_metrics")) == (0, 5), (accepted, refused)
    # new names after the delete: the old ones no longer fill the cap (0 would be accepted)
    accepted, refused, _ = run(1, 1_700_000_002, forget=True, prefix="n")
    assert accepted == 3 and refused.get("too_many_metrics") == 2, (accepted, refused)
