"""Leftovers of session 47: what the report and the export know, said where a user reads it.

* ``edgewise quality``'s table did not show the report's ``unchanged`` (a metric whose valid
  readings were all one value): a setpoint held at 45.0 read as 40 stuck readings, nothing
  more. The metric's row and the device's line now say it never changed; so does the
  dashboard's quality table (its stuck cell).
* ``edgewise export --format onnx --dtype int8`` printed no ``int8: RMSE`` line (only the C
  exports did), and said nothing where the calibration rows were one row or never changed.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.in_process import edgewise_here
from tests.server.conftest import _browser, build_env, chromium, serve_in_thread  # noqa: F401


def _constant_csv(path: Path) -> Path:
    """40 readings a second apart: a setpoint held at 45.0, a live temperature, and a
    sensor with 5 readings of 1.0 (too few to call stuck) then empty cells."""
    ts = 1_700_000_000 + np.arange(40)
    pd.DataFrame({"ts": ts, "setpoint": 45.0, "temp": 20 + np.sin(np.arange(40)),
                  "short": [1.0] * 5 + [np.nan] * 35}).to_csv(path, index=False)
    return path


def test_quality_table_says_which_metrics_never_changed(tmp_path: Path) -> None:
    """Check the table's row of a metric of one value says it never changed (stuck in whole
    from 20 readings: a frozen sensor or a setpoint; else too few to call stuck), a live
    metric's row does not, and the device's line counts them; --json has the flag."""
    f = _constant_csv(tmp_path / "r.csv")
    r = edgewise_here("quality", str(f))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith(", 2 metrics never changed"), lines[0]
    rows = {ln.split()[0]: ln for ln in lines[2:] if ln.startswith("  ")}
    assert rows["setpoint"].split()[8] == "40"  # the stuck column: every reading
    assert rows["setpoint"].endswith("never changed: one value throughout (a frozen sensor, "
                                     "or a setpoint that held)"), rows["setpoint"]
    assert rows["short"].endswith("never changed: one value throughout (too few readings to "
                                  "call it stuck)"), rows["short"]
    assert "never changed" not in rows["temp"]
    js = json.loads(edgewise_here("quality", str(f), "--json").stdout)["devices"]["device"]
    assert [m for m, v in js["metrics"].items() if v["unchanged"]] == ["setpoint", "short"]
    assert js["summary"]["unchanged"] == 2


def test_quality_table_of_live_metrics_has_no_never_changed_note(tmp_path: Path) -> None:
    """Check the note is the report's flag, not every row's: nothing where all vary."""
    ts = 1_700_000_000 + np.arange(40)
    pd.DataFrame({"ts": ts, "temp": 20 + np.sin(np.arange(40))}).to_csv(tmp_path / "r.csv",
                                                                       index=False)
    r = edgewise_here("quality", str(tmp_path / "r.csv"))
    assert r.returncode == 0 and "never changed" not in r.stdout, r.stdout


def _torch_model(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps(net))
    return path


def test_export_onnx_int8_prints_the_calibration_rmse(tmp_path: Path) -> None:
    """Check an ONNX int8 export prints the int8 RMSE line the C exports print, with the
    rows it was calibrated on (one holding a NaN left out, said) and no other warning."""
    model = _torch_model(tmp_path)
    X = np.random.default_rng(0).normal(size=(64, 3))
    X[5, 2] = np.nan
    np.savetxt(tmp_path / "cal.csv", X, delimiter=",")
    r = edgewise_here("export", str(model), "--format", "onnx", "--dtype", "int8",
                      "--calibration", str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    rmse = [ln for ln in lines if ln.startswith("int8: RMSE")]
    assert len(rmse) == 1 and "on the 63 calibration rows (its output std" in rmse[0], lines
    assert [ln for ln in lines if ln.startswith("warning:")] == [
        ln for ln in lines if ln.startswith("warning: int8 calibration: 1 of the 64 rows")]


def test_export_onnx_int8_on_one_row_warns_and_prints_the_rmse(tmp_path: Path) -> None:
    """Check a one-row calibration of an ONNX int8 export is a warning line naming the row
    count and the inputs (it gave a near constant graph, silently), beside its RMSE line."""
    model = _torch_model(tmp_path)
    (tmp_path / "cal.csv").write_text("0.1,0.2,0.3\n")
    r = edgewise_here("export", str(model), "--format", "onnx", "--dtype", "int8",
                      "--calibration", str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(ln.startswith("warning: int8 calibration on 1 row: each of its 3 inputs "
                             "(0, 1, 2) holds one value") for ln in lines), lines
    assert any(ln.startswith("int8: RMSE") and "on the 1 calibration rows" in ln
               for ln in lines), lines


@pytest.fixture
def setpoint_device(data_dir: Path) -> Iterator[tuple[object, str]]:
    """pump-1 with a setpoint held at 45.0 and a live temperature, 120 readings each in
    the last 2 minutes, served."""
    gen = build_env(data_dir)
    env = next(gen)
    now = int(time.time())
    batch = [{"ts": now - 120 + i, "seq": i + 1,
              "metrics": {"setpoint": 45.0, "temp_c": 40 + 3 * np.sin(i / 10)}}
             for i in range(120)]
    assert env.send(batch).json()["accepted"] == 240
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()


@pytest.mark.browser
def test_dashboard_quality_table_says_never_changed(chromium, setpoint_device) -> None:  # noqa: F811
    """Check the dashboard's quality row of a metric of one value says it never changed
    beside its stuck count (the API's ``unchanged``), and a live metric's row does not."""
    from tests.server.test_dashboard_ui_browser import _page

    env, base = setpoint_device
    page = _page(chromium, base, env.tokens["viewer"], "/#/device/pump-1")
    page.wait_for_selector("#device-quality tr[data-metric='temp_c']", timeout=15_000)
    held = page.inner_text("#device-quality tr[data-metric='setpoint'] td:nth-child(5)")
    live = page.inner_text("#device-quality tr[data-metric='temp_c'] td:nth-child(5)")
    assert held.strip() == "120 · never changed", held
    assert live.strip() == "0", live
    assert page.query_selector("#device-quality tr[data-metric='setpoint'] "
                               "td[data-unchanged]") is not None
    page.context.close()
