"""Privacy holes a report-only hunt found (fedpriv):

1. a NaN noise multiplier (``dp-sgd-noise``/``dp-stats-noise`` = nan in the server's run
   config) passed every ``<= 0`` / ``> max_epsilon`` test: the device trained without DP-SGD
   or wrote ``('stats', nan)`` into its ledger, which then composed to ε 0 for ever;
2. with ``--dp-epsilon 0`` a fleet where some devices ran DP-SGD on their own and one did
   not was reported as record-level DP (unit "record", ε 7.99), plain, under SecAgg+ and
   in the run ledger a ``--resume`` reads;
3. a device stating ``dp-sgd-noise`` 1e-200 passed the screen and the accounting then
   raised ZeroDivisionError (the run wasted, and every ``--resume`` crashed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app as ca
from edgewise.federated.inprocess import SERVER_NODE_ID
from edgewise.federated.ledger import (
    LEDGER_FORMAT,
    LedgerEntry,
    PrivacyBudgetError,
    PrivacyLedger,
    RunLedger,
)
from edgewise.federated.privacy import composed_epsilon, rdp_orders, rdp_to_epsilon
from edgewise.federated.server_app import (
    FederatedRunError,
    WireLog,
    _privacy_report,
    check_resume,
    run_ledger_path,
)
from edgewise.federated.strategies import (
    COUNTS_AGAINST_F,
    DPSGDScreen,
    RobustStrategy,
    aggregate_train_metrics,
    dp_sgd_mechanism,
)

torch.set_num_threads(1)
NAN = float("nan")
DP = {"dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19, "dp-sgd-epsilon": 7.9}
NO_DP = {"dp-sgd-noise": 0.0, "dp-sgd-rate": 0.0, "dp-sgd-steps": 0, "dp-sgd-epsilon": 0.0}
TINY = {**DP, "dp-sgd-noise": 1e-200, "dp-sgd-epsilon": 1.0}


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Flower stamps messages with a task identity; set it as InProcessGrid does."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 0


def _reply(node: int, value: float, metrics: dict[str, Any]) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    return Message(RecordDict({
        "arrays": ArrayRecord({"w": Array(np.full(4, value, np.float32))}),
        "metrics": MetricRecord({"num-examples": 10, "unit-weight": 1, "train-loss": 1.0,
                                 **metrics}),
    }), reply_to=instr)


def _context(node_config: dict[str, Any], run_config: dict[str, Any],
             run_id: int = 1) -> Context:
    return Context(run_id=run_id, node_id=1, node_config=node_config, state=RecordDict(),
                   run_config=run_config)


# 1. NaN noise ------------------------------------------------------------------------------

def test_composed_epsilon_refuses_a_nan_noise_multiplier():
    """composed_epsilon([(nan, .05, 20)]) was 0.0."""
    with pytest.raises(InvalidParameterError, match=r"finite noise multipliers > 0.*nan"):
        composed_epsilon([(NAN, 0.05, 20)])
    with pytest.raises(InvalidParameterError, match="inf"):
        composed_epsilon([(math.inf, 0.05, 20)])


def test_an_rdp_curve_with_nan_is_no_smaller_epsilon():
    """dp-accounting's compute_epsilon returns 0 for a NaN curve."""
    assert rdp_to_epsilon([NAN] * len(rdp_orders())) == math.inf


@pytest.mark.parametrize("key", ["dp-sgd-noise", "dp-sgd-epsilon"])
@pytest.mark.parametrize("bad", [NAN, math.inf, -1.0])
def test_dp_sgd_budget_refuses_a_non_finite_or_negative_setting(key, bad):
    """dp-sgd-noise=nan came back as (nan, 0.0): train_local then skipped Opacus."""
    rc = {"dp-sgd-epsilon": 8.0, key: bad}
    with pytest.raises(InvalidParameterError, match=rf"'{key}'.*{bad!r}.*finite"):
        ca.dp_sgd_budget(rc, 600, max_epsilon=8.0)


def test_dp_sgd_budget_refuses_a_nan_device_limit():
    with pytest.raises(InvalidParameterError, match=r"'max-dp-epsilon'.*nan"):
        ca.dp_sgd_budget({"dp-sgd-epsilon": 8.0}, 600, max_epsilon=NAN)


def test_dp_sgd_budget_refuses_a_stated_noise_below_the_floor():
    with pytest.raises(InvalidParameterError, match=r"'dp-sgd-noise' is 1e-200.*>= 0.01"):
        ca.dp_sgd_budget({"dp-sgd-noise": 1e-200}, 600)
    assert ca.dp_sgd_budget({"dp-sgd-noise": 1.0}, 600)[0] == 1.0  # a real one still works


