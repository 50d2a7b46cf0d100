"""Record-level DP budgets: reported ε is what Opacus spends, a run that trained nothing fails
without registering a model, and a device's privacy ledger holds its limit whatever the
server declares."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from edgewise.federated.client_app import app, dp_sgd_budget
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.ledger import LedgerEntry, PrivacyBudgetError, PrivacyLedger
from edgewise.federated.privacy import (
    composed_epsilon,
    dp_sgd_epsilon,
    dp_sgd_history,
    dp_sgd_noise_for_epsilon,
    opacus_sampling,
)
from edgewise.federated.server_app import FederatedRunError, main, run_federated

torch.set_num_threads(1)
logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's per-order notes


def _grid(node_configs: list[dict], run_config: dict, run_id: int = 1) -> InProcessGrid:
    return InProcessGrid(app, node_configs, {"dataset": "pump", **run_config}, run_id=run_id)


def _run(grid: InProcessGrid, rounds: int, **kw):
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1,
                         num_nodes=len(list(grid.get_node_ids())), rounds=rounds,
                         strategy="fedavg", robust=False, **kw)


# -- 3. the accountant uses the sampling rate Opacus really uses ----------------------------

def _opacus_spent(n_records: int, batch: int, z: float, epochs: int) -> float:
    """Train like ``train_local`` does (Opacus DPDataLoader from a plain DataLoader, then
    ``make_private``) and read Opacus's own RDP accountant."""
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader

    X = torch.randn(n_records, 3)
    loader = DPDataLoader.from_data_loader(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, X), batch_size=batch))
    model = torch.nn.Linear(3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, opt, loader = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=loader, noise_multiplier=z, max_grad_norm=1.0,
            poisson_sampling=False)
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(xb), yb).backward()
                opt.step()
        return float(engine.accountant.get_epsilon(1e-5))


@pytest.mark.parametrize(("n_records", "batch", "epochs"), [(445, 300, 1), (600, 32, 2)])
def test_reported_epsilon_is_what_opacus_spends(n_records, batch, epochs):
    """Check the ε a device reports for its calibrated DP-SGD equals what Opacus's own RDP
    accountant counts after really training that way. 445 records at batch 300 used to be
    reported as 7.996 while Opacus spent 10.93 (it samples at 1/ceil(445/300) = 0.5, twice an
    epoch, not at 300/445 once)."""
    z = dp_sgd_noise_for_epsilon(8.0, batch, n_records, epochs)
    reported = dp_sgd_epsilon(z, batch, n_records, epochs)
    assert 7.9 < reported <= 8.0
    spent = _opacus_spent(n_records, batch, z, epochs)
    assert spent == pytest.approx(reported, rel=0.01)


@pytest.mark.parametrize(("n_records", "batch"), [(445, 300), (600, 32), (93, 1), (10, 64)])
def test_sampling_is_the_one_of_opacus_data_loader(n_records, batch):
    """Check rate and steps per epoch against Opacus's DPDataLoader, including 93 batches,
    where its float 1/(1/93) gives 92 steps."""
    from opacus.data_loader import DPDataLoader

    dl = DPDataLoader.from_data_loader(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(n_records, 1)), batch_size=batch))
    assert opacus_sampling(batch, n_records) == (dl.sample_rate, len(dl))


# -- 1. an impossible budget, or a run in which every device failed -------------------------

def test_impossible_budget_fails_the_run_instead_of_reporting_no_dp():
    """Check that a budget no device can meet (every device fails in round 1) ends the run
    with FederatedRunError naming the round and the devices' reason; it used to return the
    untrained initial model labelled 'no DP'."""
    grid = _grid([{"partition-id": i, "num-partitions": 3} for i in range(3)],
                 {"dp-sgd-epsilon": 1e-4, "num-server-rounds": 2})
    with pytest.raises(FederatedRunError, match=r"Round 1: every one of the 3 devices failed"
                                                r".*No noise multiplier up to 100"):
        _run(grid, rounds=2, dp_sgd_epsilon=1e-4)


def test_asked_for_dp_but_none_reported_is_not_no_dp():
    """Check a run that asked for record-level DP-SGD but got no ε from any device fails
    rather than reporting unit 'none'. (Without the robust screen too, every update
    stating no DP-SGD mechanism is now refused, no-dp-sgd, so nothing is aggregated.)"""
    grid = _grid([{"partition-id": i, "num-partitions": 2} for i in range(2)], {})
    with pytest.raises(FederatedRunError, match=r"No round of 1 .*updates refused: no-dp-sgd"):
        _run(grid, rounds=1, dp_sgd_epsilon=4.0)


def test_secagg_round_that_aggregates_nothing_fails():
    """Check that under SecAgg+ a round in which every device fails raises instead of
    returning the initial model with the budget claimed."""
    grid = _grid([{"partition-id": i, "num-partitions": 3} for i in range(3)],
                 {"dp-sgd-epsilon": 1e-4, "num-server-rounds": 1})
    with pytest.raises(FederatedRunError, match=r"SecAgg\+ round\(s\) \[1\] of 1"):
        _run(grid, rounds=1, secagg=True, dp_sgd_epsilon=1e-4)


