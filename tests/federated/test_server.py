"""Server side: checkpoints resume, failing devices do not stall, only parameters cross."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.federated.client_app import app, device_data
from edgewise.federated.data import pump_fleet
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.model import build_model
from edgewise.federated.personalise import personalise
from edgewise.federated.publish import load_global_model, register_global_model
from edgewise.federated.server_app import load_checkpoint, run_federated

torch.set_num_threads(1)


def _grid(n: int, attacks: dict[int, str] | None = None) -> InProcessGrid:
    attacks = attacks or {}
    return InProcessGrid(app, [{"partition-id": i, "num-partitions": n,
                                "attack": attacks.get(i, "")} for i in range(n)],
                         {"dataset": "pump"})


def _run(grid, rounds, **kw):
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1,
                         num_nodes=len(list(grid.get_node_ids())), rounds=rounds,
                         strategy="fedavg", **kw)


def test_checkpoint_lets_a_stopped_run_resume(tmp_path):
    """Check a run stopped after 2 rounds resumes from its checkpoint, not from scratch."""
    ckpt = tmp_path / "ckpt.npz"
    first = _run(_grid(3), rounds=2, checkpoint=ckpt)
    arrays, done, _ = load_checkpoint(ckpt)
    assert done == 2
    for k, v in first.arrays.items():
        np.testing.assert_array_equal(arrays[k].numpy(), v.numpy())
    grid = _grid(3)
    resumed = _run(grid, rounds=3, checkpoint=ckpt)
    assert load_checkpoint(ckpt)[1] == 3
    rounds_sent = {e["round"] for e in resumed.wire if e["phase"] == "train"}
    assert rounds_sent == {3}  # one round left, the run's third; no normaliser round again
    assert not any(np.array_equal(resumed.arrays[k].numpy(), v.numpy())
                   for k, v in first.arrays.items() if v.numpy().size > 1)


def test_failing_device_does_not_stall_the_round():
    """Check that a device whose ClientApp crashes yields an error reply, not a hung run."""
    res = _run(_grid(4), rounds=2, min_available_nodes=3)
    assert res.rounds_done == 2
    grid = _grid(4)
    grid.contexts[1003].run_config["dataset"] = "no-such-dataset"  # this device breaks
    broken = _run(grid, rounds=2)
    errors = [e for e in broken.wire if e["error"]]
    assert errors and all(e["node"] == 1003 for e in errors)
    assert {e["reason"] for e in broken.rejected} == {"error"}
    assert all(np.isfinite(v.numpy()).all() for v in broken.arrays.values())


def test_only_parameters_and_metrics_cross_the_wire():
    """Check each reply holds the model's arrays and scalar metrics, far smaller than the data."""
    res = _run(_grid(3), rounds=2, evaluate=True)
    shapes = {k: list(v.numpy().shape) for k, v in res.arrays.items()}
    raw_bytes = device_data("pump", "", 0, 3).raw_train[0][0].nbytes
    for e in res.wire:
        assert e["config_records"] == []
        assert set(e["metric_records"]) == {"metrics"}
        if e["phase"] == "train" and e["round"] and e["array_records"].get("arrays", {}) \
                and "count" not in e["array_records"]["arrays"]:
            assert e["array_records"] == {"arrays": shapes}
            assert set(e["metric_records"]["metrics"]) == {"num-examples", "unit-weight",
                                                                "train-loss", "dp-sgd-epsilon",
                                                                "dp-sgd-noise", "dp-sgd-rate",
                                                                "dp-sgd-steps"}
        if e["phase"] == "evaluate":
            assert e["array_records"] == {}
            assert set(e["metric_records"]["metrics"]) == {"eval-loss", "num-examples",
                                                           "unit-weight"}
        assert e["array_bytes"] < raw_bytes / 5


def test_personalised_model_beats_global_on_own_data():
    """Check fine-tuning the global AE on a device's own history lowers its held-back error."""
    res = _run(_grid(4), rounds=2)
    dev = pump_fleet(4, n_samples=1000, seed=0)[2]
    norm = res.normaliser
    z = np.zeros(len(dev.X_train), dtype=np.int64)
    X = norm.transform(dev.X_train.astype(np.float64), z).astype(np.float32)
    out = personalise(res.state_dict(), "ae", X[:450], None, X[450:], None, epochs=15, lr=3e-3)
    assert out["personal_rmse"] < out["global_rmse"]


def test_personalise_keeps_the_global_model_when_fine_tuning_is_worse():
    """Check personalise keeps whichever model does better on the held-back data and says
    which: with a learning rate far too high the fine-tuned model is much worse, and its
    state was returned all the same (held-back RMSE 1.06 global, 1498 personal)."""
    from edgewise.federated.model import rmse

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (40 * X[:, 0] + 60).astype(np.float32)
    state = build_model("rul", 3, seed=0).state_dict()
    held = (X[150:], y[150:])
    for lr, kept in ((50.0, "global"), (0.01, "personal")):
        out = personalise(state, "rul", X[:150], y[:150], *held, epochs=30, lr=lr)
        assert out["kept"] == kept, (lr, out["global_rmse"], out["personal_rmse"])
        model = build_model("rul", 3)
        model.load_state_dict(out["state_dict"])
        assert rmse(model, *held) == pytest.approx(min(out["global_rmse"],
                                                       out["personal_rmse"]))
        if kept == "global":
            assert out["personal_rmse"] > 2 * out["global_rmse"]
            assert all(torch.equal(out["state_dict"][k], v) for k, v in state.items())


