"""Regression tests for federated defects a report-only hunt proved: evaluation on training
rows (C-MAPSS) and on fault rows (pump), no evaluation figure in the registry's metrics, TOML
that a non-BMP character broke, an autoencoder over one channel taken for a RUL model, and
``pump_fleet`` crashing on small sizes with an error naming neither value."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from torch import nn

from edgewise.errors import InvalidParameterError
from edgewise.federated.client_app import app, device_data
from edgewise.federated.data import (
    RUL_CAP,
    SENSORS,
    ConditionNormaliser,
    _read,
    condition_of,
    pump_fleet,
    run_pump_fleet,
    window_features,
)
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.model import RUL_SCALE, build_model, predict, train_local

torch.set_num_threads(1)

CMAPSS = Path(os.environ.get("EDGEWISE_SHARED_DATA",
                             Path(__file__).resolve().parents[3] / "shared" / "data")) / "cmapss"
needs_cmapss = pytest.mark.skipif(
    not all((CMAPSS / f"{s}_FD002.txt.gz").is_file() for s in ("train", "test", "RUL")),
    reason="C-MAPSS FD002 not available")


def _evaluate(run_config: dict, partition: int, partitions: int, kind: str,
              n_features: int, norm: ConditionNormaliser):
    """Send one evaluate message (a fresh model of ``kind``) to one device; its reply."""
    grid = InProcessGrid(app, [{"partition-id": partition, "num-partitions": partitions}],
                         run_config)
    model = build_model(kind, n_features, seed=1)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "config": ConfigRecord({"norm-mean": [float(x) for x in norm.mean.ravel()],
                                "norm-std": [float(x) for x in norm.std.ravel()]}),
    })
    [reply] = grid.send_and_receive([grid.create_message(content, "evaluate", 1000, "1")])
    return model, reply


def test_pump_evaluation_is_on_the_held_back_normal_readings():
    """The pump's held-back stretch holds injected faults; the evaluation figure is the
    reconstruction error of its normal rows only (X_test where y_test is 0)."""
    dev = run_pump_fleet(3, 0)[1]
    zeros = np.zeros(len(dev.X_train), dtype=np.int64)
    norm = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(
        dev.X_train.astype(np.float64), zeros, 1))
    model, reply = _evaluate({"dataset": "pump"}, 1, 3, "ae", 6, norm)
    normal = dev.X_test[dev.y_test == 0]
    assert 0 < len(normal) < len(dev.X_test)  # the held-back stretch has faults to leave out
    Z = norm.transform(normal.astype(np.float64), np.zeros(len(normal), dtype=np.int64))
    Z = Z.astype(np.float32)
    with torch.no_grad():
        expected = float(np.mean((model(torch.as_tensor(Z)).numpy() - Z) ** 2))
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == len(normal)
    assert metrics["eval-loss"] == pytest.approx(expected, rel=1e-6)


@needs_cmapss
def test_cmapss_evaluation_is_on_test_engines_no_device_trains_on():
    """Partition 0 of 130 trains on training engines 1 and 131; it evaluates on test engines
    1 and 131 of test_FD002 (every cycle, RUL counted back from RUL_FD002), not on the rows
    it trains on."""
    train = device_data("cmapss", str(CMAPSS), 0, 130)
    norm = ConditionNormaliser.from_stats(*train.stats())
    model, reply = _evaluate({"dataset": "cmapss", "data-dir": str(CMAPSS)}, 0, 130, "rul",
                             43, norm)
    raw = _read(CMAPSS / "test_FD002.txt.gz")
    rul = _read(CMAPSS / "RUL_FD002.txt.gz").reshape(-1)
    X, y = [], []
    for unit in (1, 131):
        r = raw[raw[:, 0] == unit]
        cyc = r[:, 1]
        cond = condition_of(r[:, 2])
        X.append(window_features(norm.transform(r[:, [4 + s for s in SENSORS]], cond), cyc))
        y.append(np.minimum(rul[unit - 1] + cyc.max() - cyc, RUL_CAP))
    X, y = np.concatenate(X), np.concatenate(y).astype(np.float32)
    with torch.no_grad():
        out = model(torch.as_tensor(X)).numpy().ravel()
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == len(X)
    assert metrics["eval-loss"] == pytest.approx(float(np.mean((out - y / RUL_SCALE) ** 2)),
                                                 rel=1e-5)
    Xt, yt = train.features(norm)  # and not what it trains on
    with torch.no_grad():
        on_train = float(np.mean((model(torch.as_tensor(Xt)).numpy().ravel()
                                  - yt / RUL_SCALE) ** 2))
    assert len(Xt) != len(X) and metrics["eval-loss"] != pytest.approx(on_train, rel=1e-3)


@needs_cmapss
def test_a_cmapss_device_without_a_test_engine_answers_with_an_error():
    """260 partitions, 259 test engines: the last device has nothing held back and says so,
    instead of reporting a loss on its training rows."""
    train = device_data("cmapss", str(CMAPSS), 259, 260)
    norm = ConditionNormaliser.from_stats(*train.stats())
    _, reply = _evaluate({"dataset": "cmapss", "data-dir": str(CMAPSS)}, 259, 260, "rul", 43,
                         norm)
    assert reply.has_error()
    assert "Partition 259 of 260 holds no held-back C-MAPSS test engine" in \
        reply.error.reason and "has 259 engines" in reply.error.reason


@pytest.mark.parametrize("keys", [int, str], ids=["int-rounds", "json-rounds"])
def test_the_last_rounds_evaluation_reaches_the_registry_metrics(tmp_path, keys):
    """evaluate_metrics as the ServerApp stores it, {round: {"eval-loss": ..}}: the last
    round's figures (by round number: 10 after 9, also when the keys are strings after JSON)
    are in the registry's signed metrics."""
    from edgewise.federated.publish import load_global_model, register_global_model

    ev = {keys(r): {"eval-loss": loss, "unit-weight": 1.0}
          for r, loss in ((1, 0.9), (9, 0.5), (10, 0.25))}
    register_global_model({"w": torch.zeros(2)}, tmp_path, "federated-pump",
                          {"rounds": 10, "evaluate_metrics": ev})
    _, meta = load_global_model(tmp_path, "federated-pump")
    assert meta["metrics"]["evaluate_eval-loss"] == 0.25
    assert meta["metrics"]["evaluate_round"] == 10.0
    assert "evaluate_unit-weight" not in meta["metrics"]


