"""Federated server-side bugs from hunt s41, each proved in process.

Hunted: a device rolled back on the model made the publish fail after training (version
left published, budget spent); a malformed SecAgg+ reply ended the ServerApp in Flower's
``ValueError``/``KeyError`` naming no device; ``--resume`` under another rule or fleet size
was accepted, the signed manifest naming only the new one; a damaged run ledger entry gave
a traceback on ``--resume``; a registry version named with a Unicode digit broke every
later federated publish.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from edgewise.errors import InvalidParameterError
from tests.federated.test_rollout_target_and_version_race import _invoke

NAME = "federated-pump"


def _versions(d: Path) -> list[str]:
    from edgewise.registry import Registry

    reg = Registry(d)
    try:
        return [v.version for v in reg.versions(NAME)]
    finally:
        reg.close()


def _rolled_back(d: Path) -> None:
    """Device pump-7, in group federated, rolled back by the operator to version 1 of the
    federated model while version 2 is released to the group."""
    from edgewise.federated.publish import register_global_model
    from edgewise.registry import Registry
    from edgewise.security import Security

    sec = Security(d)
    sec.add_device("pump-7", groups=["federated"])
    sec.close()
    for v in (0.0, 1.0):
        register_global_model({"w": torch.full((2,), v)}, d, NAME, {"rounds": 1})
    reg = Registry(d)
    reg.rollback(NAME, "1", "device:pump-7")
    reg.close()


# -- 3: a device's rollback order ------------------------------------------------------------

@pytest.mark.parametrize("command", ["server", "demo"])
def test_a_group_with_a_rolled_back_device_is_refused_before_training(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """The release at the end would be refused (the device's rollback order holds against
    the group): refused in one line before any round, naming the device and the order."""
    _rolled_back(data_dir)
    r, started = _invoke(monkeypatch, command, "--data-dir", str(data_dir))
    assert (r.exit_code, started) == (2, []), r.output
    line = r.output.strip()
    assert "\n" not in line and line.startswith("error: --rollout-to group:federated: ")
    assert "device 'pump-7'" in line and "rollback order to version '1'" in line
    assert "--keep-rollbacks" not in line  # not an option of `federate`
    r, started = _invoke(monkeypatch, command, "--data-dir", str(data_dir),
                         "--rollout-to", "device:pump-7")  # the device itself: on purpose
    assert r.exit_code == 0 and len(started) == 1, r.output


def test_publish_refuses_a_rolled_back_group_before_publishing(data_dir: Path) -> None:
    """At the end of a run the same rule comes first: nothing published, no version left
    without its release."""
    from edgewise.federated.publish import register_global_model

    _rolled_back(data_dir)
    with pytest.raises(InvalidParameterError, match="rolled back on 'federated-pump'"):
        register_global_model({"w": torch.full((2,), 3.0)}, data_dir, NAME, {"rounds": 5})
    assert _versions(data_dir) == ["1", "2"]


def test_a_release_refused_after_publishing_takes_the_version_back(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback order signed between the check and the release (here: the check skipped)
    has the release refused: the version just published is taken back, and the error
    says so, instead of a version left published and never released."""
    import edgewise.federated.publish as publish

    _rolled_back(data_dir)
    monkeypatch.setattr(publish, "_refuse_held_rollbacks", lambda *_a: None, raising=False)
    with pytest.raises(InvalidParameterError) as refused:
        publish.register_global_model({"w": torch.full((2,), 3.0)}, data_dir, NAME,
                                      {"rounds": 5})
    assert _versions(data_dir) == ["1", "2"]
    assert "Nothing of this run is left in the registry (version '3'" in str(refused.value)
    # the number is free again, and the next run takes it
    monkeypatch.undo()
    from edgewise.security import Security

    sec = Security(data_dir)
    sec.set_device_groups("pump-7", [])
    sec.close()
    assert publish.register_global_model({"w": torch.ones(2)}, data_dir, NAME, {})["version"] \
        == "3"


# -- 7: a version named with a Unicode digit -------------------------------------------------

@pytest.mark.parametrize("odd", ["²", "١٢"])
def test_a_unicode_digit_version_does_not_break_federated_publishes(tmp_path: Path,
                                                                    odd: str) -> None:
    """'²'.isdigit() holds and int('²') fails: such a version must count as a name, not a
    number, and the next federated version is still chosen."""
    from edgewise.federated.publish import next_version, register_global_model
    from edgewise.registry import Registry

    reg = Registry(tmp_path)
    reg.publish(NAME, odd, b"x", format="pickle")
    assert next_version(reg, NAME) == "1"
    reg.close()
    assert register_global_model({"w": torch.zeros(2)}, tmp_path, NAME, {})["version"] == "1"


