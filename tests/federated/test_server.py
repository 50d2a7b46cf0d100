"""Server side: checkpoints resume, failing devices do not stall, only parameters cross."""

from __future__ import annotations

import numpy as np
import torch

from edgewise.federated.client_app import app, device_data
from edgewise.federated.data import pump_fleet
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.personalise import personalise
from edgewise.federated.publish import load_global_model, publish_global_model
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
    assert rounds_sent == {1}  # one round left; no normaliser round again
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
            assert set(e["metric_records"]["metrics"]) == {"num-examples", "train-loss"}
        if e["phase"] == "evaluate":
            assert e["array_records"] == {}
            assert set(e["metric_records"]["metrics"]) == {"eval-loss", "num-examples"}
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


def test_published_model_round_trips_with_metadata(tmp_path):
    """Check the versioned file keeps parameters, epsilon and strategy, and detects tampering."""
    res = _run(_grid(3), rounds=1)
    path = publish_global_model(res.state_dict(), tmp_path, "pump-ae",
                                {"privacy": res.privacy.to_dict(), "strategy": res.strategy})
    state, meta = load_global_model(path)
    assert meta["strategy"] == "fedavg+robust" and meta["version"] == 1
    assert set(state) == set(res.state_dict())
    path.write_bytes(path.read_bytes() + b"x")
    try:
        load_global_model(path)
    except ValueError as exc:
        assert "SHA-256" in str(exc)
    else:
        raise AssertionError("tampered model loaded")
