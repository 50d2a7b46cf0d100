"""Prediction API hunt (session 48): RUL, forecast and fleet groups routes as an ML engineer
calls them."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest

from edgewise.models.rul import ModelFileError
from edgewise.server.query import format_ns
from edgewise.server.routes import rul as rul_route
from tests.server.conftest import Env
from tests.server.test_groups_route import send_kind
from tests.server.test_rul_api import SENSORS, _small_model, _unit
from tests.server.test_server_hunt_rul_bad_model import _rul, _send_history, _truncated


def test_a_model_file_fixed_in_place_with_its_old_mtime_is_read_again(env: Env) -> None:
    """A damaged model file replaced in place by the whole one with the same mtime (``cp -p``,
    ``rsync -a`` and ``tar`` keep the source's mtime; FAT keeps 2 s) was still answered
    ``bad_model`` for good: its failure was kept by path and mtime alone."""
    _small_model(env)
    _send_history(env)
    path = env.settings.data_dir / "models" / "rul-v1.ewm"
    whole = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    path.write_bytes(_truncated(path))
    os.utime(path, ns=(mtime, mtime))
    assert _rul(env)["reason"] == "bad_model"
    path.write_bytes(whole)  # the fixed copy, with the source's mtime again
    os.utime(path, ns=(mtime, mtime))
    body = _rul(env)
    assert body["reason"] is None and body["rul"] is not None, body
    assert body["model"] == "rul-v1.ewm" and "skipped" not in body


def test_rul_says_the_time_it_is_as_of_when_the_used_metrics_stopped(env: Env) -> None:
    """A device whose model's metrics stopped 300 days ago and that sends another metric
    now was answered a RUL of about an hour (``rul * step_s``) with no time at all: it read
    as now. ``as_of`` names the last row scored."""
    _small_model(env)
    x = _unit(np.random.default_rng(1), 120)
    now = int(time.time())
    old = now - 300 * 86_400
    batch = [{"ts": old + 60 * i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in enumerate(SENSORS)}} for i in range(40)]
    batch += [{"ts": now - 10 + i, "seq": 41 + i, "metrics": {"rssi": -50.0}}
              for i in range(10)]
    assert env.send(batch).status_code == 200
    body = _rul(env)
    assert body["rul"] is not None and body["rows"] == 40 and body["step_s"] == 60.0, body
    assert body["as_of"] == format_ns((old + 60 * 39) * 10**9)
    assert body["as_of"].endswith("Z")


def test_a_model_file_that_could_not_be_opened_for_a_moment_is_read_again(env: Env) -> None:
    """A model file the gateway could not open for a moment (out of open files: EMFILE,
    made here with RLIMIT_NOFILE) was kept as "damaged or truncated" for good, and every
    device was answered ``bad_model`` with the advice to remove the (whole) file."""
    _small_model(env)
    _send_history(env)
    path = env.settings.data_dir / "models" / "rul-v1.ewm"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))  # no file opens now
    try:
        with pytest.raises(ModelFileError) as err:
            rul_route._load(path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    body = _rul(env)  # the file opens again: scored from it
    assert body["reason"] is None and body["rul"] is not None, body
    assert body["model"] == "rul-v1.ewm" and "skipped" not in body
    assert "cannot be read now" in str(err.value) and "damaged or" not in str(err.value)


def test_groups_are_refitted_when_a_device_starts_or_comes_back_sending(env: Env) -> None:
    """A registered device that starts sending, or one back after weeks away, was listed
    left out ("no readings yet", "no readings in the 7 days") from the cached grouping for
    up to TTL_S (10 minutes): the cache was kept while the set of devices was the same."""
    for d in ("cool-2", "cool-3"):
        send_kind(env, d, 40.0)
    for d in ("hot-1", "hot-2"):
        send_kind(env, d, 60.0)
    weeks_ago = (int(time.time()) // 60 - 30 * 1440) * 60
    away = send_kind(env, "away-1", 60.0, end_s=weeks_ago, n=30)

    def left_out() -> tuple[bool, dict[str, str]]:
        r = env.client.get("/v1/fleet/groups", headers=env.auth("viewer"))
        assert r.status_code == 200, r.text
        body = r.json()
        return body["cached"], {d["device"]: d["reason"] for d in body["left_out"]["devices"]}

    cached, left = left_out()
    assert not cached and left["pump-1"] == "no readings yet"
    assert left["away-1"].startswith("no readings in the 7 days")
    send_kind(env, "pump-1", 40.0)  # registered: starts sending
    cached, left = left_out()
    assert not cached and "pump-1" not in left and "away-1" in left
    send_kind(env, "away-1", 60.0, n=30, secret=away)  # back after weeks away
    cached, left = left_out()
    assert not cached and left == {}
    assert left_out() == (True, {})  # and kept while nothing changes
