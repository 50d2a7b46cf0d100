"""POST /v1/telemetry with a repeated metric (API bug hunt 2, bug 1): the record is rejected
naming ``metrics.t`` instead of 2.0 being stored and 1.0 lost without a word."""

from __future__ import annotations

import time

from tests.server.conftest import Env


def test_a_repeated_metric_is_rejected_and_the_other_records_stored(env: Env) -> None:
    ts = int(time.time()) - 60
    body = (b'[{"ts":%d,"metrics":{"t":1.0,"t":2.0},"seq":14},'
            b'{"ts":%d,"metrics":{"t":3.0},"seq":15}]' % (ts, ts + 1))
    resp = env.send(body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["accepted"], out["ack_seq"]) == (1, 0)  # 1..13 were never sent
    (rej,) = out["rejected"]
    assert (rej["index"], rej["field"], rej["reason"]) == (0, "metrics.t", "duplicate_key")
    assert rej["value"] == "2 values: 1.0, 2.0" and "once per object" in rej["allowed"]
    assert [v for *_, v in env.store.query(env.device, "t")] == [3.0]


def test_the_hunts_single_record_is_not_accepted(env: Env) -> None:
    ts = int(time.time()) - 60
    resp = env.send(b'{"ts":%d,"metrics":{"t":1.0,"t":2.0},"seq":1}' % ts)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # handled (its seq is acknowledged, the device does not resend it), stored nothing
    assert (body["accepted"], body["ack_seq"]) == (0, 1)
    assert [(r["field"], r["reason"]) for r in body["rejected"]] == [("metrics.t",
                                                                       "duplicate_key")]
    assert env.store.query(env.device, "t") == []
