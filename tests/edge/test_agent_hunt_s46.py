"""Edge agent hunt (session 46), against the real gateway app (in-process): a local alert
whose score is +inf (a model's "certainly anomalous") reaches the gateway instead of being
refused there as not_finite; readings dropped while the outbox was full are told to the
gateway (agent.dropped); a CSV cell that is NaN or infinite is logged as left out; CSV rows
skipped for their time are said once per kind, not once a row; and a release signed again
(renewed before it expires) keeps what the detectors learned."""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent
from tests.server.conftest import Env, build_env


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


class StepZ:
    """A plain z-score over the readings so far, as a user might publish it: a reading off a
    constant signal (deviation 0) is infinitely many deviations away, so it scores +inf."""

    def __init__(self) -> None:
        self.n, self.mean = 0, 0.0

    def clone(self) -> StepZ:
        return StepZ()

    def score_one(self, x: dict[str, float]) -> float:
        (v,) = x.values()
        if self.n < 3 or v == self.mean:
            return 0.0
        return math.inf  # every reading so far was self.mean: sd 0

    def learn_one(self, x: dict[str, float]) -> None:
        (v,) = x.values()
        self.n += 1
        self.mean = v if self.n == 1 else self.mean


def _drain(agent: Agent, gw: Env) -> None:
    for _ in range(20):
        if not len(agent.outbox):
            return
        agent.drain_once(gw.client)
    raise AssertionError(f"{len(agent.outbox)} messages still pending")


