from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.label.feedback import FeedbackDetector, WindowFeedbackModel
from edgewise.label.windows import WindowSet, windows_from_series


def _stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise around 20 with a harmless recurring pulse (a cleaning cycle) and two real faults."""
    rng = np.random.default_rng(seed)
    x = rng.normal(20.0, 0.3, 4000)
    pulse = np.zeros(4000, bool)
    for start in range(300, 4000, 250):
        x[start:start + 3] = 23.0 + rng.normal(0, 0.05, 3)
        pulse[start:start + 3] = True
    fault = np.zeros(4000, bool)
    for start in (1500 + 40, 3500 + 40):
        x[start:start + 5] = 30.0
        fault[start:start + 5] = True
    return x, pulse, fault


def _run(det, x, pulse, fault, person: bool):  # type: ignore[no-untyped-def]
    """Stream x; a person answers the first alarm of each pulse; count alarms by kind."""
    false_alarms = 0
    caught = 0
    answered = 0
    t = 0
    while t < len(x):
        r = {"v": float(x[t])}
        s = det.score_one(r)
        if s >= 0.9:
            if pulse[t]:
                false_alarms += 1
                if person and answered < 1:
                    det.feedback([{"v": float(v)} for v in x[t:t + 3]], "normal")
                    answered += 1
            elif fault[t]:
                caught += 1
                if person:
                    det.feedback([{"v": float(v)} for v in x[t:t + 5]], "anomaly")
        det.learn_one(r)
        t += 1
    return false_alarms, caught


@pytest.mark.parametrize("seed", range(3))
def test_feedback_reduces_repeat_false_alarms(seed: int) -> None:
    x, pulse, fault = _stream(seed)
    fa_plain, caught_plain = _run(FeedbackDetector(EWZScore()), x, pulse, fault, person=False)
    fa_fb, caught_fb = _run(FeedbackDetector(EWZScore()), x, pulse, fault, person=True)
    assert fa_plain >= 10          # each pulse keeps alarming without feedback
    assert fa_fb <= 3              # one answer silences the repeats
    assert caught_fb >= 2 and caught_plain >= 2   # the real faults still alarm


def test_confirmed_anomalies_stay_out_of_learning() -> None:
    rng = np.random.default_rng(0)
    base = EWZScore()
    det = FeedbackDetector(base, protect=False)
    for v in rng.normal(20, 0.3, 300):
        det.learn_one({"v": float(v)})
    mean_before = base.mean_
    det.feedback([{"v": 40.0}], "bearing_wear")
    for _ in range(20):
        det.learn_one({"v": 40.0})
    assert base.mean_ == pytest.approx(mean_before)
    assert det.score_one({"v": 40.0}) > 0.99


def test_confirmed_anomaly_below_threshold_lowers_it() -> None:
    det = FeedbackDetector(EWZScore())
    rng = np.random.default_rng(1)
    for v in rng.normal(0, 1, 300):
        det.learn_one({"v": float(v)})
    weak = {"v": 4.0}
    assert det.score_one(weak) < 0.9
    det.feedback([weak], "anomaly")
    assert det.score_one(weak) >= 0.9


def test_feedback_detector_checks_params() -> None:
    with pytest.raises(InvalidParameterError, match="'detector' parameter"):
        FeedbackDetector("ewz")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        FeedbackDetector(EWZScore(), threshold=1.5)
    with pytest.raises(InvalidParameterError, match="'label'"):
        FeedbackDetector(EWZScore()).feedback([{"v": 1.0}], "")


def test_window_model_false_alarm_raises_device_threshold_only_there() -> None:
    rng = np.random.default_rng(2)
    parts = []
    for dev in ("a", "b"):
        x = rng.normal(0, 1, 3000)
        x[1000:1003] += 8
        x[2000:2003] += 16
        parts.append(windows_from_series(x, np.arange(3000) * 10**9, dev, length=50))
    from edgewise.label.windows import WindowSet

    ws = WindowSet.concat(parts)
    y = np.full(len(ws), -1)
    y[20] = 0  # device a's smaller bump is a false alarm
    before = WindowFeedbackModel().fit(ws, np.full(len(ws), -1)).predict(ws)
    after = WindowFeedbackModel().fit(ws, y).predict(ws)
    assert before[20] and before[40] and before[60 + 20] and before[60 + 40]
    assert not after[20] and after[40]          # device a: raised above the false alarm
    assert after[60 + 20] and after[60 + 40]    # device b untouched
    with pytest.raises(NotFittedError):
        WindowFeedbackModel().predict(ws)


def _stuck_fleet() -> tuple[WindowSet, np.ndarray]:
    """Three devices; each gets sensor-stuck episodes the streaming detectors barely see."""
    rng = np.random.default_rng(5)
    parts, ys = [], []
    for dev in ("a", "b", "c"):
        x = 20 + np.cumsum(rng.normal(0, 0.05, 3000)) + rng.normal(0, 0.3, 3000)
        y = np.zeros(60, bool)
        for w in rng.choice(np.arange(5, 60), 6, replace=False):
            x[w * 50:(w + 1) * 50] = x[w * 50]     # stuck for a whole window
            y[w] = True
        parts.append(windows_from_series(x, np.arange(3000) * 10**9, dev, length=50))
        ys.append(y)
    return WindowSet.concat(parts), np.concatenate(ys)


def test_window_model_classifier_carries_fault_labels_to_other_devices() -> None:
    ws, truth = _stuck_fleet()
    y = np.full(len(ws), -1)
    a = np.flatnonzero(ws.device == "a")
    y[a] = truth[a]                               # only device a is labelled
    others = ws.device != "a"
    base = WindowFeedbackModel(classifier=False).fit(ws, y).predict(ws)
    model = WindowFeedbackModel().fit(ws, y)
    pred = model.predict(ws)
    assert model.clf_ is not None and model.clf_weight_ > 0.5
    recall_base = (base & truth)[others].sum() / truth[others].sum()
    recall = (pred & truth)[others].sum() / truth[others].sum()
    assert recall_base < 0.5 and recall > 0.9
    assert (pred & ~truth)[others].sum() <= 2


def test_window_model_classifier_is_skipped_when_it_does_not_help() -> None:
    ws, _ = _stuck_fleet()
    rng = np.random.default_rng(0)
    y = np.full(len(ws), -1)
    ask = rng.choice(len(ws), 60, replace=False)
    y[ask] = rng.random(60) < 0.3                 # answers unrelated to the windows
    model = WindowFeedbackModel().fit(ws, y)
    assert model.clf_ is None
    assert (model.predict(ws) == WindowFeedbackModel(classifier=False).fit(ws, y).predict(ws)
            ).all()


def test_window_model_answers_inside_a_fault_do_not_make_every_window_alarm() -> None:
    """The label loop of ``label suggest`` / ``train --with-labels``: a fault raises one
    alarm window, then the detector learns it and the fault's later windows score about 0.
    A person answers "anomaly" for the alarm and for two of those later windows, and
    "normal" for two harmless alarms. Thresholds at 0 and above every window separate these
    answers equally well; at 0 every window of the device alarmed (93 of 100)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 3000)
    for start in range(200, 3000, 400):
        x[start:start + 4] += 9.0                  # harmless pulses
    x[2500:2560] += 20.0                           # the fault: one alarm, then learned
    ws = windows_from_series(x, np.arange(3000) * 10**9, "d", length=30)
    z = ws.scores[:, 0]
    fault = [i for i in range(len(ws)) if ws.start_ns[i] < 2560 * 10**9
             and ws.end_ns[i] > 2500 * 10**9]
    late = [i for i in fault if z[i] < 0.5][:2]
    # loud ones: a threshold just above them is further from the default than 0 is
    pulses = [i for i in range(len(ws)) if z[i] >= 0.995 and i not in fault][:2]
    first = max(fault, key=lambda i: z[i])
    assert len(late) == 2 and len(pulses) == 2 and z[first] >= 0.9  # the scenario holds
    y = np.full(len(ws), -1)
    y[[first, *late]] = 1
    y[pulses] = 0
    m = WindowFeedbackModel(radius=0.0, classifier=False).fit(ws, y)
    flagged = m.predict(ws)
    assert flagged[first]
    assert flagged.sum() <= 10, int(flagged.sum())  # the fault and the loud pulses


