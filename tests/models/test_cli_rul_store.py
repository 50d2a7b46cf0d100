"""``edgewise train rul`` / ``predict rul`` on a real DuckDB store of C-MAPSS engines."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.bench.cmapss import load_train
from edgewise.label.store import LabelStore
from edgewise.models.rul import RULModel, read_header
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here as edgewise  # in this process

SENSORS = ["sensor_2", "sensor_3", "sensor_4", "sensor_7", "sensor_11", "sensor_12"]
T0 = 1_700_000_000 * 10**9
STEP = 10 * 10**9  # one C-MAPSS cycle every ten seconds


def _ts(cycle: int) -> int:
    return T0 + int(cycle) * STEP


def _fill(path: Path, engines, cut: dict[int, int] | None = None,
          drop: dict[int, str] | None = None) -> None:
    """Write each engine's history (to its ``cut`` cycle) through the store's append API."""
    store = open_store(f"duckdb:///{path}")
    try:
        for unit, g in engines.groupby("unit"):
            if cut and unit in cut:
                g = g[g.cycle <= cut[unit]]
            metrics = [s for s in SENSORS if not drop or drop.get(unit) != s]
            store.append([Reading(f"engine-{unit}", m, _ts(c), float(v))
                          for m in metrics for c, v in zip(g.cycle, g[m], strict=True)])
    finally:
        store.close()


#: Trees of the model ``train rul`` fits here (RULModel's default is 400): what these tests
#: check is which rows of which devices the CLI reads from a store, never how close the fit
#: is beyond the loose bounds they assert (margins kept: measured alike at 150 and 400).
#: A fit of 16 engines took 9.9 s at 400 trees, 2.7 s at 100 (one loaded 2-core run).
TREES = 150


@pytest.fixture(scope="module", autouse=True)
def _fewer_trees() -> Iterator[None]:
    """The CLI's RULModel (the real one, in this process) fits TREES trees by default."""
    names = list(inspect.signature(RULModel.__init__).parameters)[1:]
    defaults = RULModel.__init__.__defaults__
    assert defaults is not None and len(defaults) == len(names)
    changed = list(defaults)
    changed[names.index("n_estimators")] = TREES
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RULModel.__init__, "__defaults__", tuple(changed))
        assert RULModel().n_estimators == TREES
        yield


@pytest.fixture(scope="module")
def engines(shared_data: Path):
    train = load_train(shared_data / "cmapss", "FD001")
    return train[train.unit <= 20]


@pytest.fixture(scope="module")
def fleet_store(engines, tmp_path_factory) -> tuple[Path, Path]:
    """Engines 1-16 run to failure and engine 17 still running, plus a failures CSV."""
    d = tmp_path_factory.mktemp("store")
    _fill(d / "edgewise.duckdb", engines[engines.unit <= 17])
    last = engines.groupby("unit").cycle.max()
    lines = ["device_id,time"] + [f"engine-{u},{_ts(last[u])}" for u in range(1, 17)]
    (d / "failures.csv").write_text("\n".join(lines) + "\n")
    return d, d / "failures.csv"


@pytest.fixture(scope="module")
def trained(fleet_store, tmp_path_factory):
    """One ``train rul --failures`` run on the fleet store, shared by the tests that read
    its answer, model or stderr (a training run is most of this module's time): the failures
    CSV also names ``ghost``, a device the store has no readings of."""
    d, failures = fleet_store
    tmp = tmp_path_factory.mktemp("trained")
    extra = tmp / "failures.csv"
    extra.write_text(failures.read_text() + f"ghost,{_ts(100)}\n")
    out = tmp / "rul-v1.ewm"
    done = edgewise("train", "rul", "--data", f"duckdb:///{d / 'edgewise.duckdb'}",
                    "--failures", str(extra), "--out", str(out), "--json")
    return out, done