TRICKY = ['say "hi"', "C:\\data\\new", "a\nb\r\nc", "tab\there", "del\x7f", "nul\x00x",
          "\x08\x0c\x1b\x1f", "/srv/edgewise-\U0001F680", "caf\u00e9 \u2028 \ufeff",
          "\\u0041 not an escape", "'single' and \"\"\" triple"]


@pytest.mark.parametrize("text", TRICKY)
def test_app_pyproject_strings_read_back_as_written(text):
    """Every string of the run config reads back unchanged with tomllib and with tomli (what
    Flower reads the app's pyproject.toml with): quotes, backslashes, line breaks, tab,
    control characters, U+007F and a character beyond U+FFFF (an emoji)."""
    from edgewise.federated.deploy import app_pyproject

    doc = app_pyproject({"data-dir": text, "out-dir": text + "/out", "seed": 0})
    for parser in (tomllib, tomli):
        config = parser.loads(doc)["tool"]["flwr"]["app"]["config"]
        assert config == {"data-dir": text, "out-dir": text + "/out", "seed": 0}


def test_a_lone_surrogate_in_a_path_is_refused_by_name():
    """A file name's undecodable byte (a lone surrogate in Python) cannot be TOML."""
    from edgewise.federated.deploy import app_pyproject

    with pytest.raises(InvalidParameterError, match=r"lone surrogate U\+DCFF"):
        app_pyproject({"data-dir": "/srv/bad-\udcff"})