def _drift() -> tuple[WindowSet, np.ndarray]:
    """A pump whose temperature drifts up slowly (readings 3000-3600): the streaming
    detector adapts, so the drift's windows score 0 (1 of 12 scores 0.26 z)."""
    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, 5000)
    v[3000:3600] += np.linspace(0, 1.5, 600)
    ts = (1_700_000_000 + 60 * np.arange(5000)) * 10**9
    ws = windows_from_series(v, ts, "pump-1", length=50)
    span = np.flatnonzero((ws.end_ns > ts[3000]) & (ws.start_ns <= ts[3599]))
    return ws, span


def test_window_model_an_anomaly_scored_zero_alarms_its_look_alikes_not_the_device() -> None:
    """Check a device whose only answer is "anomaly" on a window scored 0 (a slow drift)
    keeps its default threshold: the threshold fell to 0 and 100 of 100 windows alarmed.
    The labelled window still alarms, through the pattern memory."""
    ws, span = _drift()
    i = int(span[0])
    assert ws.scores[i, 0] == 0.0 and len(ws) == 100  # the scenario holds
    y = np.full(len(ws), -1)
    y[i] = 1
    m = WindowFeedbackModel().fit(ws, y)
    flagged = m.predict(ws)
    assert flagged[i]
    assert flagged.sum() <= 5, int(flagged.sum())
    assert m.thresholds_["pump-1"] == pytest.approx(m.t0_)


