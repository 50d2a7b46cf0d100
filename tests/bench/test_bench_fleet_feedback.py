"""`edgewise bench fleet --feedback`: the same fleet without and with live false-alarm
feedback, an operator labelling each alert through the alert manager."""

from __future__ import annotations

from edgewise.bench.fleet import bench_fleet


def test_bench_fleet_runs_without_and_with_feedback_in_one_run() -> None:
    r = bench_fleet(["ewzscore"], pumps=2, hours=0.5, seed=1, fault_rate_per_h=6.0,
                    feedback=(False, True))
    plain, fed = r["detectors"]
    assert (plain["feedback"], fed["feedback"]) == (False, True)
    assert "labelled_false" not in plain
    # the operator labelled every alert that started 10 minutes before the end, each by
    # whether it overlaps an injected fault
    assert 0 < fed["labelled_false"] + fed["labelled_true"] <= fed["alerts"]
    assert fed["suppressed"] >= 0 and fed["found"] <= fed["faults"] == plain["faults"]
    assert plain["false_alerts_per_device_hour_after_first_hour"] is None  # half an hour
