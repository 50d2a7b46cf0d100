"""Labels naming a deleted device: refused as what is true, not with 'device add' advice.

A device deleted with ``edgewise device delete`` (or ``DELETE /v1/devices/{id}``) lost its
readings and labels; adding it back gives a device with no readings, so 'edgewise device
add' was wrong advice for a label file naming it. The refusal says it was deleted (when, by
whom: the audit log), that its labels cannot be imported, and which lines to remove.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import closing
from pathlib import Path

from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here

S = 1_000_000_000


def _fleet(data_dir: Path) -> int:
    """pump-1 and pump-2 registered with a minute of readings each; its first time (ns)."""
    with closing(Security(data_dir)) as sec:
        for device in ("pump-1", "pump-2"):
            sec.add_device(device)
    t0 = (int(time.time()) - 600) * S
    st = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    try:
        st.append([Reading(d, "temp", t0 + i * S, float(i))
                   for i in range(60) for d in ("pump-1", "pump-2")])
    finally:
        st.close()
    return t0


def _import(data_dir: Path, csv: Path) -> tuple[int, str, str]:
    res = edgewise_here("label", "import", str(csv), "--data-dir", str(data_dir), "--json")
    return res.returncode, res.stdout, res.stderr


def _audited(data_dir: Path) -> int:
    with closing(Security(data_dir)) as sec:
        return len(sec.audit_log(1000))


def _history(data_dir: Path) -> list[tuple[str, str, int]]:
    with LabelStore(data_dir) as labels:
        return [(lab.device_id, lab.label, lab.version) for lab in labels.history()]


def test_a_deleted_devices_labels_are_refused_as_deleted_not_to_be_added(
        data_dir: Path, tmp_path: Path) -> None:
    """Check a file naming a device deleted with its data is refused, naming the deletion
    (date, who) and the lines to remove, without 'device add' advice; nothing of the file is
    imported (the other device's relabel neither), the labels there stay as they were, and
    the file without those lines imports."""
    t0 = _fleet(data_dir)
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n"
                   f"pump-2,{t0},{t0 + 10 * S},anomaly\n"
                   f"pump-1,{t0},{t0 + 10 * S},anomaly\n")
    code, out, err = _import(data_dir, csv)
    assert code == 0, err
    res = edgewise_here("device", "delete", "pump-1", "--data-dir", str(data_dir))
    assert res.returncode == 0, res.stderr
    before = _history(data_dir)
    assert before == [("pump-2", "anomaly", 1)]
    audited = _audited(data_dir)
    # a blank line and a note over two lines: the lines named are the file's own
    csv.write_text("device_id,start,end,label,note\n\n"
                   f"pump-2,{t0},{t0 + 10 * S},normal,\n"
                   f"pump-1,{t0},{t0 + 10 * S},normal,\"two\nlines\"\n"
                   f"pump-1,{t0 + 20 * S},{t0 + 30 * S},anomaly,\n")
    code, out, err = _import(data_dir, csv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1, err
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert re.search(rf"line 5: device 'pump-1' was deleted on {day}T[0-9:]+Z by 'cli'", err), err
    assert "readings" in err and "cannot be imported" in err and "nothing was imported" in err
    assert "(lines 5, 6) from the file" in err, err
    assert "edgewise device add" not in err, err
    assert _history(data_dir) == before
    assert _audited(data_dir) == audited  # no label.add written
    csv.write_text("device_id,start,end,label\n"
                   f"pump-2,{t0},{t0 + 10 * S},normal\n")
    code, out, err = _import(data_dir, csv)
    assert code == 0, err
    assert json.loads(out)["relabelled"] == 1
    assert _history(data_dir) == [("pump-2", "anomaly", 1), ("pump-2", "normal", 2)]


def test_deleted_and_never_seen_devices_each_get_their_own_advice(data_dir: Path,
                                                                  tmp_path: Path) -> None:
    """Check a file naming a deleted device and a device never seen names both: the deleted
    one's lines to remove, and 'device add' for the other only; a device deleted and then
    added again is a registered device, whose labels import."""
    t0 = _fleet(data_dir)
    res = edgewise_here("device", "delete", "pump-1", "--data-dir", str(data_dir))
    assert res.returncode == 0, res.stderr
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n"
                   f"ghost-7,{t0},{t0 + 10 * S},normal\n"
                   f"pump-2,{t0},{t0 + 10 * S},normal\n"
                   f"pump-1,{t0},{t0 + 10 * S},normal\n")
    code, _, err = _import(data_dir, csv)
    assert code == 2 and err.count("\n") == 1, err
    assert "line 4: device 'pump-1' was deleted on " in err, err
    assert "(line 4) from the file" in err
    assert ("Device 'ghost-7' (line 2) is not registered and has no stored data; register "
            "it first with: edgewise device add ghost-7.") in err, err
    assert "device add pump-1" not in err
    assert _history(data_dir) == []
    csv.write_text("device_id,start,end,label\n"
                   f"pump-1,{t0},{t0 + 10 * S},normal\n")
    with closing(Security(data_dir)) as sec:
        sec.add_device("pump-1")
    code, _, err = _import(data_dir, csv)
    assert code == 0, err
    assert _history(data_dir) == [("pump-1", "normal", 1)]


def test_an_unknown_devices_line_is_the_files_line(data_dir: Path, tmp_path: Path) -> None:
    """Check the refusal of a device never seen names the line its row is on, past a blank
    line (it named the row's index plus 2: line 3 for the row on line 4)."""
    Security(data_dir).close()  # a data dir, with no device
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n\n\n"
                   "ghost-7,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,normal\n")
    code, _, err = _import(data_dir, csv)
    assert code == 2
    assert "Label CSV line 4: device 'ghost-7' is not registered and has no stored data" in err
    assert "edgewise device add ghost-7" in err


def test_post_label_on_a_deleted_device_says_it_was_deleted(data_dir: Path) -> None:
    """Check POST /v1/labels on a device deleted over HTTP answers 404 'deleted_device',
    saying when and that its readings went with it; a device never seen stays
    'unknown_device'."""
    from tests.server.conftest import build_env, problem

    gen = build_env(data_dir)
    env = next(gen)
    try:
        now = int(time.time())
        batch = [{"ts": now - 60 + i, "seq": i + 1, "metrics": {"temp": 1.0}} for i in range(10)]
        assert env.send(batch).json()["accepted"] == 10
        body = {"device_id": "pump-1", "start": now - 60, "end": now - 50, "label": "anomaly"}
        c = env.client
        assert c.post("/v1/labels", json=body, headers=env.auth("operator")).status_code == 201
        r = c.delete("/v1/devices/pump-1", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        deleted = problem(c.post("/v1/labels", json=body, headers=env.auth("operator")), 404)
        assert deleted["reason"] == "deleted_device", deleted
        assert deleted["field"] == "device_id" and deleted["value"] == "pump-1"
        assert deleted["deleted"].startswith(time.strftime("%Y-%m-%d", time.gmtime()))
        assert f"was deleted at {deleted['deleted']} by " in deleted["detail"], deleted
        assert "readings" in deleted["detail"] and "label nothing" in deleted["detail"]
        ghost = problem(c.post("/v1/labels", json={**body, "device_id": "ghost-7"},
                               headers=env.auth("operator")), 404)
        assert ghost["reason"] == "unknown_device"
        assert c.get("/v1/labels", headers=env.auth("viewer")).json() == []
    finally:
        gen.close()
