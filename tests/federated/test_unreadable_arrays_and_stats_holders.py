"""A reply's unreadable array, DP normaliser conditions held by too few devices, device-level
DP sampling past --min-available, and a resume given other DP statistics (fixer, hunt).

1. One device sending an Array Flower cannot read (another stype, bytes that are no .npy
   file) ended the whole run: the wire log, the screens, the normaliser round and the DP
   clip called Array.numpy() unguarded. That reply alone is now refused.
2. Under DP statistics devices with too few readings report a condition absent; each
   condition was then trimmed over whoever was left (their median when <= 2f), so one
   attacker set a condition's normaliser. Such a condition now takes the public bounds'
   midpoint and half-width.
3. Device-level DP sampled every connected device (fraction m / min-available) and divided
   their sum by m: 5 sampled over 3. Exactly m are sampled now.
4. A resumed run ignored --stats-bounds / --stats-share; one other than the recorded release
   is refused now.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from edgewise.federated.client_app import app
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.ledger import RunLedger
from edgewise.federated.model import build_model
from edgewise.federated.server_app import (
    FederatedRunError,
    WireLog,
    _DeviceDP,
    _DeviceDPScreen,
    _StatsRound,
    check_resume,
    fit_normaliser,
    run_federated,
    run_ledger_path,
)
from edgewise.federated.stats_privacy import StatsBounds, stats_noise_for_epsilon
from edgewise.federated.strategies import make_strategy
from tests.federated.test_hunt_s34 import _task_identity  # noqa: F401 (autouse fixture)

torch.set_num_threads(1)
logging.getLogger("flwr").setLevel(logging.ERROR)
METRICS = {"num-examples": 10, "unit-weight": 1, "train-loss": 1.0}
PUMP_BOUNDS = {"lower": [1000, 20, 1, 5, 30, 1], "upper": [2000, 90, 8, 30, 65, 6]}


def _instr(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")


def _bad_array(mode: str, like: np.ndarray) -> Array:
    if mode == "stype":
        return Array(dtype="float32", shape=(1,), stype="torch.Tensor", data=b"\x00" * 4)
    if mode == "npz":  # np.load gives an NpzFile, not an array
        import io

        buf = io.BytesIO()
        np.savez(buf, w=like)
        return Array(dtype=str(like.dtype), shape=like.shape, stype="numpy.ndarray",
                     data=buf.getvalue())
    return Array(dtype=str(like.dtype), shape=like.shape, stype="numpy.ndarray",
                 data=b"not an npy file")


def _reply(node: int, arrays: dict[str, Array | np.ndarray],
           metrics: dict[str, Any] | None = None) -> Message:
    return Message(RecordDict({
        "arrays": ArrayRecord({k: v if isinstance(v, Array) else Array(v)
                               for k, v in arrays.items()}),
        "metrics": MetricRecord(dict(METRICS if metrics is None else metrics)),
    }), reply_to=_instr(node))


# -- 1. an unreadable array is that reply's refusal, not the run's end ----------------------

@pytest.mark.parametrize("mode", ["stype", "data", "npz"])
def test_an_unreadable_update_is_refused_and_counts_against_f(mode: str) -> None:
    """Check a trimmed-mean round (5 devices, f=1) with one reply whose array cannot be
    read refuses it (reason shape, naming the array) and aggregates the other four; the
    wire log notes it. It raised TypeError/ValueError from WireLog._record before."""
    rule = make_strategy("trimmed", num_nodes=5, num_malicious_nodes=1)
    rule.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    wire = WireLog(rule)
    rng = np.random.default_rng(0)
    replies = [_reply(n, {"w": rng.normal(0, 0.1, 4).astype(np.float32)}) for n in range(4)]
    replies.append(_reply(9, {"w": _bad_array(mode, np.zeros(4, np.float32))}))
    arrays, _ = wire.aggregate_train(1, replies)
    assert arrays is not None
    assert [(e.node_id, e.reason) for e in rule.events] == [(9, "shape")]
    assert "array 'w'" in rule.events[0].detail
    (entry,) = [e for e in wire.entries if e["node"] == 9]
    assert "unreadable" in entry and "array_bytes" not in entry


def test_a_whole_in_process_run_survives_one_unreadable_update() -> None:
    """Check the hunter's run: 5 pump devices, trimmed mean, f=1, one device sending an
    Array of stype torch.Tensor; the run finishes and refuses that device (the ServerApp
    died with 'Unsupported serialization type' before)."""
    def evil(msg: Message, ctx: Context) -> Message:
        reply = app(msg, ctx)
        if int(ctx.node_config["partition-id"]) == 4 \
                and msg.content["config"].get("phase", "fit") == "fit" \
                and not reply.has_error():
            rec = reply.content["arrays"]
            reply.content["arrays"] = ArrayRecord(
                {k: _bad_array("stype", v.numpy()) for k, v in rec.items()})
        return reply

    grid = InProcessGrid(evil, [{"partition-id": i, "num-partitions": 5} for i in range(5)],
                         {"dataset": "pump"})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=5, rounds=1,
                        strategy="trimmed", num_malicious_nodes=1)
    assert [(e["node_id"], e["reason"]) for e in res.refused] == [(1004, "shape")]


def test_device_level_dp_counts_an_unreadable_update_as_zero() -> None:
    """Check _DeviceDP (no robust screen) and _DeviceDPScreen both count an unreadable
    update as a 0 update over m, instead of raising from to_numpy_ndarrays."""
    g = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    u = np.array([0.5, 0, 0, 0], np.float32)
    for screened in (False, True):
        dp = _DeviceDP(make_strategy("fedavg", num_nodes=2, robust=False,
                                     weighted_by_key="unit-weight"),
                       noise_multiplier=1e-12, clipping_norm=1.0, num_sampled_clients=2)
        dp.current_arrays = g
        outer = _DeviceDPScreen(dp) if screened else dp
        if screened:
            outer.current_arrays = g
        arrays, _ = outer.aggregate_train(1, [_reply(1, {"w": u.copy()}),
                                              _reply(2, {"w": _bad_array("data", u)})])
        np.testing.assert_allclose(arrays["w"].numpy(), u / 2, atol=1e-6)


def test_an_unreadable_evaluation_reply_is_refused() -> None:
    """Check an evaluation reply carrying an unreadable array is refused (eval-shape) and
    the others averaged; WireLog._record raised on it before."""
    rule = make_strategy("trimmed", num_nodes=3, beta=0, fraction_evaluate=1.0)
    wire = WireLog(rule)
    ev = {"num-examples": 10, "eval-loss": 0.5}
    replies = [Message(RecordDict({"metrics": MetricRecord(ev)}), reply_to=_instr(n))
               for n in range(3)]
    replies.append(_reply(9, {"w": _bad_array("stype", np.zeros(1, np.float32))}, ev))
    out = wire.aggregate_evaluate(1, replies)
    assert out is not None and out["eval-loss"] == pytest.approx(0.5)
    assert [(e.node_id, e.reason) for e in rule.events] == [(9, "eval-shape")]


def _stats(node: int, count: list[float], mean: list[float], var: float = 1.0,
           z: float | None = None) -> Message:
    c = np.asarray(count, np.float64)
    m = np.asarray(mean, np.float64)[:, None]
    metrics: dict[str, Any] = {"num-examples": 1}
    if z is not None:
        metrics["dp-stats-noise"] = z
    return _reply(node, {"count": c, "sum": c[:, None] * m,
                         "sumsq": c[:, None] * (var + m * m)}, metrics)


def test_unreadable_statistics_are_left_out_of_the_normaliser() -> None:
    """Check the normaliser round refuses a device whose statistics cannot be read
    (malformed-stats) and fits the others'; the TypeError escaped before (only
    FederatedRunError was caught)."""
    rnd = _StatsRound(1, 4, 0)
    bad = _reply(9, {"count": _bad_array("stype", np.zeros(1)), "sum": np.zeros((1, 1)),
                     "sumsq": np.zeros((1, 1))}, {"num-examples": 1})
    rnd.aggregate_train(1, [_stats(n, [10.0], [5.0 + n / 10]) for n in range(3)] + [bad])
    assert rnd.malformed == [9] and rnd.normaliser is not None
    assert rnd.normaliser.mean[0, 0] == pytest.approx(5.1)


# -- 2. a condition held by too few devices under DP takes the public bounds ----------------

def test_a_dp_condition_held_by_too_few_devices_takes_the_public_bounds() -> None:
    """Check, f=1 under DP: condition 0, held by 3 honest devices and the attacker, is
    trimmed (attacker dropped); condition 1, which only one honest device kept above the
    noise threshold, plus the attacker, takes the bounds' midpoint and half-width. The
    attacker's mean 10⁴ was half of condition 1's normaliser (the median of two) before."""
    z = 4.97
    b = StatsBounds.from_doc({"lower": [0.0], "upper": [10.0]}, 2)
    rnd = _StatsRound(2, 4, 1, dp=True, dp_noise=z, bounds=b)
    honest = [_stats(1, [80.0, 70.0], [5.0, 6.0], z=z), _stats(2, [90.0, 0.0], [5.2, 0.0], z=z),
              _stats(3, [85.0, 0.0], [4.8, 0.0], z=z)]
    rnd.aggregate_train(1, [*honest, _stats(9, [1e3, 1e3], [1e4, 1e4], z=z)])
    norm = rnd.normaliser
    assert norm is not None
    assert 4.8 <= norm.mean[0, 0] <= 5.2
    assert norm.mean[1, 0] == pytest.approx(5.0) and norm.std[1, 0] == pytest.approx(5.0)
    assert rnd.public_conditions == [1]


def test_fit_normaliser_under_dp_hands_the_bounds_to_the_round() -> None:
    """Check the wiring in a real (in-process) normaliser round: 2 pump devices under DP
    statistics, f=0, hold the one condition, fewer than 3: its normaliser is the bounds'
    midpoint and half-width (it was the median of the two, which one device moves)."""
    b = StatsBounds.from_doc(PUMP_BOUNDS, 1)
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 2} for i in range(2)],
                         {"dataset": "pump", "dp-sgd-epsilon": 8.0})
    norm = fit_normaliser(grid, 1, 2, stats_dp=(stats_noise_for_epsilon(0.8), b))
    np.testing.assert_allclose(norm.mean[0], b.centre[0])
    np.testing.assert_allclose(norm.std[0], b.half_width[0])


# -- 3. device-level DP samples exactly m ---------------------------------------------------

def test_device_level_dp_samples_exactly_m_of_more_connected_devices() -> None:
    """Check 5 connected devices, --min-available 3 (m = 3): 3 are sampled each round and
    equal updates u are released as u. All 5 were sampled and released as 5u/3 before."""
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 5} for i in range(5)],
                         {"dataset": "pump"})
    rule = make_strategy("fedavg", num_nodes=3, robust=False, sample_size=3,
                         weighted_by_key="unit-weight")
    dp = _DeviceDP(rule, noise_multiplier=1e-12, clipping_norm=1.0, num_sampled_clients=3)
    g = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    for server_round in (1, 2):
        sent = list(dp.configure_train(server_round, g, ConfigRecord({}), grid))
        assert len(sent) == 3
        assert len({m.metadata.dst_node_id for m in sent}) == 3
    u = np.array([0.5, 0, 0, 0], np.float32)
    replies = [Message(RecordDict({"arrays": ArrayRecord({"w": Array(u.copy())}),
                                   "metrics": MetricRecord(METRICS)}), reply_to=m)
               for m in sent]
    arrays, _ = dp.aggregate_train(2, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), u, atol=1e-6)


# -- 4. a resume given other DP statistics than recorded is refused -------------------------

def _checkpoint(tmp_path: Path, stats: dict[str, Any] | None) -> Path:
    ckpt = tmp_path / "checkpoint.npz"
    model = build_model("ae", 6).state_dict()
    np.savez(ckpt, __round__=np.array(1), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)), **{f"p:{k}": v.numpy() for k, v in model.items()})
    led = RunLedger(run_ledger_path(ckpt))
    if stats is not None:
        led.stats_round({"1000": (stats["z"], 1.0, 1)}, noise_multiplier=stats["z"],
                        epsilon=0.8, bounds=stats["bounds"])
    led.record_round(1, {"1000": (1.0, 0.1, 10)}, 2.0)
    led.aggregated_round(1)
    return ckpt


def test_resume_refuses_stats_bounds_other_than_recorded(tmp_path: Path) -> None:
    """Check check_resume with --stats-bounds: refused (one line naming why) when the
    checkpoint's run sent its statistics in the clear, or with other bounds or another
    share; accepted with the recorded ones, and without any (the recorded release stands)."""
    b = StatsBounds.from_doc(PUMP_BOUNDS, 1)
    z = stats_noise_for_epsilon(0.1 * 8.0)
    kw = dict(rounds=2, num_devices=3, dp_sgd_epsilon=8.0)
    (tmp_path / "a").mkdir()
    clear = _checkpoint(tmp_path / "a", None)
    with pytest.raises(FederatedRunError, match="in the clear") as err:
        check_resume(clear, stats_bounds=b, **kw)
    assert "\n" not in str(err.value)
    assert check_resume(clear, **kw) == 1
    (tmp_path / "b").mkdir()
    dp = _checkpoint(tmp_path / "b", {"z": z, "bounds": b.to_doc()})
    assert check_resume(dp, stats_bounds=b, stats_share=0.1, **kw) == 1
    assert check_resume(dp, **kw) == 1
    other = StatsBounds.from_doc({**PUMP_BOUNDS, "upper": [2100, 90, 8, 30, 65, 6]}, 1)
    with pytest.raises(FederatedRunError, match=r"sensor bounds"):
        check_resume(dp, stats_bounds=other, stats_share=0.1, **kw)
    with pytest.raises(FederatedRunError, match=r"--stats-share 0\.2"):
        check_resume(dp, stats_bounds=b, stats_share=0.2, **kw)


def test_a_resumed_run_given_stats_bounds_it_cannot_apply_fails_before_training(
        tmp_path: Path) -> None:
    """Check the hunter's flow: a run with clear statistics, resumed with stats_bounds,
    stops in one line instead of running on with the bounds silently ignored."""
    def grid() -> InProcessGrid:
        return InProcessGrid(app, [{"partition-id": i, "num-partitions": 3} for i in range(3)],
                             {"dataset": "pump", "num-server-rounds": 2,
                              "dp-sgd-epsilon": 8.0})
    ckpt = tmp_path / "checkpoint.npz"
    kw = dict(kind="ae", n_features=6, n_conditions=1, num_nodes=3, strategy="trimmed",
              dp_sgd_epsilon=8.0, checkpoint=ckpt)
    run_federated(grid(), rounds=1, **kw)
    with pytest.raises(FederatedRunError, match="in the clear"):
        run_federated(grid(), rounds=2, stats_bounds=StatsBounds.from_doc(PUMP_BOUNDS, 1),
                      stats_share=0.1, **kw)


def test_the_cli_refuses_resuming_with_stats_bounds_before_anything_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate server --resume --stats-bounds` of a run that sent its statistics in
    the clear is refused in one line by the CLI's own check, before any process starts (it
    reached the ServerApp, which stopped only after the SuperLink and devices were up)."""
    import json

    from edgewise.cli import federate as cli_federate
    from tests.federated.test_cli_params import edgewise_in_process

    out = tmp_path / "federated" / "server" / "out"
    out.mkdir(parents=True)
    ckpt = _checkpoint(out, None)
    assert ckpt == out / "checkpoint.npz"
    bounds = tmp_path / "bounds.json"
    bounds.write_text(json.dumps(PUMP_BOUNDS))
    started: list[Any] = []
    monkeypatch.setattr(cli_federate, "_run_fleet", lambda *a, **k: started.append(a))
    code, err = edgewise_in_process(
        ["federate", "server", "--data-dir", str(tmp_path), "--resume", "--rounds", "2",
         "--dp-epsilon", "8", "--stats-bounds", str(bounds)], monkeypatch, capsys)
    assert code == 2, err
    assert err.startswith("error: --resume: ") and err.count("\n") == 1, err
    assert "in the clear" in err
    assert started == []
