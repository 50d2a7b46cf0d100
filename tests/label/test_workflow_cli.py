from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.label.store import LabelStore
from edgewise.label.workflow import load_model
from edgewise.security import Security
from tests.in_process import edgewise_here

REPO = Path(__file__).resolve().parents[2]


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgewise ARGS``, a real process."""
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src"),
                                                    "PATH": "/usr/bin:/bin"}, timeout=120)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` through the real entry point in this process, as :func:`_process`
    answers (a new interpreter's imports cost a second a call)."""
    return edgewise_here(*args, cwd=REPO)


def _history_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    temp = rng.normal(40, 0.3, n)
    vib = rng.normal(2.0, 0.05, n)
    for start in range(200, n, 400):          # a harmless start-up pulse, every time
        temp[start:start + 4] += 3.0
    vib[2500:2560] += 1.0                      # a real bearing fault
    ts = 1_700_000_000 + 60 * np.arange(n)
    lines = ["timestamp,temp_c,vib_mm_s"] + [f"{t},{a:.4f},{b:.4f}"
                                              for t, a, b in zip(ts, temp, vib, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow  # six CLI processes: ~25 s on the shared 2-core VM
def test_suggest_label_train_loop(data_dir: Path, tmp_path: Path) -> None:
    hist = tmp_path / "pump-1.csv"
    _history_csv(hist)
    r = _cli("label", "suggest", "--device", "pump-1", "-k", "5", "--csv", str(hist),
             "--data-dir", str(data_dir), "--window", "30", "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert len(first) == 5 and len({s["start_ns"] for s in first}) == 5
    assert any(s["alarm"] for s in first)
    # a person answers: the pulses are normal, the vibration window a bearing fault
    labels = tmp_path / "answers.csv"
    rows = ["device_id,start,end,label,note"]
    for s in first:
        t0 = (s["start_ns"] // 10**9 - 1_700_000_000) // 60
        answer = "bearing_wear" if 2490 <= t0 < 2560 else "normal"
        rows.append(f"pump-1,{s['start_ns']},{s['end_ns']},{answer},")
    labels.write_text("\n".join(rows) + "\n")
    Security(data_dir).add_device("pump-1")  # labels are for known devices only
    r = _cli("label", "import", str(labels), "--data-dir", str(data_dir), "--who", "ops")
    assert r.returncode == 0, r.stderr
    r = _cli("train", "--with-labels", "--device", "pump-1", "--csv", str(hist),
             "--data-dir", str(data_dir), "--window", "30", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["version"] == 1 and out["n_labels"] == 5
    assert out["alarms_after"] < out["alarms_before"]
    model = load_model(out["path"])
    store = LabelStore(data_dir)
    assert model["label_snapshot_id"] == store.snapshot_id("pump-1")
    assert len(store.labels_at(model["label_snapshot_id"])) == 5
    # the next suggestions skip what is answered
    r = _cli("label", "suggest", "--device", "pump-1", "-k", "5", "--csv", str(hist),
             "--data-dir", str(data_dir), "--window", "30", "--json")
    again = {s["start_ns"] for s in json.loads(r.stdout)}
    assert not again & {s["start_ns"] for s in first}
    r = _cli("train", "--with-labels", "--device", "pump-1", "--csv", str(hist),
             "--data-dir", str(data_dir), "--window", "30", "--json")
    assert json.loads(r.stdout)["version"] == 2


def test_suggest_without_history_fails_in_one_line(data_dir: Path, tmp_path: Path) -> None:
    r = _process("label", "suggest", "--device", "pump-1", "--csv", str(tmp_path / "none.csv"),
                 "--data-dir", str(data_dir))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_a_bad_strategy_fails_in_one_line_naming_it(data_dir: Path, tmp_path: Path) -> None:
    hist = tmp_path / "pump-1.csv"
    _history_csv(hist)
    r = _cli("label", "suggest", "--device", "pump-1", "--csv", str(hist), "--strategy",
             "loudest", "--data-dir", str(data_dir))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "loudest" in r.stderr and "novelty" in r.stderr


def test_suggest_and_train_read_history_from_the_store(data_dir: Path) -> None:
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    rng = np.random.default_rng(1)
    t0 = 1_700_000_000 * 10**9
    vals = rng.normal(40, 0.3, 1500)
    vals[900:904] += 6
    store = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    store.append([Reading("pump-9", "temp_c", t0 + i * 10**9, float(v))
                  for i, v in enumerate(vals)])
    store.close()
    r = _cli("label", "suggest", "--device", "pump-9", "-k", "3", "--data-dir", str(data_dir),
             "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert len(items) == 3
    assert any(it["start_ns"] <= t0 + 900 * 10**9 < it["end_ns"] for it in items)
    r = _cli("train", "--with-labels", "--device", "pump-9", "--data-dir", str(data_dir),
             "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_labels"] == 0


def test_the_mix_keeps_learning_across_suggest_calls(tmp_path: Path) -> None:
    """Check that ``suggest`` keeps the mix's questions and counts per device between calls:
    answers given after one call count for the strategies that asked, in the next call."""
    from edgewise.label.workflow import load_history_csv, suggest

    hist = tmp_path / "pump-1.csv"
    _history_csv(hist)
    history = load_history_csv(hist)
    store = LabelStore(tmp_path / "d")
    first = suggest(history, "pump-1", store, k=5, window=30)
    state = json.loads((tmp_path / "d" / "label-mix.json").read_text())["pump-1"]
    assert sorted(p[0] for p in state["pending"]) == sorted([s["start_ns"], s["end_ns"]]
                                                            for s in first)
    assert sum(state["asks"]) == 0
    # every question answered "normal": the alarms among them were false (the model erred)
    for s in first:
        store.add("pump-1", s["start_ns"], s["end_ns"], "normal", who="test")
    second = suggest(history, "pump-1", store, k=5, window=30)
    state = json.loads((tmp_path / "d" / "label-mix.json").read_text())["pump-1"]
    assert sum(state["asks"]) == 5
    assert sum(state["hits"]) == sum(s["alarm"] for s in first)
    assert not {s["start_ns"] for s in second} & {s["start_ns"] for s in first}
    # another device starts with a mix of its own
    assert "pump-2" not in json.loads((tmp_path / "d" / "label-mix.json").read_text())
    store.close()


def test_a_history_in_epoch_milliseconds_reads_as_in_seconds(tmp_path: Path) -> None:
    """Check a history CSV's times in epoch s, ms or RFC 3339 give the same nanoseconds
    (milliseconds were multiplied by 1e9, as if seconds: times past the year 50,000)."""
    from edgewise.label.workflow import load_history_csv

    t = 1_700_000_000 + 60 * np.arange(5)
    forms = {"s": t, "ms": t * 1000,
             "rfc": [f"2023-11-14T22:{13 + i}:20Z" for i in range(5)]}
    got = []
    for name, ts in forms.items():
        f = tmp_path / f"h_{name}.csv"
        f.write_text("timestamp,temp\n" + "".join(f"{a},{i}.5\n" for i, a in enumerate(ts)))
        got.append(load_history_csv(f)[0].tolist())
    assert got[0] == got[1] == got[2] == [int(v) * 10**9 for v in t]


@pytest.mark.parametrize("args, needle", [
    (["--device", "bad id!"], "--device must be a device id"),
    (["--device", "pump-1", "--window", "1"], "--window must be at least 2"),
    (["--device", "pump-1", "--strategy", "bogus"], "--strategy must be one of mix"),
])
def test_suggest_names_the_option_that_is_wrong(data_dir: Path, tmp_path: Path, args: list,
                                                needle: str) -> None:
    """Check a bad device id (it was taken, and written into the mix state), window or
    strategy (named by internal parameter names) is one line naming the option."""
    _history_csv(tmp_path / "h.csv")
    done = _cli("label", "suggest", *args, "--csv", str(tmp_path / "h.csv"),
                "--data-dir", str(data_dir))
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert not (data_dir / "label-mix.json").exists()


def test_a_history_with_repeated_times_is_refused_not_cut_into_empty_windows(
        data_dir: Path, tmp_path: Path) -> None:
    """Check repeated timestamps give one line, not zero-width windows that can never be
    labelled (the label store refuses a window that does not end after it starts)."""
    rows = "".join(f"2024-01-01T00:00:0{i // 20}Z,{i}\n" for i in range(40))
    (tmp_path / "d.csv").write_text("timestamp,a\n" + rows)
    done = _cli("label", "suggest", "--device", "pump-1", "--csv", str(tmp_path / "d.csv"),
                "--data-dir", str(data_dir))
    assert done.returncode == 2 and "would have no duration" in done.stderr, done.stderr


def test_an_anomaly_label_stays_on_its_fault_as_the_history_grows(tmp_path: Path) -> None:
    """Check a correct 12-reading 'anomaly' label on a real fault keeps the device quiet
    after more normal history arrives: windows are len(history) // 100 readings, so their
    edges moved under the label, which then spilled one reading onto a quiet neighbour
    (scored 0); that window became 'anomaly' and every window of the device alarmed."""
    from edgewise.label.workflow import train_with_labels

    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, 2360)
    v[1507:1519] += 4.0                        # the fault, labelled exactly
    ts = (1_700_000_000 + 60 * np.arange(len(v))) * 10**9
    store = LabelStore(tmp_path / "d")
    store.add("pump-1", int(ts[1507]), int(ts[1519]), "anomaly", who="ops")
    for n in (2000, 2360):                     # windows of 20, then of 23 readings
        out = train_with_labels((ts[:n], v[:n, None], ["temp_c"]), "pump-1", store,
                                tmp_path / "d")
        assert out["n_labels"] == 1, (n, out)
        assert out["alarms_after"] <= 2, (n, out)
    store.close()


def test_suggest_says_when_it_made_the_data_dir(tmp_path: Path) -> None:
    """Check ``label suggest --csv`` into a data dir that is not there says it made it (a
    typo would otherwise leave a stray label store without a word), and says nothing
    when the dir was there."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    hist = tmp_path / "pump-1.csv"
    _history_csv(hist)
    typo = tmp_path / "dta"
    args = ["label", "suggest", "--device", "pump-1", "-k", "2", "--csv", str(hist),
            "--window", "30", "--data-dir", str(typo)]
    first = CliRunner(mix_stderr=False).invoke(app, args)
    assert first.exit_code == 0, first.stderr
    assert first.stderr == (f"note: --data-dir {str(typo)!r} did not exist; made it for the "
                            "label store (labels, and what 'label suggest' asked). Mistyped? "
                            "Delete it and pass the data dir your labels are in.\n")
    again = CliRunner(mix_stderr=False).invoke(app, args)
    assert again.exit_code == 0 and again.stderr == "", again.stderr


def test_a_device_with_no_readings_names_those_the_store_holds(tmp_path: Path) -> None:
    """Check ``label suggest --device pump-1`` on the demo's store (``pump-01`` ...) says
    which devices it does hold, not only that pump-1 has no readings."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    load_commands()
    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    store.append([Reading(d, "t", 10**18 + i * 10**9, 1.0) for d in ("pump-02", "pump-01")
                  for i in range(10)])
    store.close()
    res = CliRunner(mix_stderr=False).invoke(app, ["label", "suggest", "--device", "pump-1",
                                                   "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert res.stderr == ("error: Device 'pump-1' has no stored readings. The store holds "
                          "readings of pump-01, pump-02.\n")
