"""A device's group change is judged per model format (what the gateway offers the agent,
``current(..., formats=["pickle"])``), and two changes at once are checked one after the
other inside the credentials' write transaction (hunt of ff825b6)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry
from edgewise.security import Security


def _floors(d: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(d / "registry" / "registry.sqlite")
    try:
        return db.execute("SELECT * FROM floors").fetchall()
    finally:
        db.close()


def test_newer_c_build_does_not_hide_older_pickle_offer(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    sec.add_device("pump-1", groups=["a"])
    reg = Registry(tmp_path)
    reg.publish("m", "1.0.0", b"v1", format="pickle")
    reg.publish("m", "2.0.0", b"v2", format="pickle")
    reg.publish("m", "3.0.0", b"/* v3 */", format="c")
    reg.rollout("m", "2.0.0", "group:a")
    reg.rollout("m", "1.0.0", "group:b")
    reg.rollout("m", "3.0.0", "group:b")  # a C build: the pickle agent is never offered it
    assert reg.current("pump-1", ["b"], formats=["pickle"]).version == "1.0.0"
    with pytest.raises(InvalidParameterError, match=r"release 2 of 'm', version '1\.0\.0'"):
        sec.set_device_groups("pump-1", ["b"])
    assert sec.device_groups("pump-1") == ["a"]
    assert reg.current("pump-1", sec.device_groups("pump-1"),
                       formats=["pickle"]).version == "2.0.0"


def test_c_build_never_offered_does_not_refuse_move(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    sec.add_device("pump-1", groups=["a"])
    reg = Registry(tmp_path)
    reg.publish("m", "1.0.0", b"v1", format="pickle")
    reg.publish("m", "2.0.0", b"/* v2 */", format="c")
    reg.rollout("m", "1.0.0", "device:pump-1")
    reg.rollout("m", "2.0.0", "group:a")
    assert sec.set_device_groups("pump-1", []) == []
    assert reg.current("pump-1", [], formats=["pickle"]).version == "1.0.0"
    # what it left in C stays its C floor; its pickle offer is untouched
    assert [(r[0], r[1], r[2], r[5]) for r in _floors(tmp_path)] == [
        ("pump-1", "m", "2.0.0", "c")]


def test_concurrent_group_changes_checked_in_turn(tmp_path: Path) -> None:
    Security(tmp_path).add_device("p", groups=["a"])
    reg = Registry(tmp_path)
    for v in ("2", "2.5", "3"):
        reg.publish("m", v, v.encode(), format="pickle")
    reg.rollout("m", "2", "group:a")
    reg.rollout("m", "3", "group:b")
    reg.rollout("m", "2.5", "group:c")
    s1, s2 = Security(tmp_path), Security(tmp_path)
    entered, go = threading.Event(), threading.Event()
    orig = s2._check_group_change

    def held(dev: str, before: list[str], after: list[str]):
        entered.set()  # T2 has read its groups ('a') and is descheduled here
        assert go.wait(10)
        return orig(dev, before, after)

    s2._check_group_change = held  # type: ignore[method-assign]
    out: dict[str, object] = {}

    def run(name: str, sec: Security, groups: list[str]) -> None:
        try:
            out[name] = sec.set_device_groups("p", groups)
        except Exception as exc:
            out[name] = exc

    t2 = threading.Thread(target=run, args=("t2", s2, ["c"]))
    t2.start()
    assert entered.wait(10)
    t1 = threading.Thread(target=run, args=("t1", s1, ["b"]))
    t1.start()
    t1.join(0.5)  # T1 must wait for T2's write transaction, not check a stale 'a'
    go.set()
    t2.join(15)
    t1.join(15)
    assert out["t2"] == ["c"]
    assert out["t1"] == ["b"]  # checked against 'c' (2.5 -> 3: newer), after T2
    # no moment offered 3 then 2.5: it ends on 3
    assert reg.current("p", s1.device_groups("p")).version == "3"


def test_floor_not_committed_when_group_write_fails(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    sec.add_device("pump-1", groups=["a"])
    reg = Registry(tmp_path)
    reg.publish("m", "1.0.0", b"v1", format="pickle")
    reg.rollout("m", "1.0.0", "group:a")
    db = sqlite3.connect(tmp_path / "security.sqlite")
    db.execute("CREATE TRIGGER no_groups BEFORE DELETE ON device_groups "
               "BEGIN SELECT RAISE(ABORT, 'group write failed'); END")
    db.commit()
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="group write failed"):
        sec.set_device_groups("pump-1", [])
    assert sec.device_groups("pump-1") == ["a"]
    assert _floors(tmp_path) == []


def test_floors_of_first_layout_get_their_format(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish("m", "0.9.0", b"v0", format="onnx")
    reg.publish("m", "1.0.0", b"v1", format="onnx")
    reg.close()
    db = sqlite3.connect(tmp_path / "registry" / "registry.sqlite")
    db.executescript(
        "DROP TABLE floors; CREATE TABLE floors (device_id TEXT NOT NULL, name TEXT NOT NULL, "
        "version TEXT NOT NULL, release INTEGER NOT NULL, target TEXT NOT NULL, "
        "PRIMARY KEY (device_id, name)); "
        "INSERT INTO floors VALUES ('p', 'm', '1.0.0', 1, 'group:a');")
    db.close()
    Registry(tmp_path).close()
    assert _floors(tmp_path) == [("p", "m", "1.0.0", 1, "group:a", "onnx")]
    reg = Registry(tmp_path)  # the floor still guards its device
    with pytest.raises(InvalidParameterError, match=r"before it left that target"):
        reg.rollout("m", "0.9.0", "device:p")