def test_train_from_store_then_predict_each_device(trained, engines, tmp_path: Path) -> None:
    """Check that training reads the store's device histories cut at their failure, reports
    the device without a failure as skipped, and that predict scores each device's current
    state from a store, skipping (and naming) the device that lacks a metric."""
    out, done = trained
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["units"] == 16
    assert summary["skipped"] == [{"device": "engine-17", "reason": "no known failure"}]
    head = read_header(out)
    assert head["sensor_columns"] == sorted(SENSORS) and head["unit_column"] == "unit"

    current = tmp_path / "now"
    current.mkdir()
    cut = {18: 60, 19: 150, 20: 120}
    _fill(current / "edgewise.duckdb", engines[engines.unit >= 18], cut=cut,
          drop={20: "sensor_7"})
    done = edgewise("predict", "rul", "--model", str(out), "--data", str(current), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    preds = {p["unit"]: p for p in answer["predictions"]}
    assert sorted(preds) == ["engine-18", "engine-19"]
    assert answer["skipped"] == [
        {"device": "engine-20", "reason": "lacks metric(s) ['sensor_7']"}
    ]
    life = engines.groupby("unit").cycle.max()
    for unit in (18, 19):
        p = preds[f"engine-{unit}"]
        assert p["low"] <= p["rul"] <= p["high"]
        truth = min(125, life[unit] - cut[unit])
        assert abs(p["rul"] - truth) < 60, (unit, p, truth)
    # the engine cut early is predicted much further from failure than the one cut late
    assert preds["engine-18"]["rul"] > preds["engine-19"]["rul"] + 20

    text = edgewise("predict", "rul", "--model", str(out), "--data", str(current))
    assert text.returncode == 0 and "skipped 1 device(s): engine-20" in text.stdout


def test_a_failure_of_a_device_with_no_history_is_named(trained) -> None:
    """Check a failures CSV row for a device the store has no readings of is named on
    stderr, not ignored without a word (a fleet-wide failure log is fine, so it trains)."""
    out, done = trained
    assert done.returncode == 0, done.stderr
    assert out.exists()
    assert "1 device(s) with no readings in the store, not used: ghost" in done.stderr
    assert json.loads(done.stdout)["units"] == 16


def test_failure_times_from_the_label_store(fleet_store, tmp_path: Path) -> None:
    """Check that ``--failure-label`` takes each device's failure from its labelled windows
    (a device labelled only with another class is skipped); that a class no label has (a
    typo, or a class the site never used) is one line naming it and the classes the label
    store holds, before any device is read, not "no device has a known failure" with every
    device skipped; and that a list where only some classes are unknown trains on the rest
    and names the unknown. (One test, as both checks train on the same devices.)"""
    d, _ = fleet_store
    labels = LabelStore(tmp_path)
    for unit in range(1, 9):
        labels.add(f"engine-{unit}", _ts(120), _ts(121), "bearing_wear", who="test")
    labels.add("engine-9", _ts(100), _ts(110), "spike", who="test")  # not a failure class
    labels.close()
    store = f"duckdb:///{d / 'edgewise.duckdb'}"
    out = tmp_path / "m.ewm"
    done = edgewise("train", "rul", "--data", store, "--failure-label", "bearing_failure",
                    "--data-dir", str(tmp_path), "--out", str(out))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [(
        f"error: --failure-label 'bearing_failure': no label in the label store "
        f"{str(tmp_path / 'labels.sqlite')!r} has that class; its classes are "
        "bearing_wear, spike")]
    assert not out.exists()

    done = edgewise("train", "rul", "--data", store, "--failure-label",
                    "bearing_failure,bearing_wear", "--data-dir", str(tmp_path),
                    "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["units"] == 8
    assert {s["device"] for s in summary["skipped"]} == {f"engine-{u}" for u in range(9, 18)}
    assert ("note: --failure-label class(es) bearing_failure match no label in the label "
            "store") in done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data", "sqlite:///x.db", "--history-ends-at-failure"], "unsupported scheme 'sqlite'"),
        (["--data", "duckdb:///nowhere/edgewise.duckdb", "--history-ends-at-failure"],
         "no store file at '/nowhere/edgewise.duckdb'"),
        (["--data", "STORE"], "needs exactly one source of failure times"),
        (["--data", "STORE", "--failures", "EMPTY"], "no device has a known failure"),
        (["--data", "EMPTYSTORE", "--history-ends-at-failure"], "the store holds no devices"),
        (["--data", "STORE", "--history-ends-at-failure", "--failures", "EMPTY"],
         "needs exactly one source"),
    ],
)
def test_bad_store_input_is_one_clear_line(fleet_store, tmp_path: Path, args, needle) -> None:
    """Check that a bad store URL, an empty store or unknown failures exit non-zero with
    one line that names the problem."""
    d, _ = fleet_store
    (tmp_path / "empty.csv").write_text("device_id,time\n")
    empty = tmp_path / "empty.duckdb"
    open_store(f"duckdb:///{empty}").close()
    subs = {"STORE": f"duckdb:///{d / 'edgewise.duckdb'}", "EMPTY": str(tmp_path / "empty.csv"),
            "EMPTYSTORE": f"duckdb:///{empty}"}
    done = edgewise("train", "rul", *[subs.get(a, a) for a in args],
                    "--out", str(tmp_path / "m.ewm"))
    assert done.returncode != 0
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "m.ewm").exists()


