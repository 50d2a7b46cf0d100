"""The label model's pattern memory carries a label to near-duplicates of its window only,
and ``predict labels`` reads only the asked device's label model."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.label.feedback import WindowFeedbackModel
from edgewise.label.store import LabelStore
from edgewise.label.windows import WindowSet, window_labels, windows_from_series
from edgewise.label.workflow import load_history_csv, predict_with_labels, train_with_labels

T0 = 1_700_000_000 * 10**9
MIN = 60 * 10**9


def _outage() -> WindowSet:
    """100 windows of noise, one of them an outage 400 sd high."""
    x = np.random.default_rng(0).normal(0, 1, 5000)
    x[3000:3050] += 400.0
    return windows_from_series(x, np.arange(5000) * 10**9, "d", length=50)


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = int((pred & truth).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + int((pred ^ truth).sum()))


def test_one_outlier_window_does_not_let_a_label_take_the_quiet_windows() -> None:
    """Check an "anomaly" on one quiet window alarms it and at most max_share (5%) of the
    device's other windows: features scaled by their standard deviation, one outage window
    squashed the others together and the label took 19 of them (20 alarms, 1 before)."""
    ws = _outage()
    y = np.full(len(ws), -1)
    y[20] = 1
    before = WindowFeedbackModel(classifier=False).fit(ws, np.full(len(ws), -1)).predict(ws)
    flagged = WindowFeedbackModel(classifier=False).fit(ws, y).predict(ws)
    assert before.sum() == 1 and not before[20]  # the scenario holds: the outage alone
    assert flagged[20]
    assert flagged.sum() <= before.sum() + 1 + 5, int(flagged.sum())


def test_a_pattern_many_windows_share_exactly_takes_none_of_them() -> None:
    """Check an "anomaly" on one window of a flat stretch (55 windows with the very same
    features) does not alarm the stretch: the label took all 60 windows of the device."""
    v = np.full(3000, 5.0)
    v[1000:1003] += 3
    v[2000:2003] += 4
    ws = windows_from_series(v, np.arange(3000) * 10**9, "d", length=50)
    y = np.full(len(ws), -1)
    y[10] = 1
    before = WindowFeedbackModel().fit(ws, np.full(len(ws), -1)).predict(ws)
    flagged = WindowFeedbackModel().fit(ws, y).predict(ws)
    assert (np.abs(ws.features - ws.features[10]).max(axis=1) == 0).sum() > 50  # it holds
    assert flagged.sum() <= before.sum() + 1, (int(before.sum()), int(flagged.sum()))


def test_a_label_still_reaches_a_repeat_of_its_window() -> None:
    """Check a labelled pattern that recurs (the same readings again later) alarms there
    too, and the label takes no more than that."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 5000)
    x[1000:1050] = np.sin(np.arange(50) / 3) * 2.5   # a wobble the detector barely sees
    x[3499:3551] = x[999:1051]                       # the same wobble again, its edges too
    ws = windows_from_series(x, np.arange(5000) * 10**9, "d", length=50)
    y = np.full(len(ws), -1)
    y[20] = 1
    before = WindowFeedbackModel(classifier=False).fit(ws, np.full(len(ws), -1)).predict(ws)
    flagged = WindowFeedbackModel(classifier=False).fit(ws, y).predict(ws)
    assert not before[70]  # the scenario holds
    assert flagged[20] and flagged[70]
    assert flagged.sum() <= before.sum() + 1 + 5, int(flagged.sum())


