"""Record-level DP for the normaliser statistics: the Gaussian mechanism's noise matches its
sensitivity, readings are clipped, what leaves a device always passes the server's screen,
the accountant composes it with DP-SGD under one budget, and a run reports it covered."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from edgewise.errors import InvalidParameterError
from edgewise.federated.client_app import app, dp_sgd_budget
from edgewise.federated.inprocess import SERVER_NODE_ID, InProcessGrid
from edgewise.federated.ledger import RunLedger
from edgewise.federated.privacy import (
    NOT_COVERED,
    composed_epsilon,
    dp_sgd_epsilon,
    dp_sgd_history,
)
from edgewise.federated.server_app import FederatedRunError, _StatsRound, run_federated
from edgewise.federated.stats_privacy import (
    MIN_VARIANCE,
    StatsBounds,
    clipped_unit_stats,
    count_threshold,
    noisy_stats,
    post_process,
    stats_mechanism,
    stats_noise_for_epsilon,
    stats_sensitivity,
)
from tests.conftest import REPO

torch.set_num_threads(1)
logging.getLogger("absl").setLevel(logging.ERROR)

#: An operating envelope of the simulated pumps (speed, flow, pressure, current, temp, vib).
PUMP_BOUNDS = {"lower": [1000, 20, 1, 5, 30, 1], "upper": [2000, 90, 8, 30, 65, 6]}


def _bounds(n_conditions: int = 2, width: int = 3) -> StatsBounds:
    lo = np.arange(width, dtype=float) * 10.0
    return StatsBounds.from_doc({"lower": lo.tolist(), "upper": (lo + 4.0).tolist()},
                                n_conditions)


def _unit_noise(out: tuple[np.ndarray, np.ndarray, np.ndarray], b: StatsBounds
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert :func:`post_process` where it clipped nothing: the noisy count, sum of ``v``
    and sum of ``v² - 1/2`` the device drew."""
    n, s, q = out
    c, h = b.centre, b.half_width
    nn = n[:, None]
    total = (s - c * nn) / h
    squares = (q - c * c * nn - 2 * c * h * total) / (h * h) - nn / 2
    return n, total, squares


# -- the mechanism -------------------------------------------------------------------------

def test_one_reading_moves_the_scaled_statistics_by_at_most_the_sensitivity() -> None:
    """Check the sensitivity is the largest L2 change one reading can make, reached by a
    reading at the bounds, and that a reading far outside them changes nothing more."""
    b = _bounds()
    rng = np.random.default_rng(1)
    X = b.lower[0] + 4.0 * rng.random((50, 3))
    cond = rng.integers(0, 2, 50)
    base = np.concatenate([np.ravel(a) for a in clipped_unit_stats(X, cond, b)])

    def change(x: np.ndarray, j: int) -> float:
        more = clipped_unit_stats(np.vstack([X, x]), np.append(cond, j), b)
        return float(np.linalg.norm(np.concatenate([np.ravel(a) for a in more]) - base))

    delta = stats_sensitivity(3)
    assert change(b.upper[1], 1) == pytest.approx(delta, rel=1e-12)  # |v| = 1 everywhere
    assert change(np.array([1e9, -1e9, 1e9]), 0) == pytest.approx(delta, rel=1e-12)
    for _ in range(200):
        x = b.lower[0] - 20 + 44 * rng.random(3)
        assert change(x, int(rng.integers(0, 2))) <= delta * (1 + 1e-12)


def test_readings_are_clipped_to_the_bounds() -> None:
    """Check readings beyond the bounds count as readings at the bounds."""
    b = _bounds(n_conditions=1, width=2)  # [0, 4] and [10, 14]
    wild = np.array([[-50.0, 99.0], [7.0, 12.0]])
    tame = np.array([[0.0, 14.0], [4.0, 12.0]])
    cond = np.zeros(2, dtype=np.int64)
    for a, t in zip(clipped_unit_stats(wild, cond, b), clipped_unit_stats(tame, cond, b),
                    strict=True):
        np.testing.assert_array_equal(a, t)
    n, s, _ = noisy_stats(wild, cond, b, noise_multiplier=1e-6, seed=0)
    np.testing.assert_allclose(s / n[:, None], [[2.0, 13.0]], atol=1e-4)