def test_an_infinite_local_alert_score_reaches_the_gateway(gw, tmp_path, caplog):
    """Check a signed model that scores a reading +inf raises a local alert that the gateway
    stores (as the largest finite float) with its reading, and the log line is strict JSON.
    The alert used to be sent as JSON Infinity: the gateway refused it as not_finite, so the
    one alert that mattered most never left the device (counted as a rejection)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    reg = gw.client.app.state.registry
    reg.publish("stepz", "1.0.0", pickle.dumps(StepZ()), format="pickle")
    reg.rollout("stepz", "1.0.0", f"device:{gw.device}")
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a",
                  trusted_keys={reg.key_id: reg.public_key_bytes})
    assert agent.check_update(gw.client) == "installed"
    for v in (20.0, 20.0, 20.0, 20.0, 95.0):
        assert agent.handle({"temp_c": v}) is not None
    _drain(agent, gw)
    assert agent.local_alerts == 1
    assert agent.outbox.rejected == 0 and not _events(caplog, "readings_rejected")
    [(_, _, score)] = gw.store.query(gw.device, "alert:temp_c")
    assert score == sys.float_info.max
    assert [v for _, _, v in gw.store.query(gw.device, "temp_c")][-1] == 95.0
    [alert] = [r.getMessage() for r in caplog.records if '"local_alert"' in r.getMessage()]
    assert json.loads(alert, parse_constant=lambda c: pytest.fail(f"log line holds {c}"))
    agent.close()


def test_readings_dropped_while_the_gateway_was_away_are_told_to_it(gw, tmp_path):
    """Check readings dropped because the outbox was full (the gateway away for long) are
    told to the gateway once there is room again, as metric agent.dropped holding the exact
    total, also when the agent was restarted in between, and that a restart does not tell
    it again. The count was only in the device's log and outbox: the gateway showed a gap
    with nothing to say readings were lost."""
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a", max_bytes=4000)
    seqs = [agent.handle({"temp_c": 20.0 + i % 3}) for i in range(100)]  # gateway away
    kept = sum(s is not None for s in seqs)
    assert 0 < kept < 100 and agent.outbox.dropped == 100 - kept
    agent.close()                                    # a restart while it is still away
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a", max_bytes=4000)
    _drain(agent, gw)                                # it is back
    assert agent.handle({"temp_c": 20.0}) is not None
    _drain(agent, gw)
    told = [v for _, _, v in gw.store.query(gw.device, "agent.dropped")]
    assert told == [100.0 - kept]
    assert len(gw.store.query(gw.device, "temp_c")) == kept + 1
    agent.close()
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a", max_bytes=4000)
    assert agent.handle({"temp_c": 20.0}) is not None
    _drain(agent, gw)
    assert len(gw.store.query(gw.device, "agent.dropped")) == 1  # said once, not per start
    agent.close()


def test_a_csv_cell_that_is_nan_or_infinite_is_logged_as_left_out(tmp_path, caplog):
    """Check CSV cells that parse as floats but are no finite number ('NaN', 'inf', '1e999':
    a logger's overflow or error marker) are left out and logged naming column, line and
    value, as a cell that is no number is, while the rest of the row is kept. They were
    left out without a word: a column that only ever read 1e999 was never sent, and
    nothing said why."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    t0 = 1_700_000_000
    csv = tmp_path / "log.csv"
    csv.write_text(f"time,temp_c,flow,rpm\n{t0},1e999,NaN,1450\n{t0 + 1},21.5,3.5,-inf\n")
    agent = Agent("http://127.0.0.1:9", "pump-7", "s", tmp_path / "a")
    try:
        agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
        got = [m["metrics"] for m in agent.outbox.pending(10)]
    finally:
        agent.close()
    assert got == [{"rpm": 1450.0}, {"temp_c": 21.5, "flow": 3.5}]
    said = {(e["field"], e["line"], e["value"]) for e in _events(caplog, "bad_input")}
    assert said == {("temp_c", 2, "1e999"), ("flow", 2, "NaN"), ("rpm", 3, "-inf")}


def test_a_release_signed_again_keeps_what_the_detectors_learned(gw, tmp_path, caplog):
    """Check the same rollout run again (a release renewed before it expires: a new
    release number, the same model) is installed without throwing away what the local
    detectors learned, so a fault just after the renewal is still alerted. Every renewal
    made each metric start its warm-up again: the fault below went unseen."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    reg = gw.client.app.state.registry
    reg.publish("ewz", "1.0.0", pickle.dumps(EWZScore()), format="pickle")
    reg.rollout("ewz", "1.0.0", f"device:{gw.device}")
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a",
                  trusted_keys={reg.key_id: reg.public_key_bytes})
    assert agent.check_update(gw.client) == "installed" and agent.release == 1
    for i in range(200):
        agent.handle({"temp_c": 20.0 + (i % 7) * 0.1})
    learned = agent.detectors["temp_c"].n_
    reg.rollout("ewz", "1.0.0", f"device:{gw.device}")     # renewed before it expires
    assert agent.check_update(gw.client) == "installed" and agent.release == 2
    assert "temp_c" in agent.detectors and agent.detectors["temp_c"].n_ == learned
    assert _events(caplog, "model_loaded")[-1]["detectors"].startswith("kept")
    agent.handle({"temp_c": 25.0})                          # a fault right after it
    assert agent.local_alerts == 1
    reg.publish("ewz", "2.0.0", pickle.dumps(EWZScore(z0=4.0)), format="pickle")
    reg.rollout("ewz", "2.0.0", f"device:{gw.device}")     # another model starts fresh
    assert agent.check_update(gw.client) == "installed" and agent.detectors == {}
    agent.close()


def test_csv_rows_skipped_for_their_time_are_said_once_per_kind_not_per_row(tmp_path, caplog):
    """Check a CSV file whose logger writes its local time without a UTC offset (as pandas
    writes a naive time: '2024-01-31 12:00:00') has its rows skipped and said once, with a
    row before 2000 said once for its own reason, the good rows between them still sent.
    Every skipped row logged a warning of its own: one a second for ever from a 1 Hz
    logger, 86,400 lines a day on the device's SD card."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    rows = [f"2024-01-31 12:{i // 60:02d}:{i % 60:02d},{20 + i % 5}" for i in range(300)]
    rows[100] = "1700000000,21.5"
    rows[200] = "1999-12-31T23:59:59Z,22.5"
    rows[201] = "1999-12-31T23:59:58Z,22.5"
    csv = tmp_path / "naive.csv"
    csv.write_text("time,temp_c\n" + "\n".join(rows) + "\n")
    agent = Agent("http://127.0.0.1:9", "pump-7", "s", tmp_path / "a")
    try:
        agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
        got = [m["metrics"] for m in agent.outbox.pending(10)]
        assert agent.outbox.source_pos == 301              # all read, the good row sent
    finally:
        agent.close()
    assert got == [{"temp_c": 21.5}]
    said = [(e["line"], e["value"]) for e in _events(caplog, "bad_input")]
    assert said == [(2, "2024-01-31 12:00:00"), (202, "1999-12-31T23:59:59Z")]


def test_a_detector_save_cut_short_leaves_no_temp_behind(tmp_path: Path) -> None:
    """Check a ``.detectors.pickle.<pid>.<tid>.<hex>.tmp`` left by a kill mid-save (one
    more at every such crash, never removed) is removed when the agent starts, while a
    file of another name and a link are left alone."""
    from edgewise.edge.agent import Agent

    state = tmp_path / "state"
    a = Agent("http://127.0.0.1:9", "pump-7", "s", state)
    a.close()
    stale = state / ".detectors.pickle.4242.139872.0badcafe.tmp"
    stale.write_bytes(b"x" * 4096)
    mine = state / ".detectors.pickle.notes.tmp"
    mine.write_bytes(b"keep")
    target = tmp_path / "elsewhere.tmp"
    target.write_bytes(b"not the agent's")
    link = state / ".detectors.pickle.4243.1.deadbeef.tmp"
    link.symlink_to(target)
    b = Agent("http://127.0.0.1:9", "pump-7", "s", state)
    try:
        assert not stale.exists()
        assert mine.exists() and link.is_symlink() and target.read_bytes() == b"not the agent's"
    finally:
        b.close()
