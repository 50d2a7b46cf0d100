"""Server hunt, defect 2: a RUL model file that does not load (truncated, damaged, another
format version) made ``GET /v1/devices/{id}/rul`` answer 500 for every device. RUL being
unavailable is not an error: the route passes over such a file for the newest that loads,
and answers ``reason: bad_model`` when none does; :meth:`RULModel.save` writes whole files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from edgewise.models.rul import RULModel
from tests.server.conftest import Env
from tests.server.test_rul_api import SENSORS, _small_model, _unit


def _models(env: Env) -> Path:
    return env.settings.data_dir / "models"


def _send_history(env: Env, n: int = 40) -> None:
    x = _unit(np.random.default_rng(1), 120)[:n]
    t0 = int(time.time()) - n
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in enumerate(SENSORS)}} for i in range(n)]
    assert env.send(batch).status_code == 200


def _newer(path: Path, data: bytes, seconds: int = 60) -> Path:
    """Write ``data`` to ``path`` with an mtime ``seconds`` newer than now: the newest file."""
    path.write_bytes(data)
    t = time.time() + seconds
    os.utime(path, (t, t))
    return path


def _truncated(good: Path) -> bytes:
    """A model file cut short: its header intact, its pickle not."""
    data = good.read_bytes()
    return data[: len(data) // 2]


def _other_version(good: Path, version: int = 1) -> bytes:
    magic, head, body = good.read_bytes().split(b"\n", 2)
    header = json.loads(head)
    header["format_version"] = version
    return magic + b"\n" + json.dumps(header).encode() + b"\n" + body


def _rul(env: Env, device: str | None = None) -> dict:
    r = env.client.get(f"/v1/devices/{device or env.device}/rul", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_truncated_newer_model_is_passed_over_for_the_newest_that_loads(env: Env) -> None:
    """Check a damaged newest file does not take RUL away: the answer comes from the older
    file, and says which file was passed over and why."""
    _small_model(env)
    _send_history(env)
    _newer(_models(env) / "rul-v2.ewm", _truncated(_models(env) / "rul-v1.ewm"))
    body = _rul(env)
    assert body["reason"] is None and body["rul"] is not None, body
    assert body["model"] == "rul-v1.ewm"
    assert [s["model"] for s in body["skipped"]] == ["rul-v2.ewm"]
    assert "rul-v2.ewm" in body["skipped"][0]["detail"]


@pytest.mark.parametrize("damage", ["truncated", "version", "garbage"])
def test_no_model_that_loads_is_bad_model_not_a_500(env: Env, damage: str) -> None:
    """Check a truncated file, one of another format version and one whose pickle is garbage
    each answer ``rul: null, reason: bad_model`` with a detail naming the file and the fix,
    for a device with history and one without (which says it has no history)."""
    good = _models(env) / "rul-v1.ewm"
    _small_model(env)
    data = {"truncated": _truncated(good), "version": _other_version(good),
            "garbage": good.read_bytes().split(b"\n", 2)[0] + b"\n"
            + good.read_bytes().split(b"\n", 2)[1] + b"\nnot a pickle at all"}[damage]
    good.write_bytes(data)
    _send_history(env)
    body = _rul(env)
    assert (body["rul"], body["reason"], body["model"]) == (None, "bad_model", "rul-v1.ewm")
    assert "rul-v1.ewm" in body["detail"] and "edgewise train rul" in body["detail"], body
    if damage == "version":
        assert "format version 1" in body["detail"], body
    assert set(body) >= {"device_id", "rul", "low", "high", "reason", "detail"}
    env.security.add_device("pump-2")  # registered, never sent anything
    quiet = _rul(env, "pump-2")
    assert (quiet["rul"], quiet["reason"]) == (None, "no_history"), quiet


def test_every_device_gets_its_answer_with_a_bad_model_present(env: Env) -> None:
    """Check the one damaged file answers bad_model again and again (nothing raises)."""
    _small_model(env)
    good = _models(env) / "rul-v1.ewm"
    good.write_bytes(_truncated(good))
    _send_history(env)
    for _ in range(3):
        assert _rul(env)["reason"] == "bad_model"


def test_save_replaces_the_file_whole(tmp_path: Path) -> None:
    """Check RULModel.save writes a new file and renames it over the old one (a reader that
    opened the old file keeps reading the old file whole, never a half-written one), and
    leaves no temporary file behind."""
    model = RULModel(window=5, n_estimators=10, random_state=0)
    rng = np.random.default_rng(0)
    import pandas as pd

    frames = [pd.DataFrame({"unit": u, "cycle": np.arange(1, 61),
                            **{s: _unit(rng, 60)[:, j] for j, s in enumerate(SENSORS)}})
              for u in range(6)]
    model.fit(pd.concat(frames, ignore_index=True))
    path = tmp_path / "rul-v1.ewm"
    path.write_bytes(b"old contents")
    with open(path, "rb") as reader:  # a gateway holding the old file open
        size = model.save(path)
        assert reader.read() == b"old contents"
    assert path.stat().st_size == size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rul-v1.ewm"]
    from edgewise.models.rul import load_model

    assert isinstance(load_model(path), RULModel)


@pytest.mark.parametrize("cut", [0, 3, 20])
def test_a_file_cut_inside_its_header_is_bad_model_or_skipped_not_ignored(
        env: Env, cut: int) -> None:
    """Check a ``rul*`` file cut inside its header (a copy interrupted early) is handled as
    any file that does not load: the only one is ``bad_model`` (it answered ``no_model``,
    'No RUL model file'), and a newer one is named in ``skipped`` (it was passed over
    without a word)."""
    _small_model(env)
    _send_history(env)
    good = _models(env) / "rul-v1.ewm"
    data = good.read_bytes()
    good.write_bytes(data[:cut])
    body = _rul(env)
    assert (body["rul"], body["reason"], body["model"]) == (None, "bad_model", "rul-v1.ewm")
    assert [s["model"] for s in body["skipped"]] == ["rul-v1.ewm"], body
    good.write_bytes(data)
    _newer(_models(env) / "rul-v2.ewm", data[:cut])
    body = _rul(env)
    assert body["reason"] is None and body["model"] == "rul-v1.ewm", body
    assert [s["model"] for s in body["skipped"]] == ["rul-v2.ewm"], body