def test_secagg_reports_the_epsilon_spent_not_the_budget_asked():
    """Check that under SecAgg+ the run's ε is the accountant's for what the devices ran,
    as without SecAgg+: a server that declares 1 round of a budget of 2 and runs 2 rounds
    reports the 2 rounds' ε (each device's ledger, composed), not the 2.0 asked for."""
    grid = _grid([{"partition-id": i, "num-partitions": 2} for i in range(2)],
                 {"dp-sgd-epsilon": 2.0, "num-server-rounds": 1})
    res = _run(grid, rounds=2, secagg=True, dp_sgd_epsilon=2.0)
    ledgers = [PrivacyLedger(state=ctx.state).entries() for ctx in grid.contexts.values()]
    assert [[e.server_round for e in entries] for entries in ledgers] == [[1, 2], [1, 2]]
    spent = max(composed_epsilon([dp_sgd_history(e.noise_multiplier, e.batch_size, e.records,
                                                 epochs=1) for e in entries])
                for entries in ledgers)
    assert res.privacy.unit == "record" and spent > 2.2
    assert res.privacy.epsilon == pytest.approx(spent, rel=1e-9)
    assert res.privacy.record_epsilon == res.privacy.epsilon and res.privacy.rounds == 2
    assert res.privacy.noise_multiplier == pytest.approx(
        np.mean([e.noise_multiplier for entries in ledgers for e in entries]))


def test_server_app_registers_nothing_when_the_run_fails(tmp_path):
    """Check the deployment entry point writes error.json and registers, signs and publishes
    no model when every device fails (it used to sign the untrained model as 'no DP')."""
    out, publish = tmp_path / "out", tmp_path / "gateway"
    rc = {"dataset": "pump", "num-server-rounds": 1, "strategy": "fedavg", "num-nodes": 2,
          "min-available-nodes": 2, "dp-sgd-epsilon": 1e-4, "evaluate": False,
          "out-dir": str(out), "data-dir-publish": str(publish)}
    grid = _grid([{"partition-id": i, "num-partitions": 2} for i in range(2)], rc)
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=rc)
    with pytest.raises(FederatedRunError):
        main(grid, ctx)
    error = json.loads((out / "error.json").read_text())
    assert error["type"] == "FederatedRunError" and "every one of the 2" in error["error"]
    assert not (out / "result.json").exists()
    assert not (publish / "registry").exists()


# -- 4. the device-side privacy ledger ------------------------------------------------------

def test_device_ledger_holds_the_limit_when_the_server_lies_about_rounds(tmp_path):
    """Check a server that declares 1 round and runs 3 cannot make a device with
    --max-epsilon 2 spend more than 2: its ledger refuses rounds 2 and 3 (error replies,
    no training). A device without a limit spends 3 rounds, composed by the accountant,
    and the run reports that, not the 2 it declared."""
    cfgs = [{"partition-id": i, "num-partitions": 3, "max-dp-epsilon": 2.0 if i < 2 else 0.0,
             "privacy-ledger": str(tmp_path / f"ledger-{i}.json")} for i in range(3)]
    grid = _grid(cfgs, {"dp-sgd-epsilon": 2.0, "num-server-rounds": 1})
    res = _run(grid, rounds=3, dp_sgd_epsilon=2.0)
    failed = {(e["round"], e["node"]) for e in res.wire if e["phase"] == "train" and e["error"]}
    assert failed == {(2, 1000), (2, 1001), (3, 1000), (3, 1001)}
    for i in range(2):
        ledger = PrivacyLedger(tmp_path / f"ledger-{i}.json")
        assert [e.server_round for e in ledger.entries()] == [1]
        assert 1.9 < ledger.epsilon() <= 2.0
    free = PrivacyLedger(tmp_path / "ledger-2.json")
    assert [e.server_round for e in free.entries()] == [1, 2, 3]
    per_round = [e.epsilon_round for e in free.entries()]
    spent = free.epsilon()
    assert spent == pytest.approx(free.entries()[-1].epsilon_total)
    assert max(per_round) < spent < sum(per_round)  # composed, tighter than a sum
    assert res.privacy.epsilon == pytest.approx(spent, rel=1e-6) and spent > 2.5


