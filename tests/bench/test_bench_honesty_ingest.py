"""Bench honesty: `bench ingest` says what detection did and which spikes it missed.

Before: the alert latency's percentiles covered only the spikes that raised an alert, and
the text output never said how many that was (at max load 44 of 443 spikes in the
published amqtt runs raised none); the rate was readings stored and acked, and nothing
checked whether detection, which runs after the ack, kept up: the bench read no scored or
unscored counter, and read the alerts as soon as the acks were in.
"""

from __future__ import annotations

import threading
import time

import pytest

from edgewise.bench import ingest
from edgewise.cli import bench_ingest
from edgewise.errors import ConfigError
from edgewise.gateway.metrics import Metrics


def _stored(n: float) -> Metrics:
    m = Metrics()
    m.inc("edgewise_readings_stored_total", n)
    return m


def test_detection_counts_read_scored_unscored_and_removed_from_metrics() -> None:
    """Check the counts come from the gateway's own /metrics text: scored, late-unscored,
    removed by the cleaner (every reason summed) and the backlog, beside stored."""
    m = _stored(800)
    m.inc("edgewise_readings_scored_total", 600)
    m.inc("edgewise_readings_late_unscored_total", 40)
    m.inc("edgewise_quality_removed_total", 3, reason="duplicate")
    m.inc("edgewise_quality_removed_total", 2, reason="out_of_range")
    m.set("edgewise_detection_backlog", 4)
    c = ingest.detection_counts(m.render())
    assert c == {"stored": 800.0, "scored": 600.0, "late_unscored": 40.0, "removed": 5.0,
                 "unscored": 200.0, "backlog": 4.0}
    assert not ingest.caught_up(c)


def test_the_wait_for_detection_ends_when_it_caught_up() -> None:
    """Check the bench waits while detection scores the backlog and stops once every stored
    reading is scored (or left late, or removed), not at the first look."""
    m = _stored(800)
    m.set("edgewise_detection_backlog", 2)

    def detect() -> None:  # the gateway's worker, scoring two batches
        for _ in range(2):
            time.sleep(0.15)
            m.inc("edgewise_readings_scored_total", 400)
        m.set("edgewise_detection_backlog", 0)

    worker = threading.Thread(target=detect)
    worker.start()
    counts, took = ingest.wait_detection(m.render, timeout_s=10, poll_s=0.02)
    worker.join()
    assert took is not None and 0.2 < took < 5
    assert counts["scored"] == 800 and counts["unscored"] == 0


def test_the_wait_for_detection_is_bounded() -> None:
    """Check a detection that never catches up ends the wait at its bound, saying so."""
    m = _stored(800)
    m.inc("edgewise_readings_scored_total", 500)
    t0 = time.monotonic()
    counts, took = ingest.wait_detection(m.render, timeout_s=0.3, poll_s=0.05)
    assert took is None
    assert time.monotonic() - t0 < 2
    assert counts["unscored"] == 300


def test_detect_wait_is_checked_before_any_run() -> None:
    """Check `--detect-wait` below 0 (or not finite) is refused, naming the option."""
    with pytest.raises(ConfigError, match=r"--detect-wait must be .*Got -1\.0"):
        ingest.check_ingest_options(20, 10.0, 200, detect_wait_s=-1.0)
    with pytest.raises(ConfigError, match="--detect-wait"):
        ingest.check_ingest_options(20, 10.0, 200, detect_wait_s=float("inf"))


def _run(**changes: object) -> dict[str, object]:
    run: dict[str, object] = {
        "readings_per_s": 23_200.0, "p50_stored_ms": 1200.0, "p99_stored_ms": 2966.0,
        "p50_alert_ms": 1882.4, "p99_alert_ms": 4038.3, "spikes": 155, "spike_alerts": 121,
        "spikes_missed": 34, "stored_at_load_end": 232_000.0, "scored_at_load_end": 150_800.0,
        "readings_stored": 264_368.0, "readings_scored": 200_000.0,
        "readings_unscored": 64_368.0, "detection_caught_up": False,
        "detection_caught_up_after_s": None}
    run.update(changes)
    return run


def test_the_text_output_says_spikes_missed_and_what_detection_scored() -> None:
    """Check the text output gives, for the max and the half-load run, spikes sent,
    alerted and never alerted, and readings scored against stored: the max rate is said
    to be stored and acked, and a detection that fell behind is named."""
    half = _run(readings_per_s=11_600.0, spikes=60, spike_alerts=60, spikes_missed=0,
                stored_at_load_end=116_000.0, scored_at_load_end=116_000.0,
                readings_stored=116_400.0, readings_scored=116_400.0, readings_unscored=0.0,
                detection_caught_up=True, detection_caught_up_after_s=0.4)
    lines = bench_ingest.text_lines({
        "broker": "amqtt (embedded)", "consumer": "plugin", "gateway_vs_raw": 1.0,
        "raw": {"readings_per_s": 23_200.0, "p50_ms": 1.0, "p99_ms": 2.0},
        "max": _run(), "half": half})
    text = "\n".join(lines)
    assert "23,200 readings/s stored and acked" in text
    assert "spikes: 155 sent, 121 alerted, 34 never alerted" in text
    assert "spikes: 60 sent, 60 alerted, 0 never alerted" in text
    assert "over the alerted ones" in text
    assert ("150,800 of 232,000 readings stored when the load stopped were scored by then "
            "(65%)") in text
    assert "did NOT catch up within the wait: 200,000 of 264,368 stored readings scored" in text
    assert "caught up 0.4 s later: 116,400 of 116,400 stored readings scored" in text


@pytest.mark.slow
def test_a_tiny_gateway_run_reports_scored_stored_and_missed_spikes() -> None:
    """Check one short gateway run (one device, half a second, a spike every 5th message)
    reports spikes sent, alerted and missed, and readings scored against stored, after
    detection caught up (slow: starts a gateway)."""
    r = ingest._gateway(1, 0.5, 40.0, 20, 5, lambda s: None, detect_wait_s=20)
    assert r["spikes"] > 0
    assert r["spike_alerts"] + r["spikes_missed"] == r["spikes"]
    assert r["detection_caught_up"] is True
    assert r["readings_stored"] > 0
    assert r["readings_scored"] + r["readings_unscored"] == r["readings_stored"]
    assert r["scored_at_load_end"] <= r["stored_at_load_end"] <= r["readings_stored"]