def test_window_model_a_labelled_drift_with_a_normal_answer_does_not_flood() -> None:
    """Check labelling a whole slow drift "anomaly" (11 of its 12 windows score 0) and a
    quiet window "normal" alarms on the drift and a few look-alikes: the threshold 0
    separated these answers best, and every window of the device alarmed."""
    ws, span = _drift()
    y = np.full(len(ws), -1)
    y[span] = 1
    y[30] = 0
    assert ws.scores[30, 0] == 0.0  # the scenario holds
    m = WindowFeedbackModel().fit(ws, y)
    flagged = m.predict(ws)
    assert flagged[span].all() and not flagged[30]
    assert flagged.sum() <= len(span) + 5, int(flagged.sum())
    assert m.thresholds_["pump-1"] >= m.t0_ - 1.5  # max_lower


def test_window_model_confirming_a_loud_alarm_keeps_the_quieter_alarms() -> None:
    """Check an "anomaly" answer on the louder of two alarms, with no "normal" answer,
    leaves the quieter alarm on: the threshold rose to the confirmed window (capped at
    4.3 z) and silenced the other alarm (3.3 z) nobody had called false."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 3000)
    x[1000:1003] += 6
    x[2000:2003] += 12
    ws = windows_from_series(x, np.arange(3000) * 10**9, "d1", length=50)
    before = WindowFeedbackModel().fit(ws, np.full(len(ws), -1)).predict(ws)
    assert np.flatnonzero(before).tolist() == [20, 40]  # the scenario holds
    y = np.full(len(ws), -1)
    y[40] = 1
    m = WindowFeedbackModel(radius=0.0).fit(ws, y)
    assert np.flatnonzero(m.predict(ws)).tolist() == [20, 40]
    assert m.thresholds_["d1"] == pytest.approx(m.t0_)


def test_window_model_checks_max_lower() -> None:
    ws, _ = _drift()
    with pytest.raises(InvalidParameterError, match="'max_lower' parameter"):
        WindowFeedbackModel(max_lower=-1.0).fit(ws, np.full(len(ws), -1))


def test_confirming_an_anomaly_scored_zero_keeps_ordinary_readings_quiet_and_learned() -> None:
    """Check confirming an anomaly on a reading the detector scored 0 (a slow fault it
    adapted to) leaves the threshold: it fell to 0 z, 200 of 200 ordinary readings alarmed,
    and (protect=True, and all within tolerance of the confirmed reading) none was learned
    again, so the detector froze."""
    rng = np.random.default_rng(0)
    base = EWZScore()
    det = FeedbackDetector(base)
    for v in rng.normal(20, 0.3, 300):
        x = {"v": float(v)}
        det.score_one(x)
        det.learn_one(x)
    quiet = {"v": 20.0}
    assert base.score_one(quiet) == 0.0  # the scenario holds
    det.feedback([quiet], "anomaly")
    normals = [{"v": float(v)} for v in rng.normal(20, 0.3, 200)]
    assert sum(det.score_one(x) >= det.threshold for x in normals) == 0
    assert det.n_confirmed_ == 1 and det.offset_ == 0.0
    mean_before = base.mean_
    for v in rng.normal(20.6, 0.3, 200):  # a small, ordinary shift in level
        det.learn_one({"v": float(v)})
    assert mean_before < 20.0 and base.mean_ > 20.45, (mean_before, base.mean_)


def test_a_confirmed_anomaly_lowers_the_threshold_at_most_max_lower() -> None:
    """Check a confirmed reading within max_lower of the threshold lowers it just enough,
    and one further below leaves it; clone keeps max_lower."""
    rng = np.random.default_rng(1)
    det = FeedbackDetector(EWZScore(), max_lower=0.5)
    for v in rng.normal(0, 1, 300):
        det.learn_one({"v": float(v)})
    det.feedback([{"v": 4.0}], "anomaly")      # 1.39 z: 0.91 below the threshold's 2.30
    assert det.offset_ == 0.0 and det.score_one({"v": 4.0}) < 0.9
    det.feedback([{"v": 4.5}], "anomaly")      # 1.92 z: 0.38 below
    assert -0.5 <= det.offset_ < 0.0 and det.score_one({"v": 4.5}) >= 0.9
    assert det.clone().max_lower == 0.5
    with pytest.raises(InvalidParameterError, match="'max_lower' parameter"):
        FeedbackDetector(EWZScore(), max_lower=-1.0)


def _stuck_fleet_with_spikes() -> tuple[WindowSet, np.ndarray]:
    """Devices a, b, c with sensor-stuck episodes (windows 5-49, which the streaming
    detectors barely see) and two small spikes each (windows 52 and 56) that may alarm."""
    rng = np.random.default_rng(5)
    parts, ys = [], []
    for dev in ("a", "b", "c"):
        x = 20 + np.cumsum(rng.normal(0, 0.05, 3000)) + rng.normal(0, 0.3, 3000)
        y = np.zeros(60, bool)
        for w in rng.choice(np.arange(5, 50), 6, replace=False):
            x[w * 50:(w + 1) * 50] = x[w * 50]     # stuck for a whole window
            y[w] = True
        for w in (52, 56):
            x[w * 50 + 20:w * 50 + 23] += 2.5
        parts.append(windows_from_series(x, np.arange(3000) * 10**9, dev, length=50))
        ys.append(y)
    return WindowSet.concat(parts), np.concatenate(ys)


def test_window_model_classifier_silences_alarms_only_on_answered_devices() -> None:
    """Check the fleet-wide classifier raises alarms on every device but silences one only
    on a device with an answer of its own. Device a's stuck windows are answered; b and c
    have none. A spike alarm on b (2.6 z above its threshold), which the classifier calls
    normal, was silenced (-3.8 z) on the strength of device a's answers alone; it stays an
    alarm until b has one answer (a "normal" on an unrelated quiet window)."""
    ws, truth = _stuck_fleet_with_spikes()
    a, b, c = (np.flatnonzero(ws.device == d) for d in ("a", "b", "c"))
    y = np.full(len(ws), -1)
    y[a[:50]] = truth[a[:50]]                      # a's stuck windows and quiet ones
    m = WindowFeedbackModel().fit(ws, y)
    assert m.clf_ is not None and sorted(m.thresholds_) == ["a"]
    base = WindowFeedbackModel(classifier=False).fit(ws, y).decision_function(ws)
    p = m.clf_.predict_proba((ws.features - m.mean_) / m.scale_)[:, 1]
    unruled = m._combine(base, p, m.clf_weight_)   # the classifier's log-odds everywhere
    # the scenario holds: the classifier would silence the spike alarms on a and b
    assert base[a[56]] > 1.0 and base[b[52]] > 2.0
    assert unruled[a[56]] < -3.0 and unruled[b[52]] < -3.0
    margin = m.decision_function(ws)
    assert margin[a[56]] < -3.0                    # answered device: silenced
    assert margin[b[52]] == pytest.approx(base[b[52]])  # no answer on b: kept
    # raising works everywhere: b's and c's stuck windows, quiet to the detector, alarm
    others = np.r_[b, c]
    assert (base[others][truth[others]] < 0).all()
    assert (margin[others][truth[others]] >= 0).mean() >= 0.75
    y[b[2]] = 0                                    # one answer on b, far from the spike
    m1 = WindowFeedbackModel().fit(ws, y)
    assert m1.clf_ is not None and m1.thresholds_["b"] == pytest.approx(m1.t0_)
    assert m1.decision_function(ws)[b[52]] < -3.0  # now the classifier may silence it


def test_numpy_bools_are_taken_as_bools() -> None:
    """``protect`` (FeedbackDetector) and ``classifier`` (WindowFeedbackModel.fit) given as
    numpy bools (an element of a mask, a parameter grid) were refused as "must be an
    instance of bool"; they are bools, and ``protect`` is kept as Python's."""
    det = FeedbackDetector(EWZScore(), protect=np.bool_(False))
    assert det.protect is False and det.clone().protect is False
    x = np.random.default_rng(0).normal(0, 1, 400)
    ws = windows_from_series(x, np.arange(400) * 10**9, "d", length=20)
    y = np.full(len(ws), -1)
    y[:4] = [1, 0, 1, 0]
    m = WindowFeedbackModel(classifier=np.bool_(False)).fit(ws, y)
    assert m.clf_ is None and m.n_labels_ == 4
    with pytest.raises(InvalidParameterError, match=r"'protect'.*bool.*Got 1"):
        FeedbackDetector(EWZScore(), protect=1)  # type: ignore[arg-type]


def test_a_false_alarm_scored_one_leaves_the_stream_able_to_alarm() -> None:
    """A sensor glitch (0.0 on a stream near 20) scores 1.0; called normal, it raised the
    threshold above the highest score any reading can get: 40, 1000 or -1000 scored 0.87
    and nothing alarmed again. Readings scored 1.0 still alarm; the glitch's repeats are
    silenced by the pattern memory."""
    det = FeedbackDetector(EWZScore())
    rng = np.random.default_rng(0)
    for _ in range(500):
        x = {"v": 20.0 + rng.normal(0, 0.3)}
        det.score_one(x)
        det.learn_one(x)
    assert det.score_one({"v": 0.0}) >= 0.9
    det.feedback([{"v": 0.0}], "normal")
    for _ in range(200):
        x = {"v": 20.0 + rng.normal(0, 0.3)}
        det.score_one(x)
        det.learn_one(x)
    assert det.score_one({"v": 0.0}) < 0.9  # the false alarm's pattern
    assert det.score_one({"v": 20.0}) < 0.9
    for v in (100.0, 1000.0, -1000.0):
        assert det.score_one({"v": v}) >= 0.9, v
