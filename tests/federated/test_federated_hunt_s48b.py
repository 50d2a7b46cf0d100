"""Hunt s48b: device-level DP parameters, NaN updates under device-level DP, checkpoints.

1. ``run_federated`` and the ServerApp (a ``flwr run`` run config) did not check the
   device-level DP parameters the CLI checks: ``dp_clip`` NaN or inf with ``dp_noise`` > 0
   left every update unclipped (Flower's scale ``min(1, C / norm)`` is 1) and made the
   noise's sd NaN or inf, and the all-NaN model was published; a NaN or negative
   ``dp_noise`` ran without the DP asked for, silently; an out-of-range ``dp_delta`` failed
   only after the rounds ran. Each is now refused in one line, naming the parameter, its
   value and the range, before any device is asked anything
   (:func:`edgewise.federated.privacy.check_device_dp`).
2. Under device-level DP with ``robust=False`` (the Python API), ``_DeviceDP`` clipped a
   NaN update (``min(1, C / NaN)`` = 1: not at all) into the mean, and the released model
   was all NaN. A non-finite update is now left out (a 0 update over the fixed ``m``),
   logged and listed by node, reason ``non-finite``, whatever ``robust`` is.
3. The checkpoint was renamed into place without a sync (the run ledger beside it is
   written durably): after a power loss the rename could survive and the data not. It is
   now written like the ledger, synced, renamed, and the folder synced.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app as ca
from edgewise.federated import server_app as sa
from edgewise.federated.data import ConditionNormaliser
from edgewise.federated.deploy import RUN_DEFAULTS
from edgewise.federated.inprocess import InProcessGrid
from tests.federated.test_hunt_s34 import _task_identity  # noqa: F401 (autouse fixture)

torch.set_num_threads(1)
NAN, INF = float("nan"), float("inf")


class _Grid(InProcessGrid):
    """Two in-process pump devices; counts the messages sent, and turns the arrays of
    ``nan_node``'s training replies (not its normaliser statistics) into NaN."""

    def __init__(self, run_config: dict[str, Any] | None = None, nan_node: int | None = None
                 ) -> None:
        super().__init__(ca.app, [{"partition-id": i, "num-partitions": 2} for i in range(2)],
                         {"dataset": "pump", **(run_config or {})})
        self.sent = 0
        self.nan_node = nan_node

    def _deliver(self, msg: Message) -> Message:
        self.sent += 1
        reply = super()._deliver(msg)
        fit = any(c.get("phase") == "fit" for c in msg.content.config_records.values())
        if fit and msg.metadata.dst_node_id == self.nan_node and not reply.has_error():
            for name, rec in list(reply.content.array_records.items()):
                reply.content[name] = ArrayRecord({
                    k: Array(np.full(v.numpy().shape, np.nan, v.numpy().dtype))
                    for k, v in rec.items()})
        return reply


# -- 1. DP parameters out of range are refused before anything runs -------------------------

_BAD = [  # (dp_noise, dp_clip, dp_delta), the parameter named, the value
    (1.0, NAN, 1e-5, "dp_clip", "nan"),
    (1.0, INF, 1e-5, "dp_clip", "inf"),
    (1.0, -1.0, 1e-5, "dp_clip", "-1.0"),
    (INF, 1.0, 1e-5, "dp_noise", "inf"),
    (NAN, 1.0, 1e-5, "dp_noise", "nan"),
    (-1.0, 1.0, 1e-5, "dp_noise", "-1.0"),
    (1.0, 1.0, NAN, "dp_delta", "nan"),
    (0.0, 1.0, 1.0, "dp_delta", "1.0"),
]


@pytest.mark.parametrize(("noise", "clip", "delta", "name", "value"), _BAD)
def test_run_federated_refuses_dp_parameters_out_of_range_before_any_round(
        noise: float, clip: float, delta: float, name: str, value: str) -> None:
    grid = _Grid()
    with pytest.raises(InvalidParameterError, match=rf"^{name} must be .* Got {value}\.$"):
        sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=2,
                         rounds=1, strategy="fedavg", dp_noise=noise, dp_clip=clip,
                         dp_delta=delta)
    assert grid.sent == 0  # not even the normaliser round


