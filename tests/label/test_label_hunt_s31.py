"""Labelling fixes of hunt s31: alert verdict words taken as fault classes, a suggested
last window ending in the future, `bench active` hiding strategies, a --window silently
cut, a person's newer answer overridden by an older anomaly, and smaller ones (label
models nobody read, silent empty suggestions, messages and counts of `label import`, the
query mix's state file)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore, labels_csv, read_labels_csv
from edgewise.label.windows import WindowSet, window_labels, windows_from_series
from edgewise.label.workflow import load_model, predict_with_labels, suggest, train_with_labels
from edgewise.security import Security
from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

T0 = 1_700_000_000 * 10**9
MIN = 60 * 10**9


def _run(*args: str):  # type: ignore[no-untyped-def]
    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, list(args))


def _history(n: int = 2000, flat: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    v = np.full(n, 20.0) if flat else rng.normal(20, 0.3, n)
    if not flat:
        v[n * 3 // 4:n * 3 // 4 + 4] += 5
    return T0 + MIN * np.arange(n, dtype=np.int64), v[:, None], ["temp_c"]


def _history_csv(path: Path, n: int = 2000) -> Path:
    ts, X, _ = _history(n)
    path.write_text("timestamp,temp_c\n" + "".join(
        f"{t // 10**9},{x:.4f}\n" for t, x in zip(ts, X[:, 0], strict=True)))
    return path


# -- 1. an alert's verdict is no window label -------------------------------------------
@pytest.mark.parametrize("word", ["false_alarm", "true_alarm"])
def test_verdict_words_are_refused_as_labels_naming_what_to_use(tmp_path: Path,
                                                                word: str) -> None:
    """Check 'false_alarm' / 'true_alarm' are refused as a label value (a false_alarm label
    was taken as a fault class: it taught the model the window was anomalous), in the
    store and in a label CSV, naming the words to use."""
    with LabelStore(tmp_path) as store, pytest.raises(InvalidParameterError) as err:
        store.add("pump-1", T0, T0 + MIN, word)
    assert err.value.field == "label"
    assert "use 'normal' for a false alarm, 'anomaly' for a true one" in str(err.value)
    csv = tmp_path / "l.csv"
    csv.write_text(f"device_id,start,end,label\npump-1,{T0},{T0 + MIN},{word}\n")
    with pytest.raises(InvalidParameterError, match=r"Label CSV line 2: .*'normal' for a false"):
        read_labels_csv(csv)


def test_post_label_refuses_a_verdict_word_and_the_alert_verdict_still_labels(
        henv: Env) -> None:
    """Check POST /v1/labels answers 422 naming field 'label' for 'false_alarm', while the
    verdict on an alert (false_alarm) still writes its window label 'normal'."""
    t = (int(time.time()) - 600) * 10**9
    r = henv.client.post("/v1/labels", headers=henv.auth("operator"), json={
        "device_id": henv.device, "start_ns": t, "end_ns": t + MIN, "label": "false_alarm"})
    p = problem(r, 422)
    assert p["field"] == "label" and "'normal' for a false alarm" in p["detail"]
    alert = henv.store.add_alert(Alert(henv.device, t, t + MIN, 0.99))
    r = henv.client.post(f"/v1/alerts/{alert.id}/label", headers=henv.auth("operator"),
                         json={"label": "false_alarm"})
    assert r.status_code == 200, r.text
    assert r.json()["window_label"]["label"] == "normal"


# -- 2. the last window ends just after the last reading -------------------------------
def test_every_suggested_window_can_be_imported_the_last_too(tmp_path: Path) -> None:
    """Check the last window of a history read each hour up to now ends no later than the
    clock skew allows (it ended an hour after the last reading, and importing exactly that
    window was refused), and every window holds the same readings as before."""
    now = time.time_ns()
    n = 400
    ts = now - 60 * 10**9 - 3600 * 10**9 * np.arange(n, dtype=np.int64)[::-1]
    v = np.random.default_rng(1).normal(20, 0.3, n)
    with LabelStore(tmp_path) as store:
        items = suggest((ts, v[:, None], ["temp_c"]), "pump-1", store, k=100,
                        strategy="top", window=20)
    assert len(items) == 20
    csv = tmp_path / "answers.csv"
    csv.write_text(labels_csv([("pump-1", it["start_ns"], it["end_ns"], "normal", "")
                               for it in items]))
    assert len(read_labels_csv(csv, max_future_s=300)) == 20
    last = max(items, key=lambda it: it["start_ns"])
    assert last["end_ns"] == ts[-1] + 1  # it holds the last reading, and no later time
    ws = windows_from_series(v, ts, "pump-1", length=20)
    for i, (a, b) in enumerate(zip(ws.start_ns, ws.end_ns, strict=True)):
        held = np.flatnonzero((ts >= a) & (ts < b))
        assert held.tolist() == list(range(20 * i, 20 * i + 20))


# -- 3. bench active shows every strategy's F1 -----------------------------------------
def test_bench_active_prints_the_f1_of_every_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `bench active --strategies mix,top,random` prints a line for each strategy
    (it printed active_f1 and random_f1 only: top was run and never shown). The real
    benchmark runs, with two budgets to stay short."""
    import edgewise.bench.active as active

    real = active.run_benchmark
    monkeypatch.setattr(active, "run_benchmark",
                        lambda items, **kw: real(items, **kw, budgets=(0, 10)))
    res = _run("bench", "active", "--datasets", "pumps", "--seeds", "1",
               "--strategies", "mix,top,random")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    shown = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")]
    assert shown[:3] == ["active_f1", "top_f1", "random_f1"], res.stdout