def test_noise_standard_deviation_is_the_multiplier_times_the_sensitivity() -> None:
    """Check the noise on every count, sum and centred sum of squares is N(0, (z·Δ)²) with
    Δ = sqrt(1 + 1.25 F): 300 releases, 9 values each, pooled. The tolerance (4 %) is over
    6 standard errors of the estimate; noise scaled to the uncentred sensitivity
    sqrt(1 + 2F) (+20 % here), or half of it, fails."""
    b = _bounds(n_conditions=1, width=4)
    rng = np.random.default_rng(2)
    X = b.centre[0] + b.half_width[0] * rng.uniform(-0.5, 0.5, (5000, 4))
    cond = np.zeros(len(X), dtype=np.int64)
    truth = clipped_unit_stats(X, cond, b)
    z = 3.0
    draws = []
    for i in range(300):
        noisy = _unit_noise(noisy_stats(X, cond, b, z, seed=i), b)
        draws.append(np.concatenate([np.ravel(a - t) for a, t in zip(noisy, truth,
                                                                     strict=True)]))
    noise = np.array(draws)
    expected = z * stats_sensitivity(4)
    assert noise.std() == pytest.approx(expected, rel=0.04)
    assert abs(noise.mean()) < 4 * expected / np.sqrt(noise.size)
    # each kind of statistic gets the same scale (none is left without noise)
    for part in (noise[:, :1], noise[:, 1:5], noise[:, 5:]):
        assert part.std() == pytest.approx(expected, rel=0.2)


def test_noise_is_fresh_on_every_call() -> None:
    """Check two releases of the same data differ: the noise is not replayable from a seed."""
    b = StatsBounds.from_doc(PUMP_BOUNDS, 1)
    X = np.tile(np.array([1500.0, 50, 4, 15, 45, 3]), (500, 1))
    cond = np.zeros(500, dtype=np.int64)
    a, c = noisy_stats(X, cond, b, 1.0), noisy_stats(X, cond, b, 1.0)
    assert not np.array_equal(a[1], c[1])


def test_the_noise_for_a_budget_is_the_accountants() -> None:
    """Check the noise multiplier for epsilon=0.8 costs at most 0.8, and 3 % less noise
    costs more."""
    z = stats_noise_for_epsilon(0.8)
    assert composed_epsilon([stats_mechanism(z)]) <= 0.8
    assert composed_epsilon([stats_mechanism(0.97 * z)]) > 0.8


# -- post-processing -----------------------------------------------------------------------

def _screen(count: np.ndarray, total: np.ndarray, squares: np.ndarray, dp: bool = True
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The server's screen of one device's reply with these statistics."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE_ID, 0
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in
                          (("count", count), ("sum", total), ("sumsq", squares))})
    instr = Message(RecordDict(), dst_node_id=7, message_type="train", group_id="1")
    msg = Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}),
                  reply_to=instr)
    return _StatsRound(len(count), 1, 0, dp=dp)._check(msg)


def test_post_processing_keeps_counts_at_least_one_and_variances_positive() -> None:
    """Check that whatever the noise (counts near 0 or negative, sums of squares far below
    the square of the sums), a condition is either absent (all 0) or has a count >= 1 and
    a variance > 0, and the server's screen accepts it."""
    b = _bounds(n_conditions=4, width=3)
    rng = np.random.default_rng(3)
    kept = dropped = 0
    for sd in (0.1, 1.0, 30.0):
        for _ in range(200):
            count = rng.normal(rng.choice([0.0, 2.0, 40.0]), sd, 4)
            total = rng.normal(0.0, 3 * sd + 5, (4, 3))
            squares = rng.normal(-5.0, 3 * sd + 5, (4, 3))
            n, s, q = post_process(count, total, squares, b, sd)
            absent = n == 0
            assert ((n >= 1) | absent).all() and (n >= count_threshold(sd))[~absent].all()
            assert not s[absent].any() and not q[absent].any()
            live = ~absent
            var = q[live] / n[live, None] - (s[live] / n[live, None]) ** 2
            assert (var >= MIN_VARIANCE * b.half_width[live] ** 2 * (1 - 1e-6)).all()
            mean = s[live] / n[live, None]
            assert ((b.lower[live] <= mean + 1e-9) & (mean <= b.upper[live] + 1e-9)).all()
            if n.any():
                _screen(n, s, q)
            kept += int(live.sum())
            dropped += int(absent.sum())
    assert kept > 100 and dropped > 100  # both branches were exercised