# -- 6: a damaged run ledger -----------------------------------------------------------------

def _checkpoint(out: Path, rounds: object) -> Path:
    from edgewise.federated.model import build_model

    out.mkdir(parents=True, exist_ok=True)
    sd = build_model("ae", 6).state_dict()
    ck = out / "checkpoint.npz"
    np.savez(ck, __round__=np.array(1), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)), **{f"p:{k}": v.numpy() for k, v in sd.items()})
    (out / "checkpoint.privacy.json").write_text(json.dumps(
        {"format": "edgewise-run-privacy-ledger/1", "rounds": rounds}))
    return ck


@pytest.mark.parametrize(("rounds", "said"), [
    ([{"round": 1, "kind": "device"}], "'noise_multiplier' is missing"),
    ([{"round": 1, "kind": "record", "segment": 0, "devices": {"7": [1.0]}},
      {"round": 1, "kind": "aggregated", "segment": 0}], "device 7's mechanism is [1.0]"),
    ([{"round": "one", "kind": "aggregated", "segment": 0}], "'round' is 'one'"),
    ([{"round": 1, "kind": "aggregated", "segment": 0, "without_dp_sgd": 7}],
     "'without_dp_sgd' is 7"),
    ([["round", 1]], "not an object"),
])
def test_a_damaged_run_ledger_entry_refuses_the_resume_naming_it(
        tmp_path: Path, rounds: list, said: str) -> None:
    """Each entry is checked when the ledger is read: one line naming the entry and what is
    wrong (PrivacyBudgetError, FederatedRunError from check_resume), not a KeyError,
    ValueError or TypeError out of the accounting."""
    from edgewise.federated.ledger import PrivacyBudgetError, RunLedger
    from edgewise.federated.server_app import FederatedRunError, check_resume, run_ledger_path

    ck = _checkpoint(tmp_path / "out", rounds)
    with pytest.raises(PrivacyBudgetError) as bad:
        RunLedger(run_ledger_path(ck)).load()
    assert f"entry 1 of {len(rounds)}" in str(bad.value) and said in str(bad.value)
    with pytest.raises(FederatedRunError, match="cannot be read"):
        check_resume(ck, rounds=3, num_devices=3, dp_noise=1.0)


def test_the_server_cli_refuses_a_damaged_ledger_in_one_line(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _checkpoint(data_dir / "federated" / "server" / "out", [{"round": 1, "kind": "device"}])
    r, started = _invoke(monkeypatch, "server", "--data-dir", str(data_dir), "--resume",
                         "--rounds", "3", "--dp-epsilon", "0")
    assert (r.exit_code, started) == (2, []), r.output
    assert r.output.count("\n") == 1 and "entry 1 of 1" in r.output


# -- 5: --resume under another rule ------------------------------------------------------------

def _train(ck: Path, *, n: int, rounds: int, strategy: str = "fedavg") -> None:
    from edgewise.federated.client_app import app
    from edgewise.federated.inprocess import InProcessGrid
    from edgewise.federated.server_app import run_federated

    cfg = {"dataset": "pump", "local-epochs": 1, "batch-size": 32, "lr": 0.003,
           "dp-sgd-epsilon": 0.0, "seed": 0, "threads": 1, "num-server-rounds": rounds}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)], cfg)
    run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=rounds,
                  strategy=strategy, checkpoint=ck)


@pytest.fixture(scope="module")
def fedavg_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of round 1, written by a FedAvg run of 2 devices."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    ck = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    _train(ck, n=2, rounds=1)
    return ck


def test_resume_under_another_rule_or_fleet_is_refused_by_name(fedavg_checkpoint: Path) -> None:
    """The checkpoint records its rule; another strategy, f, beta or device count is
    refused naming each, so the manifest never names one rule for rounds of another."""
    from edgewise.federated.server_app import FederatedRunError, check_resume

    with pytest.raises(FederatedRunError) as other:
        check_resume(fedavg_checkpoint, rounds=3, num_devices=5, strategy="krum",
                     num_malicious=1)
    why = str(other.value)
    assert "--strategy fedavg (this run: krum)" in why
    assert "--num-malicious 0 (this run: 1)" in why
    assert "--clients (or --min-available) 2 (this run: 5)" in why
    assert check_resume(fedavg_checkpoint, rounds=3, num_devices=2, strategy="fedavg") == 1