# -- 4. a --window over half the history is refused ------------------------------------
@pytest.mark.parametrize("command", [["label", "suggest"], ["train", "--with-labels"]])
def test_a_window_over_half_the_history_is_refused_in_one_line(tmp_path: Path,
                                                               command: list[str]) -> None:
    """Check --window 1001 on 2000 readings is refused naming the value and the largest
    allowed (1000), as `train transfer` refuses it; it was cut to 1000 silently."""
    csv = _history_csv(tmp_path / "h.csv")
    (tmp_path / "d").mkdir()
    res = _run(*command, "--device", "pump-1", "--csv", str(csv), "--data-dir",
               str(tmp_path / "d"), "--window", "1001")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and "window=1001" in res.stderr
    assert "give at most 1000" in res.stderr
    with LabelStore(tmp_path / "d") as store:
        assert len(suggest(_history(), "pump-1", store, k=3, window=1000)) == 2


# -- 5. a person's newer answer on a window wins, as the windows are re-cut -------------
def _cut(n: int) -> WindowSet:
    """The windows `label suggest` cuts from the first ``n`` readings (n // 100 long)."""
    ts, X, _ = _history(2100)
    return windows_from_series(X[:n], ts[:n], "pump-1", length=n // 100)


def _readings(ws: WindowSet, idx: list[int]) -> list[tuple[int, int]]:
    """Windows ``idx`` of ``ws`` as reading numbers ``(first, end)``."""
    return [((int(ws.start_ns[i]) - T0) // MIN, (int(ws.end_ns[i]) - T0) // MIN)
            for i in idx]


def test_a_newer_normal_on_a_window_inside_an_older_anomaly_is_its_answer(
        tmp_path: Path) -> None:
    """Check a person's `normal` on one window inside an older `anomaly` (the verdict on a
    long alert) labels that window normal, and still labels the re-cut window holding most
    of it once the history grows (at 2,100 readings windows are 21 long: the answer on
    readings 600-620 lies over (588, 609) and (609, 630); the rule "the newest label
    covering the whole window" lost it there); where no label covers half a window an
    anomalous one still wins."""
    ws = _cut(2000)
    assert _readings(ws, [30]) == [(600, 620)]
    a, b = int(ws.start_ns[30]), int(ws.end_ns[30])
    with LabelStore(tmp_path) as store:
        store.add("pump-1", T0 + 500 * MIN, T0 + 900 * MIN, "anomaly", source="alert:a1")
        store.add("pump-1", a, b, "normal", who="ana")
        y, kind = window_labels(ws, store.labels("pump-1"))
        assert y[27:34].tolist() == [1, 1, 1, 0, 1, 1, 1] and kind[30] == "normal"
        # the history grows and the windows are cut afresh, with other edges
        grown = _cut(2100)
        assert _readings(grown, [28, 29]) == [(588, 609), (609, 630)]
        y, kind = window_labels(grown, store.labels("pump-1"))
        assert y[27:31].tolist() == [1, 1, 0, 1] and kind[29] == "normal"
        # the answered window is not offered again
        asked = suggest(_history(2000), "pump-1", store, k=40, strategy="top")
        assert a not in {it["start_ns"] for it in asked}
        # a newer short fault inside a window called normal: the fault wins
        store.add("pump-1", a + MIN, a + 2 * MIN, "cavitation", who="ben")
        y, kind = window_labels(ws, store.labels("pump-1"))
        assert y[30] == 1 and kind[30] == "cavitation"
    s3 = int(ws.start_ns[3])  # window 3: readings 60-80
    with LabelStore(tmp_path / "half") as store:  # a newer label over 12 of its 20 minutes
        store.add("pump-1", s3 - 10 * MIN, s3 + 12 * MIN, "anomaly")
        store.add("pump-1", s3 + 8 * MIN, s3 + 30 * MIN, "normal")
        assert window_labels(ws, store.labels("pump-1"))[0][3] == 0
    with LabelStore(tmp_path / "other") as store:  # none covers half of window 3
        store.add("pump-1", s3 + 2 * MIN, s3 + 8 * MIN, "anomaly")
        store.add("pump-1", s3 + 10 * MIN, s3 + 18 * MIN, "normal")
        assert window_labels(ws, store.labels("pump-1"))[0][3] == 1


def test_newer_is_the_later_written_label_whatever_its_clock(tmp_path: Path) -> None:
    """Check the label written later is the newer one even when the wall clock was
    stepped back an hour between the two writes (the order went by ``created_ns``, so the
    earlier `anomaly` over three windows beat the person's later `normal` on one)."""
    ws = _cut(2000)
    a, b = int(ws.start_ns[30]), int(ws.end_ns[30])
    now = time.time_ns()
    with LabelStore(tmp_path) as store:
        store.add("pump-1", int(ws.start_ns[29]), int(ws.end_ns[31]), "anomaly",
                  created_ns=now)
        store.add("pump-1", a, b, "normal", who="ana", created_ns=now - 3600 * 10**9)
        y, kind = window_labels(ws, store.labels("pump-1"))
        assert y[29:32].tolist() == [1, 0, 1] and kind[30] == "normal"


# -- 6a. predict labels reads the model train --with-labels saved ----------------------
def test_predict_labels_scores_windows_with_the_newest_label_model(tmp_path: Path) -> None:
    """Check `predict labels` scores each window with the device's newest label model
    (nothing read the file `train --with-labels` saves), and refuses a device with none in
    one line naming the command to run."""
    csv = _history_csv(tmp_path / "h.csv")
    d = tmp_path / "d"
    d.mkdir()
    res = _run("predict", "labels", "--device", "pump-1", "--csv", str(csv),
               "--data-dir", str(d))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, (res.stdout, res.stderr)
    assert "no label model" in res.stderr
    assert "edgewise train --with-labels --device pump-1" in res.stderr
    with LabelStore(d) as store:
        fault = windows_from_series(_history()[1], _history()[0], "pump-1", length=50)
        store.add("pump-1", int(fault.start_ns[30]), int(fault.end_ns[30]), "cavitation")
        store.add("pump-1", int(fault.start_ns[5]), int(fault.end_ns[5]), "normal")
        out = train_with_labels(_history(), "pump-1", store, d, window=50)
    res = _run("predict", "labels", "--device", "pump-1", "--csv", str(csv),
               "--data-dir", str(d), "--json")
    assert res.exit_code == 0, (res.stdout, res.stderr)
    got = json.loads(res.stdout)
    assert got["model"] == out["path"] and got["version"] == 1
    assert got["label_snapshot_id"] == load_model(out["path"])["label_snapshot_id"]
    wins = got["windows"]
    assert len(wins) == 40 and wins[30]["alarm"] and wins[30]["fault"] == "cavitation"
    assert not wins[5]["alarm"] and wins[5]["fault"] is None
    assert wins[-1]["end_ns"] == _history()[0][-1] + 1
    res = _run("predict", "labels", "--device", "pump-1", "--csv", str(csv),
               "--data-dir", str(d), "--last", "10")
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and len(lines) == 10, (res.stdout, res.stderr)
    assert "alarm yes" in lines[0] and "fault cavitation" in lines[0]
    assert "alarm no" in lines[1] and "score" in lines[1]


# -- 6b. nothing left to suggest is said -----------------------------------------------
def test_suggest_says_when_every_window_is_labelled(tmp_path: Path) -> None:
    csv = _history_csv(tmp_path / "h.csv", n=100)
    d = tmp_path / "d"
    with LabelStore(d) as store:
        store.add("pump-1", T0, T0 + 100 * MIN, "normal")
    res = _run("label", "suggest", "--device", "pump-1", "--csv", str(csv),
               "--data-dir", str(d), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == [], (res.stdout, res.stderr)
    assert res.stderr.startswith("note: every window of 'pump-1'") and \
        res.stderr.count("\n") == 1, res.stderr


# -- 6c. a fleet device without labels is said to have none ----------------------------
def test_a_fleet_device_with_no_labels_is_said_to_have_none(tmp_path: Path) -> None:
    from edgewise.label.fleet_transfer import train_transfer

    hist = {}
    with LabelStore(tmp_path) as store:
        for i, dev in enumerate(["f1", "f2", "t"]):
            ts, X, m = _history(1200)
            hist[dev] = (ts, X + i, m)
            store.add(dev, int(ts[600]), int(ts[640]), "anomaly")
            store.add(dev, int(ts[0]), int(ts[400]), "normal")
        hist["f9"] = _history(1200)
        out = train_transfer(hist.__getitem__, "t", store, tmp_path, fleet=["f1", "f2", "f9"],
                             window=40)
    assert out["skipped"] == {"f9": "Device 'f9' has no labels."}


# -- 6d, 6f, 6h. label import: counts, --who, snapshot ids -----------------------------
def _registered(d: Path, *devices: str) -> None:
    sec = Security(d)
    for dev in devices:
        sec.add_device(dev)
    sec.close()


def test_a_row_repeated_exactly_is_one_import_not_one_unchanged(tmp_path: Path) -> None:
    d = tmp_path / "d"
    _registered(d, "pump-1")
    csv = tmp_path / "l.csv"
    row = f"pump-1,{T0},{T0 + MIN},anomaly,seal\n"
    csv.write_text("device_id,start,end,label,note\n" + row + row)
    res = _run("label", "import", str(csv), "--data-dir", str(d), "--json")
    out = json.loads(res.stdout)
    assert (out["imported"], out["unchanged"]) == (1, 0), out
    out = json.loads(_run("label", "import", str(csv), "--data-dir", str(d), "--json").stdout)
    assert (out["imported"], out["unchanged"]) == (0, 1), out


@pytest.mark.parametrize("who", ["", "  "])
def test_import_refuses_a_blank_who(tmp_path: Path, who: str) -> None:
    d = tmp_path / "d"
    _registered(d, "pump-1")
    csv = tmp_path / "l.csv"
    csv.write_text(f"device_id,start,end,label\npump-1,{T0},{T0 + MIN},anomaly\n")
    res = _run("label", "import", str(csv), "--data-dir", str(d), "--who", who)
    assert res.exit_code == 2 and res.stderr.startswith("error: --who must name"), res.stderr
    with LabelStore(d) as store:
        assert store.labels() == []
        with pytest.raises(InvalidParameterError, match="'who'"):
            store.add("pump-1", T0, T0 + 1, "anomaly", who=who)


def test_import_prints_the_snapshot_id_each_device_s_model_records(tmp_path: Path) -> None:
    """Check `label import` prints one snapshot id per device imported, the one `train
    --with-labels` records (it printed the all-devices id, which no label model records)."""
    d = tmp_path / "d"
    _registered(d, "pump-1", "pump-2")
    csv = tmp_path / "l.csv"
    csv.write_text("device_id,start,end,label\n"
                   f"pump-1,{T0},{T0 + MIN},anomaly\npump-2,{T0},{T0 + MIN},normal\n")
    res = _run("label", "import", str(csv), "--data-dir", str(d))
    assert res.exit_code == 0, res.stderr
    with LabelStore(d) as store:
        recorded = train_with_labels(_history(), "pump-1", store, d, window=50)["snapshot_id"]
        want = {dev: store.snapshot_id(dev) for dev in ("pump-1", "pump-2")}
    assert recorded == want["pump-1"]
    assert res.stdout.strip().endswith(f"; pump-1 labels {want['pump-1']}; pump-2 labels "
                                       f"{want['pump-2']}"), res.stdout


# -- 6e. diversity on a flat history says nothing of sklearn ---------------------------
def test_diversity_on_a_flat_history_warns_nothing(tmp_path: Path) -> None:
    with LabelStore(tmp_path) as store, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(suggest(_history(600, flat=True), "p", store, k=3,
                           strategy="diversity")) == 3


# -- 6g. a broken label-mix.json is named, with what to do -----------------------------
_NO_HITS = json.dumps({"pump-1": {
    "strategies": ["Uncertainty", "TopScore", "Disagreement", "Novelty"],
    "asks": [0, 0, 0, 0], "pending": []}})
# edited: more hits than asks passed, and the Thompson draw printed "error: b <= 0"
_HITS_OVER_ASKS = json.dumps({"pump-1": {
    "strategies": ["Uncertainty", "TopScore", "Disagreement", "Novelty"],
    "hits": [3, 0, 0, 0], "asks": [1, 1, 1, 1], "pending": []}})


@pytest.mark.parametrize("text", ["{not json", _NO_HITS, "[1, 2]", _HITS_OVER_ASKS])
def test_a_broken_mix_state_file_is_named_in_one_line(tmp_path: Path, text: str) -> None:
    csv = _history_csv(tmp_path / "h.csv", n=300)
    d = tmp_path / "d"
    d.mkdir()
    (d / "label-mix.json").write_text(text)
    res = _run("label", "suggest", "--device", "pump-1", "--csv", str(csv),
               "--data-dir", str(d))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, (res.stdout, res.stderr,
                                                                res.exception)
    assert str(d / "label-mix.json") in res.stderr
    assert "Delete it to start the mix afresh" in res.stderr


# -- a fault class named "nan" -------------------------------------------------------------
@pytest.mark.parametrize("others", [[], [(10, "cavitation")]])
def test_a_fault_class_named_nan_is_learned_as_any_other(tmp_path: Path,
                                                         others: list) -> None:
    """Check a fault class "nan" (a name the label store accepts) trains and predicts: the
    classifier takes the text "nan" for no label (how numpy writes NaN among text), so
    with "nan" alone training failed ("needs at least one labelled row"), and beside
    another class its windows were left unlabelled and "nan" was no class."""
    hist = _history()
    ws = windows_from_series(hist[1], hist[0], "pump-1", length=50)
    with LabelStore(tmp_path) as store:
        for i, name in [(30, "nan"), (5, "normal"), *others]:
            store.add("pump-1", int(ws.start_ns[i]), int(ws.end_ns[i]), name)
        out = train_with_labels(hist, "pump-1", store, tmp_path, window=50)
    assert out["classes"] == sorted(["nan", *[name for _, name in others]])
    wins = predict_with_labels(hist, out["path"])
    assert wins[30]["alarm"] and wins[30]["fault"] == "nan"


# -- windows lying wholly in a gap of the history ----------------------------------------
@pytest.mark.parametrize("strategy", ["diversity", "mix", "novelty", "uncertainty", "top",
                                      "random"])
def test_no_strategy_proposes_a_window_with_no_reading(tmp_path: Path, strategy: str) -> None:
    """Check a window inside a NaN gap (nothing to label) is never proposed: Diversity's
    clusters put the gap's windows (every feature 0) in a cluster of their own, and
    proposed 2 of them among 10."""
    rng = np.random.default_rng(0)
    n = 3000
    v = rng.normal(20, 0.5, n)
    v[1000:1300] = np.nan
    v[2000:2010] += 5
    v[2500:2600] += np.linspace(0, 3, 100)
    ts = T0 + MIN * np.arange(n, dtype=np.int64)
    with LabelStore(tmp_path) as store:
        items = suggest((ts, v[:, None], ["v"]), "p", store, k=30, strategy=strategy)
    assert len(items) == 30
    starts = [int(np.searchsorted(ts, it["start_ns"])) for it in items]
    assert not [i for i in starts if np.isnan(v[i:i + 30]).all()], starts