def test_device_ledger_persists_across_runs(tmp_path):
    """Check the ledger file carries what a device spent into its next runs: with its limit
    already spent it trains a second run only with noise that keeps the whole ledger within
    the limit, and refuses a run once the limit is below what it spent."""
    def cfgs(limit: float) -> list[dict]:
        return [{"partition-id": i, "num-partitions": 2, "max-dp-epsilon": limit,
                 "privacy-ledger": str(tmp_path / f"ledger-{i}.json")} for i in range(2)]

    rc = {"dp-sgd-epsilon": 2.0, "num-server-rounds": 1}
    first = _run(_grid(cfgs(2.0), rc, run_id=1), rounds=1, dp_sgd_epsilon=2.0)
    second = _run(_grid(cfgs(2.0), rc, run_id=2), rounds=1, dp_sgd_epsilon=2.0)
    assert second.privacy.noise_multiplier > 5 * first.privacy.noise_multiplier
    ledger = PrivacyLedger(tmp_path / "ledger-0.json")
    assert [e.run for e in ledger.entries()] == ["1", "2"]
    assert first.privacy.epsilon < ledger.epsilon() <= 2.0
    with pytest.raises(FederatedRunError, match=r"epsilon=1\.5 .*after the 38 steps already"):
        _run(_grid(cfgs(1.5), rc, run_id=3), rounds=1, dp_sgd_epsilon=2.0)
    assert len(PrivacyLedger(tmp_path / "ledger-0.json").entries()) == 2


def test_without_a_ledger_file_the_run_state_holds_the_limit():
    """Check a device given no ledger file still refuses the rounds past its limit within
    the run (the ledger lives in its Flower Context.state)."""
    cfgs = [{"partition-id": i, "num-partitions": 2, "max-dp-epsilon": 1.0} for i in range(2)]
    grid = _grid(cfgs, {"num-server-rounds": 1})
    with pytest.raises(FederatedRunError, match=r"Round 2: .*past its limit"):
        _run(grid, rounds=2)
    assert [e.server_round for e in PrivacyLedger(state=grid.contexts[1000].state).entries()] \
        == [1]


def test_calibration_counts_what_the_ledger_already_spent():
    """Check a device with earlier spending calibrates more noise so that its whole ledger
    stays within its limit."""
    prior = ((1.0, 1 / 19, 38),)
    z_fresh, _ = dp_sgd_budget({"num-server-rounds": 2}, 600, max_epsilon=4.0)
    z_after, _ = dp_sgd_budget({"num-server-rounds": 2}, 600, max_epsilon=4.0, prior=prior)
    assert z_after > z_fresh
    q, per_epoch = opacus_sampling(32, 600)
    assert 3.9 < composed_epsilon([*prior, (z_after, q, 2 * per_epoch)]) <= 4.0


def test_a_corrupt_ledger_refuses_to_train(tmp_path):
    """Check an unreadable ledger stops the device (what it spent is unknown) instead of
    starting from zero."""
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    entry = LedgerEntry(run="1", server_round=1, noise_multiplier=1.0, sampling_rate=0.5,
                        steps=2, records=445, batch_size=300)
    with pytest.raises(PrivacyBudgetError, match="cannot be read"):
        PrivacyLedger(path).spend(entry, max_epsilon=8.0)
    assert path.read_text() == "{not json"


def test_ledger_epsilon_is_composed_epsilon_of_its_history(tmp_path):
    """Check the ledger's ε (whole, per run, and each round's ``epsilon_total``) is
    ``composed_epsilon`` of the mechanisms it holds, over several runs with different
    mechanisms, and that composition is the RDP accountant's over the whole history."""
    import dp_accounting
    from dp_accounting import rdp

    from edgewise.federated.privacy import _ORDERS

    ledger = PrivacyLedger(tmp_path / "ledger.json")
    spends = [("1", 1, 1.2, 0.5, 2), ("1", 2, 1.2, 0.5, 2), ("2", 1, 0.9, 1 / 19, 19),
              ("3", 1, 2.0, 0.25, 8)]
    totals = [ledger.spend(LedgerEntry(run=run, server_round=r, noise_multiplier=z,
                                       sampling_rate=q, steps=s, records=600, batch_size=32))
              for run, r, z, q, s in spends]
    history = [(z, q, s) for _, _, z, q, s in spends]
    assert totals == [composed_epsilon(history[:i + 1]) for i in range(len(history))]
    assert [e.epsilon_total for e in ledger.entries()] == totals
    assert ledger.epsilon() == composed_epsilon(history) == totals[-1]
    assert ledger.epsilon(run="1") == composed_epsilon(history[:2])
    assert ledger.epsilon(1e-6) == composed_epsilon(history, 1e-6)
    accountant = rdp.RdpAccountant(_ORDERS)
    for z, q, s in history:
        accountant.compose(dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), s))
    assert ledger.epsilon() == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)


def test_ledger_rounds_are_json_a_person_can_read(tmp_path):
    """Check each round's entry names its mechanism and its ε (alone and composed)."""
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path)
    for r in (1, 2):
        ledger.spend(LedgerEntry(run="5", server_round=r, noise_multiplier=1.2,
                                 sampling_rate=0.5, steps=2, records=445, batch_size=300))
    doc = json.loads(Path(path).read_text())
    assert doc["format"] == "edgewise-privacy-ledger/1"
    first, second = doc["rounds"]
    assert first["epsilon_round"] == pytest.approx(second["epsilon_round"])
    assert second["epsilon_total"] == pytest.approx(composed_epsilon([(1.2, 0.5, 4)]))
    assert np.isfinite(first["epsilon_total"]) and first["delta"] == 1e-5