def test_the_server_cli_refuses_a_resume_under_another_fleet_size(
        data_dir: Path, fedavg_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    out = data_dir / "federated" / "server" / "out"
    out.mkdir(parents=True)
    for f in fedavg_checkpoint.parent.iterdir():
        shutil.copy(f, out / f.name)
    args = ("server", "--data-dir", str(data_dir), "--resume", "--rounds", "2",
            "--strategy", "fedavg", "--dp-epsilon", "0")
    r, started = _invoke(monkeypatch, *args, "--clients", "3")
    assert (r.exit_code, started) == (2, []), r.output
    assert r.output.count("\n") == 1
    assert "--clients (or --min-available) 2 (this run: 3)" in r.output
    r, started = _invoke(monkeypatch, *args, "--clients", "2")
    assert r.exit_code == 0 and len(started) == 1, r.output


# -- 4: malformed SecAgg+ replies --------------------------------------------------------------

BAD = 1000  # the first device of an InProcessGrid


class _Tamper:
    """The ClientApp, with device ``BAD``'s SecAgg+ replies made malformed (``mode``)."""

    def __init__(self, inner, mode: str) -> None:
        self.inner, self.mode = inner, mode

    def __call__(self, msg, context):
        from flwr.common import bytes_to_ndarray, ndarray_to_bytes

        reply = self.inner(msg, context)
        if context.node_id != BAD or reply.has_error():
            return reply
        cfgs = reply.content.config_records.get("secaggplus_configs")
        if cfgs is None:
            return reply
        if self.mode == "shape" and "masked_params" in cfgs:
            arrs = list(cfgs["masked_params"])
            arrs[1] = ndarray_to_bytes(bytes_to_ndarray(arrs[1]).ravel()[:3])
            cfgs["masked_params"] = arrs
        elif self.mode == "shares" and "shares" in cfgs:
            cfgs["shares"] = list(cfgs["shares"])[:-1]
        elif self.mode == "nids" and "nids" in cfgs:
            cfgs["nids"] = [424242, *list(cfgs["nids"])[1:]]
        return reply


def _secagg(mode: str):
    from edgewise.federated.client_app import app
    from edgewise.federated.inprocess import InProcessGrid
    from edgewise.federated.server_app import run_federated

    logging.getLogger("flwr").setLevel(logging.ERROR)
    n = 3
    cfg = {"num-server-rounds": 1, "dataset": "pump", "local-epochs": 1, "batch-size": 32,
           "lr": 0.003, "dp-sgd-epsilon": 0.0, "secagg": True, "seed": 0, "threads": 1}
    grid = InProcessGrid(_Tamper(app, mode),
                         [{"partition-id": i, "num-partitions": n} for i in range(n)], cfg)
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                         rounds=1, strategy="fedavg", robust=False, secagg=True,
                         round_timeout=30)


@pytest.mark.parametrize(("mode", "stage", "said"), [
    ("shape", "collect_masked_vectors", "masked array 1 is int64 of shape (3,)"),
    ("shares", "unmask", "2 key shares for 3 node ids"),
    ("nids", "unmask", "never sampled"),
])
def test_a_malformed_secagg_reply_is_refused_naming_its_device(mode: str, stage: str,
                                                               said: str) -> None:
    """Flower's workflow never reads the malformed reply (it ended the ServerApp in a
    ValueError or KeyError naming no device): the device is named in the run's refusals
    and taken for a dropout, which SecAgg+ survives with the other two."""
    res = _secagg(mode)
    assert res.rounds_done == 1 and res.skipped_rounds == []
    bad = [e for e in res.rejected if e["reason"] == "malformed"]
    assert len(bad) == 1 and bad[0]["node_id"] == BAD and bad[0]["stage"] == stage
    assert said in bad[0]["detail"]


def test_an_error_inside_the_secagg_workflow_fails_the_run_naming_the_stage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the screen lets through and Flower still trips on ends the run in one
    FederatedRunError naming the round and the stage, not Flower's KeyError."""
    import edgewise.federated.secagg as secagg
    from edgewise.federated.server_app import FederatedRunError

    screen = getattr(secagg, "_ReplyScreen", None)
    if screen is not None:
        monkeypatch.setattr(screen, "_problem", lambda *_a: None)
    with pytest.raises(FederatedRunError) as failed:
        _secagg("nids")
    assert "SecAgg+ round 1 failed at stage 'unmask' (KeyError: 424242)" in str(failed.value)