def test_a_device_reporting_no_condition_is_left_out_under_dp_only() -> None:
    """Check an all-zero reply (every condition absent after the noise) passes the screen of
    a DP normaliser round and is left out, while a round in the clear still refuses it."""
    zeros = (np.zeros(2), np.zeros((2, 3)), np.zeros((2, 3)))
    _screen(*zeros, dp=True)
    with pytest.raises(FederatedRunError, match="at least one record"):
        _screen(*zeros, dp=False)


# -- accounting ----------------------------------------------------------------------------

def test_the_accountant_composes_the_statistics_with_dp_sgd() -> None:
    """Check ε with the statistics' release is above ε without at the same DP-SGD noise,
    and that the device, calibrating for both, adds noise and stays within its budget."""
    z_stats = stats_noise_for_epsilon(0.8)
    dp_sgd = dp_sgd_history(0.7, 32, 600, 3)
    alone = composed_epsilon([dp_sgd])
    both = composed_epsilon([stats_mechanism(z_stats), dp_sgd])
    assert alone < both < alone + 0.8
    rc = {"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}
    z0, _ = dp_sgd_budget(rc, 600)
    z1, e1 = dp_sgd_budget(rc, 600, stats=[stats_mechanism(z_stats)])
    assert z1 > z0 and 7.99 < e1 <= 8.0
    assert e1 > dp_sgd_epsilon(z1, 32, 600, 3)  # the ε returned counts the statistics
    led, bare = RunLedger(), RunLedger()
    for ledger in (led, bare):
        ledger.record_round(1, {"7": dp_sgd})
        ledger.aggregated_round(1)
    led.stats_round({"7": stats_mechanism(z_stats)}, noise_multiplier=z_stats, epsilon=0.8)
    assert led.record_epsilon(1e-5) == pytest.approx(both)
    assert bare.record_epsilon(1e-5) == pytest.approx(alone)


def test_stats_bounds_without_a_record_level_budget_are_refused() -> None:
    """Check bounds without DP-SGD are refused, naming the budget: there is nothing to pay
    the statistics' noise from."""
    grid = InProcessGrid(app, [{"partition-id": 0, "num-partitions": 1}], {"dataset": "pump"})
    with pytest.raises(InvalidParameterError, match="dp_sgd_epsilon=0"):
        run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=1, rounds=1,
                      stats_bounds=StatsBounds.from_doc(PUMP_BOUNDS, 1))


def test_a_device_refuses_a_release_past_its_own_limit() -> None:
    """Check a device whose own limit (max-dp-epsilon 0.5) the statistics' release alone
    would pass (0.8) sends nothing, records nothing, and the run stops saying why."""
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 2, "max-dp-epsilon": 0.5}
                               for i in range(2)], {"dataset": "pump", "dp-sgd-epsilon": 8.0})
    with pytest.raises(FederatedRunError, match=r"PrivacyBudgetError: .*the normaliser "
                                                r"statistics of run 1 would bring"):
        run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=2, rounds=1,
                      strategy="fedavg", robust=False, dp_sgd_epsilon=8.0,
                      stats_bounds=StatsBounds.from_doc(PUMP_BOUNDS, 1))
    assert all("privacy-ledger" not in ctx.state.config_records
               for ctx in grid.contexts.values())