def test_train_local_refuses_a_nan_noise_multiplier():
    from edgewise.federated.model import build_model, train_local

    X = np.zeros((40, 6), np.float32)
    with pytest.raises(InvalidParameterError, match=r"dp_noise_multiplier.*nan"):
        train_local(build_model("ae", 6), X, dp_noise_multiplier=NAN)


def test_a_fit_with_nan_dp_sgd_noise_is_refused_before_training(tmp_path):
    """_fit trained a plain, noise-free update (identical to non-DP SGD) and reported
    dp-sgd-noise nan, epsilon 0."""
    led = tmp_path / "ledger.json"
    ctx = _context({"partition-id": 0, "num-partitions": 3, "max-dp-epsilon": 8.0,
                    "privacy-ledger": str(led)},
                   {"dataset": "pump", "dp-sgd-noise": NAN, "dp-sgd-epsilon": 8.0})
    data = ca._data(ctx)
    norm = ca.ConditionNormaliser(np.zeros((1, 6)), np.ones((1, 6)))
    from edgewise.federated.model import build_model

    state = dict(build_model("ae", 6).state_dict())
    with pytest.raises(InvalidParameterError, match=r"'dp-sgd-noise' is nan"):
        ca._fit(data, norm, state, ctx, 1)
    assert PrivacyLedger(led).entries() == []


def test_a_stats_request_with_nan_noise_is_refused_and_the_ledger_left_alone(tmp_path):
    """The device wrote ('stats', nan) into its ledger (and then failed), after which the
    ledger composed to epsilon 0 and any server could train it past --max-epsilon."""
    led = tmp_path / "ledger.json"
    ctx = _context({"partition-id": 0, "num-partitions": 3, "max-dp-epsilon": 8.0,
                    "privacy-ledger": str(led)}, {"dataset": "pump"})
    msg = Message(RecordDict({"config": ConfigRecord({
        "phase": "stats", "dp-stats-noise": NAN, "dp-stats-lower": [0.0] * 6,
        "dp-stats-upper": [1.0] * 6})}), dst_node_id=1, message_type="train", group_id="1")
    reply = ca.train(msg, ctx)
    assert reply.has_error()
    assert "'dp-stats-noise' is nan" in str(reply.error.reason)
    assert PrivacyLedger(led).entries() == []


def test_the_ledger_refuses_to_record_a_nan_entry(tmp_path):
    led = PrivacyLedger(tmp_path / "ledger.json")
    bad = LedgerEntry(run="2", server_round=0, noise_multiplier=NAN, sampling_rate=1.0,
                      steps=1, records=600, batch_size=0, kind="stats")
    with pytest.raises(InvalidParameterError, match=r"noise multiplier nan.*finite"):
        led.spend(bad, max_epsilon=8.0)
    with pytest.raises(InvalidParameterError, match=r"noise multiplier nan"):
        led.spend(bad)  # without a limit too
    assert led.entries() == []


def _ledger_with_a_nan_entry(path: Path) -> PrivacyLedger:
    """A ledger an older version wrote: one honest round (epsilon 7.88), then a NaN stats
    entry."""
    honest = {"run": "1", "server_round": 1, "noise_multiplier": 0.612, "sampling_rate": 1 / 19,
              "steps": 19, "records": 600, "batch_size": 32, "kind": "dp-sgd"}
    nan = {"run": "2", "server_round": 0, "noise_multiplier": NAN, "sampling_rate": 1.0,
           "steps": 1, "records": 600, "batch_size": 0, "kind": "stats"}
    path.write_text(json.dumps({"format": LEDGER_FORMAT, "rounds": [honest, nan]}))
    return PrivacyLedger(path)


def test_a_ledger_holding_a_nan_entry_composes_to_infinity_and_refuses_to_spend(tmp_path):
    """It composed to 0.0, and 5 more rounds at the full budget each went through."""
    led = _ledger_with_a_nan_entry(tmp_path / "ledger.json")
    assert led.epsilon() == math.inf
    entry = LedgerEntry(run="3", server_round=1, noise_multiplier=5.0, sampling_rate=0.05,
                        steps=19, records=600, batch_size=32)
    with pytest.raises(PrivacyBudgetError, match=r"noise multiplier nan.*no accountant can "
                                                  r"count.*infinite.*--max-epsilon 8"):
        led.spend(entry, max_epsilon=8.0)
    assert len(led.entries()) == 2