def test_a_nan_clip_without_noise_is_unused_and_not_refused() -> None:
    """The clip acts only with device-level noise (the CLI refuses --dp-clip without
    --dp-noise as an option that does nothing; the API keeps taking its default)."""
    from edgewise.federated.privacy import check_device_dp

    check_device_dp(0.0, NAN, 1e-5)


def test_the_server_app_refuses_a_run_config_nan_clip_and_publishes_nothing(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = {**RUN_DEFAULTS, "num-nodes": 2, "min-available-nodes": 2, "out-dir": str(out),
          "num-server-rounds": 1, "strategy": "fedavg", "evaluate": False,
          "dp-noise": 1.0, "dp-clip": NAN}
    grid = _Grid(rc)
    with pytest.raises(InvalidParameterError, match=r"^dp-clip must be a finite number > 0 "
                                                    r"with dp-noise > 0\. Got nan\.$"):
        sa.main(grid, type("Ctx", (), {"run_config": rc})())
    err = json.loads((out / "error.json").read_text())
    assert err == {"error": "dp-clip must be a finite number > 0 with dp-noise > 0. Got nan.",
                   "type": "InvalidParameterError"}
    assert grid.sent == 0
    assert not (out / "result.json").exists() and not (tmp_path / "registry").exists()


# -- 2. a NaN update never reaches the device-level DP mean --------------------------------

def _reply(node: int, w: list[float]) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    return Message(RecordDict({
        "arrays": ArrayRecord({"w": Array(np.asarray(w, np.float32))}),
        "metrics": MetricRecord({"num-examples": 10, "unit-weight": 1, "train-loss": 1.0}),
    }), reply_to=instr)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_device_dp_without_the_screen_leaves_a_non_finite_update_out(bad: float) -> None:
    dp = sa._DeviceDP(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=1e-9,
                      clipping_norm=1.0, num_sampled_clients=3)
    dp.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    dp.round_offset = 2
    arrays, _ = dp.aggregate_train(1, [_reply(1000, [0.3, 0, 0, 0]),
                                       _reply(1001, [bad, 0, 0, 0]),
                                       _reply(1002, [0, 0.6, 0, 0])])
    got = arrays["w"].numpy()
    assert np.isfinite(got).all(), got
    np.testing.assert_allclose(got, [0.1, 0.2, 0, 0], atol=1e-6)  # a 0 update over m = 3
    assert [(e.server_round, e.node_id, e.reason) for e in dp.events] == \
        [(3, 1001, "non-finite")]


def test_run_federated_device_dp_not_robust_publishes_a_finite_model_naming_the_nan_device(
        ) -> None:
    grid = _Grid(nan_node=1001)
    res = sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=2,
                           rounds=1, strategy="fedavg", robust=False, dp_noise=1.0)
    assert all(np.isfinite(v.numpy()).all() for v in res.arrays.values())
    assert [(e["server_round"], e["node_id"], e["reason"]) for e in res.refused] == \
        [(1, 1001, "non-finite")]


# -- 3. the checkpoint is written durably -----------------------------------------------------

def test_the_checkpoint_is_synced_and_its_folder_too(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[os.stat_result] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd)), real(fd))[1])
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"the previous checkpoint")
    arrays = ArrayRecord({"w": Array(np.arange(4, dtype=np.float32))})
    sa._save_checkpoint(path, arrays, 3, ConditionNormaliser(np.zeros((1, 6)), np.ones((1, 6))))
    done, got, norm = sa.read_checkpoint(path)
    assert done == 3 and got["w"].tolist() == [0, 1, 2, 3] and norm is not None
    ino = path.stat().st_ino
    assert any(s.st_ino == ino and stat.S_ISREG(s.st_mode) for s in synced), \
        "the checkpoint's data was not synced before the rename"
    assert any(s.st_ino == tmp_path.stat().st_ino and stat.S_ISDIR(s.st_mode) for s in synced), \
        "the folder was not synced after the rename"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