@pytest.mark.parametrize(("doc", "needle"), [
    ({"lower": [0, 1], "upper": [1]}, "same shape"),
    ({"lower": [0, 5], "upper": [1, 5]}, "lower 5 >= upper 5"),
    ({"lower": [[0], [1]], "upper": [[1], [2]]}, "one list per operating condition (3)"),
    ({"upper": [1]}, "with 'lower' and 'upper'"),
    ({"lower": [0], "upper": [float("nan")]}, "finite"),
])
def test_malformed_bounds_are_refused_naming_what_is_wrong(doc: dict, needle: str) -> None:
    """Check each malformed bounds document is one error naming the problem."""
    with pytest.raises(InvalidParameterError, match=needle.replace("(", r"\(").replace(
            ")", r"\)")):
        StatsBounds.from_doc(doc, 3)


# -- a whole run ---------------------------------------------------------------------------

def test_a_run_with_dp_statistics_reports_them_covered(tmp_path) -> None:
    """Check an in-process run with sensor bounds: every device records the release in its
    ledger before sending and calibrates DP-SGD after it, the normaliser stays close to
    the pooled one, the report's ε covers the statistics (scope, not-covered list, the
    statistics' own ε and bounds) and the signed manifest carries it."""
    from edgewise.federated.data import ConditionNormaliser, run_pump_fleet
    from edgewise.federated.publish import load_global_model, register_global_model

    n = 3
    rc = {"dataset": "pump", "dp-sgd-epsilon": 8.0, "num-server-rounds": 1}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         rc)
    bounds = StatsBounds.from_doc(PUMP_BOUNDS, 1)
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                        rounds=1, strategy="fedavg", robust=False, dp_sgd_epsilon=8.0,
                        stats_bounds=bounds)
    p = res.privacy
    assert p.unit == "record" and p.stats_covered
    assert p.stats_epsilon == pytest.approx(0.8, rel=1e-3)
    assert p.stats_noise_multiplier == pytest.approx(stats_noise_for_epsilon(0.8))
    assert p.stats_bounds == bounds.to_doc()
    assert "normaliser statistics" in p.dp_covers
    assert NOT_COVERED[0] not in p.not_covered and p.not_covered == list(NOT_COVERED[1:])
    assert p.epsilon is not None and 7.9 < p.epsilon <= 8.0 + 1e-6
    # each device spent the release first, in its own ledger, and its DP-SGD made room
    for ctx in grid.contexts.values():
        rounds = json.loads(str(ctx.state.config_records["privacy-ledger"]["rounds"]))
        assert [r["kind"] for r in rounds] == ["stats", "dp-sgd"]
        assert rounds[0]["noise_multiplier"] == pytest.approx(p.stats_noise_multiplier)
    assert p.noise_multiplier > dp_sgd_budget(rc, 600)[0]  # 600 records per pump
    stats_wire = [e for e in res.wire if e["phase"] == "stats"]
    assert len(stats_wire) == n and all(
        "dp-stats-noise" in e["metric_records"]["metrics"] for e in stats_wire)
    pooled = np.concatenate([d.X_train for d in run_pump_fleet(n)]).astype(np.float64)
    zeros = np.zeros(len(pooled), dtype=np.int64)
    exact = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(pooled, zeros, 1))
    # within 5 standard deviations of one device's noise on its mean (600 readings)
    sd = p.stats_noise_multiplier * stats_sensitivity(6) / 600 * bounds.half_width
    assert (np.abs(res.normaliser.mean - exact.mean) < 5 * sd).all()
    entry = register_global_model(res.state_dict(), tmp_path, "pump-ae",
                                  {"privacy": p.to_dict(), "rounds": 1})
    _, meta = load_global_model(tmp_path, "pump-ae", entry["version"])
    assert meta["privacy"]["stats_bounds"] == bounds.to_doc()
    assert meta["metrics"]["stats_epsilon"] == pytest.approx(p.stats_epsilon)


# -- the command line ------------------------------------------------------------------------

@pytest.fixture
def run_configs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """`federate server`/`demo` up to the run config they would start a fleet with."""
    from edgewise.cli import federate

    configs: list[dict] = []
    monkeypatch.setattr(federate, "_run_fleet",
                        lambda _fleet, config, **_k: configs.append(config))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    return configs