def test_a_device_with_a_nan_ledger_entry_refuses_to_train(tmp_path):
    led = _ledger_with_a_nan_entry(tmp_path / "ledger.json")
    ctx = _context({"partition-id": 0, "num-partitions": 3, "max-dp-epsilon": 8.0,
                    "privacy-ledger": str(led.path)},
                   {"dataset": "pump", "dp-sgd-epsilon": 7.9}, run_id=3)
    from edgewise.federated.model import build_model

    state = dict(build_model("ae", 6).state_dict())
    norm = ca.ConditionNormaliser(np.zeros((1, 6)), np.ones((1, 6)))
    with pytest.raises(PrivacyBudgetError, match="no accountant can count"):
        ca._fit(ca._data(ctx), norm, state, ctx, 1)
    assert len(led.entries()) == 2


# 2. a mixed fleet under --dp-epsilon 0 -------------------------------------------------------

def test_the_run_ledger_claims_no_record_epsilon_after_an_update_without_dp_sgd():
    led = RunLedger()
    led.record_round(1, {"1001": (1.1, 0.05, 19), "1002": (1.1, 0.05, 19)}, reported=7.9)
    led.aggregated_round(1, without_dp_sgd=["1000"])
    with pytest.raises(InvalidParameterError, match=r"round\(s\) \[1\].*node\(s\) 1000"):
        led.record_epsilon(1e-5)
    assert "without record-level DP-SGD" in led.resume_conflict(
        noise_multiplier=0.0, num_devices=3, sample_size=3, done=1, dp_sgd=True)


def _wire(require_dp_sgd: bool, tmp_path: Path) -> tuple[WireLog, RunLedger]:
    rule = RobustStrategy(FedAvg(), require_dp_sgd=require_dp_sgd)
    rule.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    ledger = RunLedger(tmp_path / "checkpoint.privacy.json")
    return WireLog(rule, ledger=ledger), ledger


def test_a_mixed_round_is_recorded_so_that_neither_the_run_nor_a_resume_claims_record_dp(
        tmp_path):
    """--dp-epsilon 0, two devices ran DP-SGD on their own, one did not: its update was
    averaged in and the report claimed unit 'record', epsilon 7.9."""
    wire, ledger = _wire(False, tmp_path)
    arrays, _ = wire.aggregate_train(1, [_reply(1000, 0.2, NO_DP), _reply(1001, 0.1, DP),
                                         _reply(1002, 0.3, DP)])
    assert arrays is not None
    report = _privacy_report({1: dict(DP)}, dp_noise=0.0, dp_clip=0.0, dp_delta=1e-5,
                             dp_sgd_clip=1.0, num_devices=3, rounds=1, sample_size=3,
                             ledger=ledger)
    assert report.unit == "none" and report.record_epsilon is None
    resumed = RunLedger(ledger.path).load()  # what --resume reads
    assert resumed.rounds_without_dp_sgd() == {1: ["1000"]}
    with pytest.raises(InvalidParameterError, match="without record-level DP-SGD"):
        resumed.record_epsilon(1e-5)


def test_device_level_dp_over_a_mixed_round_does_not_say_devices_ran_dp_sgd(tmp_path):
    wire, ledger = _wire(False, tmp_path)
    wire.aggregate_train(1, [_reply(1000, 0.2, NO_DP), _reply(1001, 0.1, DP),
                             _reply(1002, 0.3, DP)])
    ledger.device_round(1, noise_multiplier=1.0, num_devices=3, sample_size=3)
    report = _privacy_report({1: dict(DP)}, dp_noise=1.0, dp_clip=1.0, dp_delta=1e-5,
                             dp_sgd_clip=1.0, num_devices=3, rounds=1, sample_size=3,
                             ledger=ledger)
    assert report.unit == "device" and report.record_epsilon is None
    assert "DP-SGD" not in report.dp_covers


def test_a_round_whose_update_without_dp_sgd_was_refused_keeps_its_record_epsilon(tmp_path):
    """The run asked for DP-SGD: the screen refuses the update without it (as before), so
    the round's model is covered by the others' DP-SGD."""
    wire, ledger = _wire(True, tmp_path)
    wire.aggregate_train(1, [_reply(1000, 0.2, NO_DP), _reply(1001, 0.1, DP),
                             _reply(1002, 0.3, DP)])
    assert ledger.rounds_without_dp_sgd() == {}
    assert 0 < ledger.record_epsilon(1e-5) < 8.0