def test_train_and_predict_from_postgres(engines, postgres_url: str, tmp_path: Path) -> None:
    """Check that a PostgreSQL store serves the same histories as DuckDB: train with
    ``--history-ends-at-failure`` on engines that ran to failure, then predict a running one."""
    import uuid

    import psycopg

    schema = f"ew_rul_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    try:
        store = open_store(url)
        try:
            for unit, g in engines[engines.unit <= 10].groupby("unit"):
                store.append([Reading(f"engine-{unit}", m, _ts(c), float(v))
                              for m in SENSORS for c, v in zip(g.cycle, g[m], strict=True)])
        finally:
            store.close()
        out = tmp_path / "pg.ewm"
        done = edgewise("train", "rul", "--data", url, "--history-ends-at-failure",
                        "--out", str(out), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["units"] == 10
        done = edgewise("predict", "rul", "--model", str(out), "--data", url, "--json")
        assert done.returncode == 0, done.stderr
        preds = json.loads(done.stdout)["predictions"]
        assert len(preds) == 10
        # every engine's history ends at its failure, so each is predicted close to zero
        assert all(p["low"] <= p["rul"] <= p["high"] and p["rul"] < 40 for p in preds), preds
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_failure_times_in_any_epoch_unit(tmp_path: Path) -> None:
    """Check a failures CSV in epoch s, ms, us or ns, or RFC 3339, gives the same times (an
    integer in ms was taken for ns: the failure landed in 1970 without a word)."""
    from edgewise.cli.rul import _read_failures

    t = 1_700_000_123
    rows = [f"d{i},{v}" for i, v in enumerate(
        [t, t * 10**3, t * 10**6, t * 10**9, "2023-11-14T22:15:23Z", f"{t}.0"])]
    f = tmp_path / "failures.csv"
    f.write_text("device_id,time\n" + "\n".join(rows) + "\n")
    assert set(_read_failures(f).values()) == {t * 10**9}


def test_a_device_listed_twice_in_failures_warns_naming_both_times(tmp_path: Path,
                                                                     capsys) -> None:
    """Check a failures CSV listing a device twice keeps the earlier time with a one-line
    warning naming the device and both times (it took the earlier one without a word), that a
    device listed once gets no warning, and that --help says so."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands
    from edgewise.cli.rul import _read_failures

    f = tmp_path / "failures.csv"
    f.write_text("device_id,time\npump-1,2024-03-02T00:00:00Z\npump-2,2024-01-05T00:00:00Z\n"
                 "pump-1,2024-01-10T00:00:00Z\n")
    got = _read_failures(f)
    assert got["pump-1"] == 1704844800 * 10**9 and got["pump-2"] == 1704412800 * 10**9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: "), err
    for part in ("'pump-1'", "2024-03-02T00:00:00Z (line 2)", "2024-01-10T00:00:00Z (line 4)",
                 "using the earlier, 2024-01-10T00:00:00Z"):
        assert part in err, err
    assert "pump-2" not in err
    load_commands()
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(app, ["train", "rul", "--data", f"duckdb:///{tmp_path}/none.duckdb",
                              "--failures", str(f), "--out", str(tmp_path / "m.rul")])
    lines = res.stderr.splitlines()
    assert lines[0].startswith("warning: ") and "'pump-1'" in lines[0], res.stderr
    assert res.exit_code == 2 and len(lines) == 2  # then the missing store, one line
    helptext = " ".join(runner.invoke(app, ["train", "rul", "--help"],
                                      env={"COLUMNS": "200"}).stdout.split())
    assert "listed twice keeps its earliest time" in helptext, helptext


SECRET = "S3cretPW"


@pytest.mark.parametrize(
    ("command", "url", "needle"),
    [
        ("train", f"postgresql://ew:{SECRET}@127.0.0.1:1/test", "Cannot connect"),
        ("predict", f"postgresql://ew:{SECRET}@127.0.0.1:1/test", "Cannot connect"),
        ("train", f"postgresql://ew:{SECRET}@[::1/test", "is malformed"),
        ("predict", f"sqlite://ew:{SECRET}@db/x", "unsupported scheme 'sqlite'"),
    ],
)
def test_a_store_password_is_never_printed(tmp_path: Path, command: str, url: str,
                                           needle: str) -> None:
    """Check that a store URL with a password is printed masked (***) in the one error line
    of train and predict (the CLI repeated the raw URL although the store masks it; a
    malformed one gave a traceback; a refused connection printed two lines)."""
    from edgewise.models.rul import RULModel
    from tests.models.test_rul import fleet

    model = tmp_path / "m.rul"
    RULModel(n_estimators=5, cap=60.0, calibration_folds=2).fit(fleet(4)).save(model)
    args = (["train", "rul", "--history-ends-at-failure", "--out", str(tmp_path / "o.rul")]
            if command == "train" else ["predict", "rul", "--model", str(model)])
    done = edgewise(*args, "--data", url)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert SECRET not in done.stderr + done.stdout and "ew:***@" in lines[0], lines[0]


def test_out_in_a_fresh_data_dirs_models_folder_is_made(tmp_path: Path) -> None:
    """Check ``--out <data dir>/models/rul-v1.ewm`` (the README's command, where the gateway
    looks) makes the ``models`` folder of a data dir that has none yet: it was refused
    ("the directory … does not exist"), while any other missing folder still is."""
    data = tmp_path / "fresh"
    data.mkdir()
    done = edgewise("train", "rul", "--data", str(tmp_path / "none.csv"), "--out",
                    str(data / "models" / "rul-v1.ewm"))
    assert (data / "models").is_dir(), done.stderr
    assert "does not exist; create it" not in done.stderr
    done = edgewise("train", "rul", "--data", str(tmp_path / "none.csv"), "--out",
                    str(data / "other" / "rul-v1.ewm"))
    assert done.returncode == 2 and "does not exist; create it" in done.stderr
    assert not (data / "other").exists()


def test_readings_of_metrics_not_trained_on_add_no_rows(tmp_path: Path) -> None:
    """Check that a store's histories for training and for predict are rows of the metrics
    trained on (``--sensor-columns``, or those every device sends) or that the model uses
    only, as ``GET /v1/devices/{id}/rul`` reads them: a link quality stamped 0.5 s after
    each sample (on some devices, or on all but not chosen) doubled a unit's rows, so it
    trained on and scored histories twice as long, trends half as steep."""
    from types import SimpleNamespace

    from edgewise.cli.rul import _store_current, _store_training_table

    def fill(path: Path, rssi_on: tuple[int, ...]) -> str:
        store = open_store(f"duckdb:///{path}")
        try:
            for u in range(3):
                store.append([Reading(f"dev-{u}", m, _ts(c), float(c * (j + 1) + u))
                              for c in range(1, 21) for j, m in enumerate(("a", "b"))])
                if u in rssi_on:
                    store.append([Reading(f"dev-{u}", "rssi", _ts(c) + 5 * 10**8, -60.0)
                                  for c in range(1, 21)])
        finally:
            store.close()
        return f"duckdb:///{path}"

    plain = fill(tmp_path / "plain.duckdb", ())
    some, every = fill(tmp_path / "some.duckdb", (0, 1)), fill(tmp_path / "all.duckdb", (0, 1, 2))
    want, _ = _store_training_table(plain, None, "unit", "cycle", None, None)
    assert list(want.columns) == ["unit", "cycle", "a", "b"] and len(want) == 60
    got, skipped = _store_training_table(some, None, "unit", "cycle", None, None)
    assert skipped == [] and got.equals(want), got  # rssi is not sent by every device
    got, _ = _store_training_table(every, None, "unit", "cycle", ["a", "b"], None)
    assert got.equals(want), got  # rssi sent by all, but not chosen
    model = SimpleNamespace(unit_column="unit", time_column="cycle",
                            required_columns=lambda: ["unit", "cycle", "a", "b"])
    table, skipped, steps = _store_current(every, None, model)
    assert skipped == [] and table.equals(want), table
    assert steps == {f"dev-{u}": 10.0 for u in range(3)}


def test_a_lone_glitch_in_the_store_is_passed_over_and_named(trained, engines,
                                                             tmp_path: Path) -> None:
    """Check that one 1e6 reading stored in cycle 40 of a 100-cycle engine (which made it
    unscorable for as long as the reading was kept: a store cannot be edited) is passed
    over: the RUL equals the one from a store holding cycle 39's value there, ``--json``
    lists it in ``passed_over`` and the text output names it in a note."""
    out, done = trained
    assert done.returncode == 0, done.stderr
    engine = engines[(engines.unit == 18) & (engines.cycle <= 100)].copy()
    at = engine.cycle == 40
    carried = engine.assign(sensor_11=engine.sensor_11.where(
        ~at, float(engine.sensor_11[engine.cycle == 39].iloc[0])))
    glitch = engine.assign(sensor_11=engine.sensor_11.where(~at, 1e6))
    answers = {}
    for name, history in (("carried", carried), ("glitch", glitch)):
        (tmp_path / name).mkdir()
        _fill(tmp_path / name / "edgewise.duckdb", history)
        run = edgewise("predict", "rul", "--model", str(out), "--data",
                       str(tmp_path / name), "--json")
        assert run.returncode == 0, run.stderr
        answers[name] = json.loads(run.stdout)
    assert answers["glitch"]["predictions"] == answers["carried"]["predictions"]
    assert answers["glitch"]["skipped"] == [] and answers["carried"]["passed_over"] == []
    (g,) = answers["glitch"]["passed_over"]
    assert (g["device"], g["sensor"], g["cycle"], g["value"]) == (
        "engine-18", "sensor_11", 40, 1e6) and g["z"] > 20
    text = edgewise("predict", "rul", "--model", str(out), "--data", str(tmp_path / "glitch"))
    assert text.returncode == 0, text.stderr
    assert ("note: passed over 1 lone glitch reading(s) far outside the model's domain, "
            "carrying the previous value: engine-18 sensor_11=1e+06 at cycle 40") in text.stdout


def test_a_constant_sensor_stamped_apart_adds_no_training_rows(tmp_path: Path) -> None:
    """Check that a metric every device sends, constant (so the model leaves it out) and
    stamped 0.5 s after each sample, does not double the training rows: the model is fitted
    on the table of the metrics it uses, as the RUL route and predict read them (same
    training data hash as naming those sensors), where it trained on histories twice as
    long as it scores."""
    store = open_store(f"duckdb:///{tmp_path / 'e.duckdb'}")
    rng = np.random.default_rng(0)
    try:
        for u in range(8):
            life = int(rng.integers(60, 90))
            wear = (np.arange(1, life + 1) / life) ** 2
            store.append([Reading(f"dev-{u}", m, _ts(c), float(v))
                          for c in range(1, life + 1)
                          for m, v in (("temp", 40 + 15 * wear[c - 1] + rng.normal(0, 0.3)),
                                       ("vib", 2 + 6 * wear[c - 1] + rng.normal(0, 0.1)))])
            store.append([Reading(f"dev-{u}", "mode", _ts(c) + 5 * 10**8, 1.0)
                          for c in range(1, life + 1)])
    finally:
        store.close()
    url = f"duckdb:///{tmp_path / 'e.duckdb'}"
    sums = {}
    for name, extra in (("auto", ()), ("named", ("--sensor-columns", "temp,vib"))):
        done = edgewise("train", "rul", "--data", url, "--history-ends-at-failure",
                        "--window", "10", "--out", str(tmp_path / f"{name}.ewm"), "--json",
                        *extra)
        assert done.returncode == 0, done.stderr
        sums[name] = json.loads(done.stdout)["training_data_sha256"]
        if name == "auto":
            assert "note: column 'mode' left out of the model" in done.stderr, done.stderr
    assert sums["auto"] == sums["named"]