def test_stats_bounds_reach_the_run_config(tmp_path, run_configs: list[dict]) -> None:
    """Check `--stats-bounds FILE` is read, checked against the dataset's sensors and handed
    to the server as JSON with the share; without it the statistics stay in the clear."""
    from edgewise.cli import federate

    path = tmp_path / "bounds.json"
    path.write_text(json.dumps({"channels": ["speed_rpm", "flow_m3h", "pressure_bar",
                                             "current_a", "temp_c", "vibration_mm_s"],
                                **PUMP_BOUNDS}))
    federate.server(data_dir=tmp_path, stats_bounds=path, stats_share=0.2, as_json=True)
    federate.demo(data_dir=tmp_path, as_json=True)
    with_bounds, without = run_configs
    doc = json.loads(with_bounds["dp-stats-bounds"])
    assert doc["lower"] == [PUMP_BOUNDS["lower"]] and with_bounds["dp-stats-share"] == 0.2
    assert StatsBounds.from_doc(doc, 1).upper.tolist() == [PUMP_BOUNDS["upper"]]
    assert without["dp-stats-bounds"] == ""


def test_the_result_line_says_the_statistics_are_covered(capsys) -> None:
    """Check what `federate server`/`demo` print says ε covers the normaliser statistics
    and no longer lists them as not covered."""
    from edgewise.cli.federate import _print_result
    from edgewise.federated.privacy import PrivacyReport

    p = PrivacyReport(unit="record", epsilon=7.99, delta=1e-5, noise_multiplier=1.0,
                      clipping_norm=1.0, num_devices=3, rounds=1, record_epsilon=7.99,
                      stats_epsilon=0.8, stats_noise_multiplier=4.97)
    _print_result({"rounds": 1, "strategy": "fedavg", "privacy": p.to_dict(),
                   "train_metrics": {}, "model": {"name": "m", "version": "1", "release": 1,
                                                  "data_dir": "d", "target": "t",
                                                  "key_id": "k"}}, as_json=False)
    out = capsys.readouterr().out
    assert "normaliser statistics included (their release alone: 0.8)" in out
    covers, _, rest = out.partition("not covered:")
    assert "and the normaliser statistics" in covers and "normaliser" not in rest


@pytest.mark.parametrize(("doc", "extra", "needle"), [
    (PUMP_BOUNDS, ["--dp-epsilon", "0"], "--stats-bounds needs --dp-epsilon > 0"),
    (PUMP_BOUNDS, ["--stats-share", "1.5"], "--stats-share must be in (0, 1)"),
    ({"lower": [0, 0], "upper": [1, 1]}, [], "ranges for 2 sensors; the data has 6"),
    ({**PUMP_BOUNDS, "channels": ["a", "b", "c", "d", "e", "f"]}, [],
     "name the channels ['a'"),
    ({"lower": [0] * 6, "upper": [1] * 6}, ["--dataset", "cmapss"], "the data has 14"),
    (None, [], "cannot be read as JSON"),
])
def test_bad_stats_bounds_are_refused_in_one_line(tmp_path, doc: dict | None,
                                                   extra: list[str], needle: str) -> None:
    """Check bounds the run cannot use are refused before anything starts, in one line."""
    from typer.testing import CliRunner

    from edgewise.cli import app as cli_app
    from edgewise.cli import load_commands

    load_commands()  # run alone, no earlier test has registered the commands
    path = tmp_path / "bounds.json"
    path.write_text("{nope" if doc is None else json.dumps(doc))
    out = CliRunner().invoke(cli_app, ["federate", "server", "--data-dir", str(tmp_path),
                                       "--stats-bounds", str(path), *extra])
    assert out.exit_code == 2, out.output
    assert needle in out.output and out.output.count("\n") == 1, out.output
    assert not (tmp_path / "federated").exists()