def test_registered_model_verifies_and_keeps_its_metadata(tmp_path):
    """Check the global model lands in the registry signed, with epsilon, delta, unit,
    strategy, rounds and fleet size in the verified manifest, and that tampering is caught."""
    from edgewise.errors import SignatureError
    from edgewise.registry import Registry, verify

    res = _run(_grid(3), rounds=1)
    entry = register_global_model(res.state_dict(), tmp_path, "pump-ae", {
        "privacy": {"unit": "device", "epsilon": 7.5, "delta": 1e-5},
        "strategy": res.strategy, "rounds": 1, "num_devices": 3})
    assert entry["version"] == "1" and entry["target"] == "group:federated"
    state, meta = load_global_model(tmp_path, "pump-ae")
    assert set(state) == set(res.state_dict())
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in res.state_dict().items())
    assert meta["strategy"] == "fedavg+robust" and meta["rounds"] == 1
    assert meta["num_devices"] == 3 and meta["privacy"]["unit"] == "device"
    assert meta["metrics"]["epsilon"] == 7.5 and meta["metrics"]["delta"] == 1e-5
    reg = Registry(tmp_path)
    rel = reg.releases("group:federated")[-1]
    pub = {reg.key_id: reg.public_key_bytes}
    m = verify(rel.manifest_bytes, rel.signature, reg.blob(rel.manifest.sha256),
               trusted_keys=pub, device_id="pump-1", groups=["federated"])
    assert m.key_id == entry["key_id"] and m.metadata["metrics"]["num_devices"] == 3
    # a flipped bit in the stored model, or a forged manifest, does not verify
    blob = tmp_path / "registry" / "blobs" / m.sha256
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="corrupted or tampered"):
        load_global_model(tmp_path, "pump-ae")
    forged = rel.manifest_bytes.replace(b'"rounds"', b'"rounds_"')
    assert forged != rel.manifest_bytes
    with pytest.raises(SignatureError, match="does not verify"):
        verify(forged, rel.signature, bytes(data), trusted_keys=pub, device_id="x",
               groups=["federated"])
    reg.close()
    # the next run is the next version, with its own release counter
    entry2 = register_global_model(res.state_dict(), tmp_path, "pump-ae", {"rounds": 2})
    assert (entry2["version"], entry2["release"]) == ("2", 2)


def test_secagg_round_completes_and_equals_plain_fedavg():
    """Check two SecAgg+ rounds (Flower's workflow + mod) give FedAvg's model up to
    SecAgg+'s quantisation, and that the robust rules are refused with it."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.server_app import fit_normaliser

    norm = fit_normaliser(_grid(3), 1, 3)
    plain = _run(_grid(3), rounds=2, robust=False, normaliser=norm)
    grid = _grid(3)
    sec = _run(grid, rounds=2, robust=False, normaliser=norm, secagg=True)
    assert sec.strategy == "fedavg+secagg+"
    assert sec.privacy.unit == "none" and sec.privacy.epsilon is None
    initial = build_model("ae", 6, seed=0).state_dict()
    for k, v in plain.arrays.items():
        np.testing.assert_allclose(sec.arrays[k].numpy(), v.numpy(), atol=1e-3)
    assert max(float(np.abs(sec.arrays[k].numpy() - initial[k].numpy()).max())
               for k in initial) > 0.05  # the rounds did train
    with pytest.raises(InvalidParameterError, match="robust rule 'trimmed'"):
        run_federated(_grid(3), kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                      rounds=1, strategy="trimmed", secagg=True)


def test_secagg_with_a_dp_sgd_budget_reports_what_the_devices_spent():
    """Check that under SecAgg+ (which masks the parameters, not the metrics) a run with a
    record-level budget of 4 over devices that each keep a limit of 3 reports the ε the
    devices spent (just under 3, unit ``record``) and their noise, as without SecAgg+; it
    used to report the 4.0 asked for, with noise multiplier 0."""
    rc = {"dataset": "pump", "dp-sgd-epsilon": 4.0, "num-server-rounds": 1}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 3, "max-dp-epsilon": 3.0}
                               for i in range(3)], rc)
    sec = _run(grid, rounds=1, robust=False, secagg=True, dp_sgd_epsilon=4.0)
    assert sec.privacy.unit == "record" and 2.9 < sec.privacy.epsilon <= 3.0
    assert sec.privacy.record_epsilon == sec.privacy.epsilon and sec.privacy.num_devices == 3
    assert sec.privacy.noise_multiplier > 0
    assert sec.train_metrics[1]["dp-sgd-epsilon"] == sec.privacy.epsilon
