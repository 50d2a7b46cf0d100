"""Hunt s48: federated learning, its ledgers and its screens.

1. a device's privacy ledger holding an entry that is no object, or lacks a field (a
   hand-edited or half-restored file: ``{"run": "1", "server_round": 1}``), ended
   ``edgewise federate client`` in a ``TypeError: LedgerEntry.__init__() missing 5
   required positional arguments`` traceback, and every training round of a SuperNode
   already running in the same ``TypeError`` (not the one-line refusal a ledger that
   cannot be read gets); now it is that refusal, naming the entry and the fields missing.
2. a run resumed from a checkpoint whose run privacy ledger was older than it (a backup of
   the out dir that copied the ledger before the checkpoint, a ledger restored or copied
   from another time, one cut short) resumed without a word, and the ε it published left
   out every round the checkpoint held beyond the ledger: 2 rounds' device-level ε for a
   model of 3 (ε 16.5 "over 2 rounds" where its 3 rounds spent 21.4). Each
   ledger entry is written, durably, before its round's checkpoint, so such a pair is now
   refused, naming the rounds the ledger lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from edgewise.federated import client_app as ca
from edgewise.federated import server_app as sa
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.ledger import (
    LEDGER_FORMAT,
    LedgerEntry,
    PrivacyBudgetError,
    PrivacyLedger,
    RunLedger,
)
from tests.federated.test_cli_params import edgewise_in_process

# -- 1. a ledger entry that is no entry: one line, not a TypeError ---------------------------

_DAMAGED = [
    ([{"run": "1", "server_round": 1}], (r"entry 1 of 1, .*'noise_multiplier', "
                                         r"'sampling_rate', 'steps', 'records', 'batch_size' "
                                         r"missing")),
    ([7], r"entry 1 of 1, 7: not an object"),
]


def _write(path: Path, rounds: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": LEDGER_FORMAT, "rounds": rounds}))


@pytest.mark.parametrize(("rounds", "why"), _DAMAGED)
def test_a_ledger_entry_missing_fields_refuses_to_spend(tmp_path: Path, rounds: list[Any],
                                                        why: str) -> None:
    path = tmp_path / "ledger.json"
    _write(path, rounds)
    before = path.read_text()
    entry = LedgerEntry(run="2", server_round=1, noise_multiplier=1.0, sampling_rate=0.05,
                        steps=20, records=600, batch_size=32)
    # TypeError (missing positional arguments) / AttributeError ('int' ... 'items') before
    with pytest.raises(PrivacyBudgetError, match=rf"cannot be read \({why}\)"):
        PrivacyLedger(path).spend(entry, max_epsilon=8.0)
    with pytest.raises(PrivacyBudgetError, match="cannot be read"):
        PrivacyLedger(path).spend(entry)  # without a limit too: what was spent is unknown
    assert path.read_text() == before


def test_a_device_with_a_damaged_ledger_entry_refuses_to_train(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    _write(path, _DAMAGED[0][0])
    ctx = Context(run_id=3, node_id=1, state=RecordDict(),
                  node_config={"partition-id": 0, "num-partitions": 3,
                               "max-dp-epsilon": 8.0, "privacy-ledger": str(path)},
                  run_config={"dataset": "pump", "dp-sgd-epsilon": 4.0})
    from edgewise.federated.model import build_model

    state = dict(build_model("ae", 6).state_dict())
    norm = ca.ConditionNormaliser(np.zeros((1, 6)), np.ones((1, 6)))
    # PrivacyBudgetError is what train() answers with an error reply saying why; the
    # TypeError before went out as Flower's traceback of the ClientApp
    with pytest.raises(PrivacyBudgetError, match="cannot be read"):
        ca._fit(ca._data(ctx), norm, state, ctx, 1)


@pytest.mark.parametrize(("rounds", "why"), _DAMAGED)
def test_federate_client_names_a_damaged_ledger_entry_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        rounds: list[Any], why: str) -> None:
    ledger = tmp_path / "federated" / "privacy-ledger-0.json"
    _write(ledger, rounds)
    code, err = edgewise_in_process(
        ["federate", "client", "--superlink", "127.0.0.1:9092", "--data-dir", str(tmp_path)],
        monkeypatch, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: Privacy ledger {ledger} cannot be read (entry 1 of 1")


# -- 2. a checkpoint holding rounds its run ledger lacks is not resumed ----------------------

def _run(rounds: int, ckpt: Path, **kw: Any) -> sa.FederatedResult:
    grid = InProcessGrid(ca.app, [{"partition-id": i, "num-partitions": 2} for i in range(2)],
                         {"dataset": "pump"})
    return sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=2,
                            rounds=rounds, strategy="fedavg", checkpoint=ckpt, **kw)


def test_a_checkpoint_newer_than_its_privacy_ledger_is_not_resumed(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint.npz"
    ledger = sa.run_ledger_path(ckpt)
    _run(1, ckpt, dp_noise=1.0)
    after_round_1 = ledger.read_text()  # the backup that copied the ledger first
    _run(2, ckpt, dp_noise=1.0)  # resumed: round 2, the checkpoint now holds 2 rounds
    assert sa.load_checkpoint(ckpt)[1] == 2
    ledger.write_text(after_round_1)
    # before: resumed, and published device_level_epsilon(1.0, 2) for a model of 3 rounds
    with pytest.raises(sa.FederatedRunError,
                       match=r"holds 2 round\(s\), but its privacy ledger .* records nothing "
                             r"of round\(s\) \[2\]"):
        _run(3, ckpt, dp_noise=1.0)
    assert ledger.read_text() == after_round_1  # nothing recorded, nothing trained


@pytest.mark.parametrize("private", [{"dp_noise": 1.0}, {"dp_sgd_epsilon": 8.0}])
def test_check_resume_names_the_rounds_its_ledger_lacks(tmp_path: Path,
                                                        private: dict[str, float]) -> None:
    from edgewise.federated.model import build_model

    ckpt = tmp_path / "checkpoint.npz"
    model = build_model("ae", 6).state_dict()
    np.savez(ckpt, __round__=np.array(3), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)), **{f"p:{k}": v.numpy() for k, v in model.items()})

    def ledger(rounds: tuple[int, ...]) -> None:
        led = RunLedger(sa.run_ledger_path(ckpt))
        led.reset()
        for r in rounds:
            if "dp_noise" in private:
                led.device_round(r, noise_multiplier=1.0, num_devices=3, sample_size=3)
            else:
                led.record_round(r, {"1000": (1.0, 0.05, 20)}, reported=2.4)
            led.aggregated_round(r)

    kw: dict[str, Any] = {"rounds": 5, "num_devices": 3, "model": model, **private}
    ledger((1, 2, 3))
    assert sa.check_resume(ckpt, **kw) == 3  # every round recorded: resumed
    ledger((1,))  # cut short after round 1: resumed before, its epsilon 2 rounds short
    with pytest.raises(sa.FederatedRunError, match=r"records nothing of round\(s\) \[2, 3\]"):
        sa.check_resume(ckpt, **kw)