def test_a_resumed_run_still_counts_the_statistics(tmp_path) -> None:
    """Check a run stopped after round 1 and resumed to 2 rounds keeps the statistics'
    release in its ε (from its run ledger; the normaliser round is not run again) and stays
    within the budget."""
    ckpt = tmp_path / "ckpt.npz"
    bounds = StatsBounds.from_doc(PUMP_BOUNDS, 1)

    def run(rounds: int, run_id: int) -> object:
        grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 2} for i in range(2)],
                             {"dataset": "pump", "dp-sgd-epsilon": 8.0,
                              "num-server-rounds": 2}, run_id=run_id)
        return run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=2,
                             rounds=rounds, strategy="fedavg", robust=False,
                             dp_sgd_epsilon=8.0, stats_bounds=bounds, checkpoint=ckpt)

    run(1, 1)
    res = run(2, 2)
    assert not [e for e in res.wire if e["phase"] == "stats"]
    assert res.privacy.stats_covered and res.privacy.rounds == 2
    assert res.privacy.stats_epsilon == pytest.approx(0.8, rel=1e-3)
    assert 7.9 < res.privacy.epsilon <= 8.0 + 1e-6


@pytest.mark.slow
def test_demo_with_stats_bounds_publishes_a_model_whose_epsilon_covers_them(data_dir,
                                                                            tmp_path) -> None:
    """Check `federate demo --stats-bounds FILE` over real SuperLink/SuperNode processes:
    the bounds travel through Flower's run config, and the signed manifest says the ε
    covers the normaliser statistics."""
    from edgewise.federated.publish import load_global_model

    path = tmp_path / "bounds.json"
    path.write_text(json.dumps(PUMP_BOUNDS))
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": os.environ["PATH"],
           "HOME": os.environ.get("HOME", "/tmp")}
    r = subprocess.run([sys.executable, "-m", "edgewise", "federate", "demo", "--clients", "3",
                        "--rounds", "2", "--json", "--stats-bounds", str(path),
                        "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=400, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    _, meta = load_global_model(data_dir, "federated-pump", "1")
    privacy = meta["privacy"]
    assert privacy["stats_epsilon"] == pytest.approx(0.8, rel=1e-3)
    assert "normaliser statistics" in privacy["dp_covers"]
    assert 7.5 < privacy["epsilon"] <= 8.0
    assert privacy["stats_bounds"]["lower"] == [PUMP_BOUNDS["lower"]]


# -- regressions: a device without DP, non-finite readings, overflowing bounds --------------

def _old_client(monkeypatch: pytest.MonkeyPatch, old: set[int], shift: float = 0.0) -> None:
    """Make the devices of partitions ``old`` answer the normaliser round as a client from
    before DP statistics does: clear statistics, no ``dp-stats-noise``; their means moved
    by ``shift`` on every sensor."""
    from edgewise.federated import client_app as ca

    new_reply = ca._stats_reply

    def reply(msg: Message, context, data, config) -> Message:
        if int(context.node_config["partition-id"]) not in old:
            return new_reply(msg, context, data, config)
        count, total, squares = data.stats()
        n = np.maximum(count, 1.0)[:, None]
        mean = total / n
        squares = squares + n * ((mean + shift) ** 2 - mean ** 2)
        total = total + n * shift
        arrays = ArrayRecord({"count": ca._arr(count), "sum": ca._arr(total),
                              "sumsq": ca._arr(squares)})
        return Message(RecordDict({"arrays": arrays,
                                   "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    monkeypatch.setattr(ca, "_stats_reply", reply)


def _dp_run(n: int, **kwargs: object) -> object:
    rc = {"dataset": "pump", "dp-sgd-epsilon": 8.0, "num-server-rounds": 1}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         rc)
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                         rounds=1, strategy="fedavg", robust=False, dp_sgd_epsilon=8.0,
                         stats_bounds=StatsBounds.from_doc(PUMP_BOUNDS, 1), **kwargs)


def test_stats_sent_without_the_dp_asked_for_are_left_out_of_the_normaliser(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Check that in a mixed fleet a device on a client from before DP statistics (clear
    statistics, no dp-stats-noise) is left out of the normaliser, logged and listed as
    refused naming its node, and the run goes on: with 2 devices its statistics (means
    moved by 10⁴) would otherwise be half of the normaliser's mean, under a report saying
    the ε covers it."""
    _old_client(monkeypatch, {0}, shift=1e4)
    with caplog.at_level(logging.WARNING, logger="edgewise"):
        res = _dp_run(2)
    refused = [r for r in res.rejected if r["reason"] == "no-dp-stats"]
    assert len(refused) == 1 and refused[0]["server_round"] == 0
    node = refused[0]["node_id"]
    assert f"node {node}" in caplog.text and "without DP" in caplog.text
    mean = res.normaliser.mean[0]
    lo, hi = np.array(PUMP_BOUNDS["lower"]), np.array(PUMP_BOUNDS["upper"])
    assert ((lo <= mean) & (mean <= hi)).all(), mean  # the DP device's alone
    assert res.privacy.stats_covered and res.rounds_done == 1


@pytest.mark.parametrize("secagg", [False, True])
def test_a_stats_round_left_without_dp_replies_fails_in_one_line(
        monkeypatch: pytest.MonkeyPatch, secagg: bool) -> None:
    """Check that when no device sends its statistics with the DP asked for, the run stops
    in one line naming them and the cause, also under SecAgg+ (same normaliser round)."""
    _old_client(monkeypatch, {0, 1})
    with pytest.raises(FederatedRunError, match=r"2 device\(s\) \(nodes .*\) sent them "
                                                r"without the DP asked for") as err:
        _dp_run(2, secagg=secagg)
    assert "\n" not in str(err.value)


def test_a_reply_stating_less_noise_than_asked_is_left_out() -> None:
    """Check the normaliser round with noise multiplier z keeps replies stating z (up to
    rounding) or more, and leaves out one stating z/2 or none."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE_ID, 0
    z = 4.97
    count, total, squares = np.array([10.0]), np.array([[5.0]]), np.array([[5.0]])

    def reply(node: int, metrics: dict) -> Message:
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in
                              (("count", count), ("sum", total), ("sumsq", squares))})
        instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
            {"num-examples": 1, **metrics})}), reply_to=instr)

    rnd = _StatsRound(1, 4, 0, dp=True, dp_noise=z)
    rnd.aggregate_train(1, [reply(1, {"dp-stats-noise": z}),
                            reply(2, {"dp-stats-noise": z * (1 - 1e-12)}),
                            reply(3, {"dp-stats-noise": z / 2}), reply(4, {})])
    assert rnd.undp == [3, 4] and rnd.normaliser is not None
    assert [r["node_id"] for r in rnd.refused] == [3, 4]
    assert "noise multiplier 2.485" in rnd.refused[0]["detail"]