def test_nab_anomaly_windows_as_labels_alarm_near_them_not_on_the_device(
        shared_data: Path, tmp_path: Path) -> None:
    """Check NAB's own anomaly windows of ec2_cpu_utilization_24ae8d, imported as labels,
    make 'train --with-labels' alarm on them and a few more, and score better against them
    than the label-free model: 100 of 101 windows alarmed (16 without labels), F1 0.23 ->
    0.18."""
    nab = shared_data / "nab"
    rel = "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"
    spans = json.loads((nab / "labels" / "combined_windows.json").read_text())[rel]
    hist = load_history_csv(nab / "data" / rel)
    with LabelStore(tmp_path) as store:
        for a, b in spans:
            store.add("dev", int(pd.Timestamp(a).value), int(pd.Timestamp(b).value) + 1,
                      "anomaly")
        out = train_with_labels(hist, "dev", store, tmp_path)
        wins = predict_with_labels(hist, out["path"])
        ws = WindowSet(np.array(["dev"] * len(wins), dtype=object),
                       np.array([w["start_ns"] for w in wins]),
                       np.array([w["end_ns"] for w in wins]),
                       np.zeros((len(wins), 1)), np.zeros((len(wins), 1)), ["none"])
        truth = window_labels(ws, store.labels("dev"))[0] == 1
    alarm = np.array([w["alarm"] for w in wins])
    assert len(wins) == 101 and truth.sum() == 10 and out["alarms_before"] == 16  # it holds
    assert alarm[truth].all()
    assert out["alarms_after"] == alarm.sum() <= 30, int(alarm.sum())
    # the label-free model's alarms are the windows of score >= the default threshold
    before = np.array([w["score"] >= 0.9 for w in wins])
    assert before.sum() == 16
    assert _f1(alarm, truth) > _f1(before, truth) + 0.2, (_f1(alarm, truth), _f1(before, truth))


def test_a_label_model_saved_before_scores_with_the_bounded_memory() -> None:
    """Check a model fitted before the memory's reach was relative (its labelled windows'
    features kept scaled by mean and standard deviation, no reach) still scores, with a
    memory as bounded as a model fitted now."""
    ws = _outage()
    y = np.full(len(ws), -1)
    y[20] = 1
    m = WindowFeedbackModel(classifier=False).fit(ws, y)
    now = m.predict(ws)
    for name in ("memory_center_", "memory_scale_", "memory_radius_", "max_share"):
        delattr(m, name)
    m.radius = 1.0  # the default then
    m.memory_X_ = (ws.features[[20]] - m.mean_) / m.scale_
    old = pickle.loads(pickle.dumps(m))
    flagged = old.predict(ws)
    assert now[20] and flagged[20]
    assert flagged.sum() <= 1 + 1 + 5, (int(now.sum()), int(flagged.sum()))  # before: 1


def test_model_params_are_checked() -> None:
    ws = _outage()
    with pytest.raises(InvalidParameterError, match="'max_share' parameter"):
        WindowFeedbackModel(max_share=0.0).fit(ws, np.full(len(ws), -1))


# -- predict labels: the asked device's model only ------------------------------------
def _history(n: int = 2000) -> tuple[np.ndarray, np.ndarray, list[str]]:
    v = np.random.default_rng(0).normal(20, 0.3, n)
    v[1500:1504] += 5
    return T0 + MIN * np.arange(n, dtype=np.int64), v[:, None], ["temp_c"]


def test_predict_labels_refuses_another_devices_label_model(tmp_path: Path) -> None:
    """Check `predict labels --device pump-03` refuses, in one line naming both devices,
    a label model file of pump-01's found under pump-03's name (it scored pump-03's history
    with pump-01's thresholds and memory, the windows cut as pump-01's), and
    predict_with_labels refuses it given the device."""
    d = tmp_path / "d"
    with LabelStore(d) as store:
        store.add("pump-01", T0 + 1500 * MIN, T0 + 1520 * MIN, "anomaly")
        out = train_with_labels(_history(), "pump-01", store, d, window=50)
    theirs = Path(out["path"]).with_name("label-pump-03-v1.pkl")
    shutil.copy(out["path"], theirs)
    ts, X, _ = _history()
    csv = tmp_path / "h.csv"
    csv.write_text("timestamp,temp_c\n" + "".join(
        f"{t // 10**9},{x:.4f}\n" for t, x in zip(ts, X[:, 0], strict=True)))
    load_commands()
    res = CliRunner(mix_stderr=False).invoke(app, [
        "predict", "labels", "--device", "pump-03", "--csv", str(csv), "--data-dir", str(d)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, (res.stdout, res.stderr)
    assert f"{str(theirs)!r} is 'pump-01''s label model, not 'pump-03''s." in res.stderr
    with pytest.raises(InvalidParameterError, match="is 'pump-01''s label model, not "
                                                    "'pump-03''s") as err:
        predict_with_labels(_history(), theirs, device_id="pump-03")
    assert err.value.field == "device_id"
    assert len(predict_with_labels(_history(), out["path"], device_id="pump-01")) == 40