def test_an_autoencoder_over_one_channel_stays_an_autoencoder():
    """An 'ae' over 1 channel ends in one output, like a 'rul' model: it still trains
    without targets and predicts its reconstruction, not 100 times it."""
    X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(-1, 1)
    m = build_model("ae", n_features=1, seed=0)
    loss = train_local(m, X, epochs=1)  # no RUL targets asked for
    assert np.isfinite(loss)
    with torch.no_grad():
        raw = m(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(predict(m, X), raw, rtol=1e-6)
    again = build_model("ae", 1)  # a saved state dict (no kind inside) loads into it
    again.load_state_dict(m.state_dict())
    np.testing.assert_allclose(predict(again, X), raw, rtol=1e-6)
    # the kind travels in no array: rounds average, and checkpoints store, the layers only
    assert set(m.state_dict()) == {f"{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}


def test_a_model_built_elsewhere_falls_back_to_the_width_guess():
    """A model with no recorded kind (not from build_model) is read as before: one output
    is a RUL model."""
    plain = nn.Sequential(nn.Linear(3, 1))
    X = np.zeros((4, 3), np.float32)
    with pytest.raises(InvalidParameterError, match="needs targets y for a 'rul' model"):
        train_local(plain, X)
    with torch.no_grad():
        raw = plain(torch.as_tensor(X)).numpy().ravel()
    np.testing.assert_allclose(predict(plain, X), raw * RUL_SCALE, rtol=1e-6)


def test_pump_fleet_too_small_for_its_faults_names_both_values_and_the_minimum():
    with pytest.raises(InvalidParameterError,
                       match=r"n_samples=200 with train_share=0\.6 leaves 80\. Use n_samples "
                             r">= 206 at this train_share"):
        pump_fleet(2, n_samples=200, train_share=0.6)
    smallest = pump_fleet(2, n_samples=206, train_share=0.6)  # the minimum named works
    assert len(smallest[0].X_test) == 83 and smallest[0].y_test.sum() > 0


def _reply(message_type: str, run_config: dict, node_config: dict, config: dict,
           kind: str = "ae", n_features: int = 6):
    """Call the ClientApp directly (no grid to turn an exception into a reply): a refusal
    must come back as an error reply, never escape as an exception (a traceback in Flower's
    log and an opaque error at the server)."""
    from flwr.app import Context

    grid = InProcessGrid(app, [node_config], run_config)  # only builds the message
    content = RecordDict({"arrays": ArrayRecord(build_model(kind, n_features).state_dict()),
                          "config": ConfigRecord(config)})
    msg = grid.create_message(content, message_type, 1000, "1")
    return app(msg, Context(run_id=1, node_id=1000, node_config=node_config,
                            state=RecordDict(), run_config=run_config))


PUMP_NORM = {"norm-mean": [0.0] * 6, "norm-std": [1.0] * 6}
PUMP_NODE = {"partition-id": 0, "num-partitions": 3}


@pytest.mark.parametrize(("message_type", "config", "n_features", "named"), [
    ("evaluate", {}, 6, "lacks 'norm-mean'"),
    ("train", {"server-round": 1}, 6, "lacks 'norm-mean'"),
    ("evaluate", {"norm-mean": [0.0] * 5, "norm-std": [1.0] * 5}, 6,
     "'norm-mean' holds 5 values; this device's data needs 6"),
    ("train", {"norm-mean": [0.0] * 6, "norm-std": [1.0] * 5, "server-round": 1}, 6,
     "'norm-std' holds 5 values; this device's data needs 6"),
    ("evaluate", PUMP_NORM, 5, "'0.weight' has shape (16, 5); this device's data (6 model"),
    ("train", {**PUMP_NORM, "server-round": 1}, 5, "'0.weight' has shape (16, 5)"),
])
def test_an_unusable_normaliser_or_model_is_an_error_reply(message_type, config, n_features,
                                                           named):
    """A KeyError, a numpy broadcast ValueError or torch's load_state_dict RuntimeError
    escaped the handler; each is now an error reply naming the key or parameter."""
    reply = _reply(message_type, {"dataset": "pump"}, PUMP_NODE, config, "ae", n_features)
    assert reply.has_error() and "InvalidParameterError" in reply.error.reason
    assert named in reply.error.reason


def test_a_missing_training_file_is_an_error_reply(tmp_path):
    """device_data read train_FD002 unchecked (FileNotFoundError escaped), unlike held_data."""
    reply = _reply("train", {"dataset": "cmapss", "data-dir": str(tmp_path)}, PUMP_NODE,
                   {"phase": "stats"})
    assert reply.has_error() and "lacks it" in reply.error.reason
    assert "train_FD002.txt.gz" in reply.error.reason


@needs_cmapss
@pytest.mark.parametrize("config", [{"phase": "stats"}, {"server-round": 1}])
def test_a_partition_without_an_engine_is_an_error_reply(config):
    """Partition 265 of 300 (FD002 has 260 engines): the refusal escaped as an exception."""
    reply = _reply("train", {"dataset": "cmapss", "data-dir": str(CMAPSS)},
                   {"partition-id": 265, "num-partitions": 300},
                   {**config, "norm-mean": [0.0] * 84, "norm-std": [1.0] * 84}, "rul", 43)
    assert reply.has_error()
    assert "Partition 265 of 300 holds no C-MAPSS engine" in reply.error.reason


def _cmapss_dir(tmp_path: Path, nan_at: tuple[int, int] | None) -> Path:
    """A small synthetic FD002-shaped training file: 3 engines of 40 cycles, 26 columns."""
    import gzip

    rng = np.random.default_rng(0)
    rows = []
    for unit in (1, 2, 3):
        for cycle in range(1, 41):
            rows.append([unit, cycle, 0.0, 0.0, 100.0, *rng.normal(500.0, 5.0, size=21)])
    raw = np.asarray(rows)
    if nan_at is not None:
        raw[nan_at] = np.nan
    with gzip.open(tmp_path / "train_FD002.txt.gz", "wt") as fh:
        np.savetxt(fh, raw)
    return tmp_path


@pytest.mark.parametrize("config", [{"phase": "stats"}, {"server-round": 1}])
def test_a_nan_reading_is_refused_naming_the_sensor(tmp_path, config):
    """One NaN reading (engine 1, cycle 6, sensor 2) made 30 feature rows NaN and every
    update all NaN (train-loss nan), or the normaliser statistics NaN, without a word."""
    d = _cmapss_dir(tmp_path, (5, 6))  # column 6 is sensor 2
    norm = {"norm-mean": [0.0] * 84, "norm-std": [1.0] * 84}
    reply = _reply("train", {"dataset": "cmapss", "data-dir": str(d)}, PUMP_NODE,
                   {**config, **norm}, "rul", 43)
    assert reply.has_error(), dict(reply.content["metrics"])
    assert "engine 1: 1 of 40 rows hold a non-finite reading (NaN or Inf) in s2" in \
        reply.error.reason
    (tmp_path / "unused").mkdir()
    unused = _cmapss_dir(tmp_path / "unused", (5, 5))  # sensor 1: not a model input
    fine = _reply("train", {"dataset": "cmapss", "data-dir": str(unused)}, PUMP_NODE,
                  {**config, **norm}, "rul", 43)
    assert not fine.has_error()


def test_a_diverged_update_is_refused_on_the_plain_path():
    """lr 1e20 turned every parameter NaN (train-loss nan) and the device sent it; as under
    SecAgg+, it now refuses, naming the lr. A deliberate 'nan' attack still sends."""
    reply = _reply("train", {"dataset": "pump", "lr": 1e20}, PUMP_NODE,
                   {**PUMP_NORM, "server-round": 1})
    assert reply.has_error() and "lr 1e+20" in reply.error.reason
    assert "Local training diverged: 329 of 329 parameters are non-finite" in \
        reply.error.reason
    attack = _reply("train", {"dataset": "pump"}, {**PUMP_NODE, "attack": "nan"},
                    {**PUMP_NORM, "server-round": 1})
    assert not attack.has_error()
    assert all(np.isnan(a.numpy()).all() for a in attack.content["arrays"].values())