def test_a_non_finite_reading_is_left_out_of_the_release() -> None:
    """Check a reading with a NaN or Inf value is dropped before clipping (one reading
    alone decides it, so the sensitivity holds), instead of making the release NaN
    whatever the noise."""
    b = _bounds(n_conditions=1, width=3)
    rng = np.random.default_rng(4)
    X = b.lower[0] + 4.0 * rng.random((40, 3))
    cond = np.zeros(40, dtype=np.int64)
    base = clipped_unit_stats(X, cond, b)
    for bad in ([np.nan, 11.0, 21.0], [1.0, np.inf, 21.0], [1.0, 11.0, -np.inf]):
        more = clipped_unit_stats(np.vstack([X, bad]), np.append(cond, 0), b)
        for a, t in zip(more, base, strict=True):
            np.testing.assert_array_equal(a, t)
        released = noisy_stats(np.vstack([X, bad]), np.append(cond, 0), b, 1.0, seed=0)
        assert all(np.isfinite(a).all() for a in released)


@pytest.mark.parametrize(("lo", "hi"), [(-1e308, 1e308), (-1e200, 1e200), (1e160, 1e160 + 1e150)])
def test_bounds_too_large_to_compute_with_are_refused_at_load(tmp_path, lo: float,
                                                              hi: float) -> None:
    """Check finite bounds whose width or squares overflow (every release would be Inf)
    are refused when read, naming the sensor and condition."""
    path = tmp_path / "bounds.json"
    path.write_text(json.dumps({"channels": ["speed_rpm", "flow_m3h"],
                                "lower": [[0, lo]], "upper": [[1, hi]]}))
    with pytest.raises(InvalidParameterError,
                       match=r"sensor flow_m3h \(condition 0\) .* too large"):
        StatsBounds.load(path, 1)
    StatsBounds.from_doc({"lower": [0, -1e150], "upper": [1, 1e150]}, 1)  # still fine