def test_secagg_train_metrics_of_a_mixed_round_leave_no_record_claim():
    """Under SecAgg+ the server sees only the metrics: their aggregate now counts the
    updates without DP-SGD, and the report (built without a ledger) claims nothing."""
    records = [RecordDict({"m": MetricRecord({"num-examples": 600, "train-loss": 1.0, **m})})
               for m in (DP, DP, NO_DP)]
    metrics = dict(aggregate_train_metrics(records, "num-examples"))
    assert metrics["updates-without-dp-sgd"] == 1
    report = _privacy_report({1: metrics}, dp_noise=0.0, dp_clip=0.0, dp_delta=1e-5,
                             dp_sgd_clip=1.0, num_devices=3, rounds=1, sample_size=None)
    assert report.unit == "none" and report.record_epsilon is None
    all_dp = dict(aggregate_train_metrics(records[:2], "num-examples"))
    assert "updates-without-dp-sgd" not in all_dp
    assert _privacy_report({1: all_dp}, dp_noise=0.0, dp_clip=0.0, dp_delta=1e-5,
                           dp_sgd_clip=1.0, num_devices=3, rounds=1,
                           sample_size=None).unit == "record"


# 3. a tiny stated noise ----------------------------------------------------------------------

def test_a_tiny_stated_noise_is_refused_by_the_screen_as_its_own_reason():
    assert dp_sgd_mechanism(TINY) is None
    assert "low-dp-sgd-noise" in COUNTS_AGAINST_F
    for rule in (RobustStrategy(FedAvg(), require_dp_sgd=True), DPSGDScreen(FedAvg())):
        rule.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
        kept = rule.screen(1, [_reply(1000, 0.2, TINY), _reply(1001, 0.1, DP),
                               _reply(1002, 0.3, DP)])
        assert len(kept) == 2
        assert [(e.node_id, e.reason) for e in rule.events] == [(1000, "low-dp-sgd-noise")]
        assert "1e-200 is below 0.01" in rule.events[0].detail


def test_the_accounting_of_a_tiny_noise_is_infinite_not_a_traceback():
    """ZeroDivisionError inside dp-accounting (q < 1), inf with a warning at q = 1."""
    assert composed_epsilon([(1e-200, 0.05, 19)]) == math.inf
    assert composed_epsilon([(1e-200, 1.0, 1)]) == math.inf
    led = RunLedger()
    led.record_round(1, {"1": (1.1, 0.05, 19), "2": (1e-200, 0.05, 19)}, reported=1.0)
    assert led.record_epsilon(1e-5) == math.inf
    assert all(x == math.inf for x in led.record_rdp())


def test_resuming_from_a_ledger_with_a_tiny_noise_is_refused_with_a_message(tmp_path):
    """check_resume raised ZeroDivisionError (a traceback) on such a checkpoint."""
    ckpt = tmp_path / "checkpoint.npz"
    np.savez(ckpt, __round__=np.array(1), **{"p:0.weight": np.zeros((16, 6))})
    led = RunLedger(run_ledger_path(ckpt))
    led.record_round(1, {"1": (1.1, 0.05, 19), "2": (1e-200, 0.05, 19)}, reported=1.0)
    led.aggregated_round(1)
    with pytest.raises(FederatedRunError, match=r"already spent record-level epsilon inf"):
        check_resume(ckpt, rounds=2, num_devices=2, dp_sgd_epsilon=8.0)


def test_a_resumed_device_refuses_a_nan_prior_curve():
    n = len(rdp_orders())
    with pytest.raises(InvalidParameterError, match="dp-sgd-prior-rdp"):
        ca._run_prior({"dp-sgd-rounds-done": 1, "dp-sgd-prior-rdp": [NAN] * n,
                       "dp-sgd-rdp-orders": rdp_orders()})
    assert ca._run_prior({"dp-sgd-rounds-done": 1, "dp-sgd-prior-rdp": [math.inf] * n,
                          "dp-sgd-rdp-orders": rdp_orders()})[1] == [math.inf] * n


def test_a_mixed_fleet_under_secagg_is_not_reported_as_record_level_dp():
    """The one run (in-process, 3 pumps, 1 round, SecAgg+): devices 0 and 1 keep a device
    limit (they run DP-SGD though the server asks none), device 2 trains without; the run
    reported unit 'record', epsilon 7.99, and said the devices ran DP-SGD."""
    from edgewise.federated.inprocess import InProcessGrid
    from edgewise.federated.server_app import run_federated

    cfgs = [{"partition-id": i, "num-partitions": 3, **({"max-dp-epsilon": 8.0} if i < 2
                                                         else {})} for i in range(3)]
    grid = InProcessGrid(ca.app, cfgs, {"dataset": "pump", "num-server-rounds": 1})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3, rounds=1,
                        strategy="fedavg", robust=False, secagg=True, dp_sgd_epsilon=0.0)
    assert [len(PrivacyLedger(state=c.state).entries()) for c in grid.contexts.values()] \
        == [1, 1, 0]  # the fleet really was mixed
    assert res.privacy.unit == "none" and res.privacy.record_epsilon is None
    assert "DP-SGD" not in res.privacy.dp_covers
