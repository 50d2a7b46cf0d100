"""Regression tests for the federated review findings (DP noise, normaliser, f, …)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.federated.client_app import app
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.server_app import run_federated

torch.set_num_threads(1)


def _grid(n: int, attacks: dict[int, str] | None = None, client_app=app) -> InProcessGrid:
    attacks = attacks or {}
    return InProcessGrid(client_app, [{"partition-id": i, "num-partitions": n,
                                       "attack": attacks.get(i, "")} for i in range(n)],
                         {"dataset": "pump"})


def test_device_dp_noise_is_scaled_to_the_updates_really_averaged(monkeypatch):
    """A screened-out update counts as a 0 update over the fixed denominator m=3 (not a
    mean of the k=2 left): the noise is z*C/m whatever k is, for the sensitivity 2C/m of
    one device replaced (a noise sd that changed with k told whether a device was
    averaged)."""
    import flwr.serverapp.strategy.dp_fixed_clipping as dpfc

    seen: list[float] = []
    real = dpfc.compute_stdv

    def spy(z, c, m):
        seen.append(real(z, c, m))
        return seen[-1]

    monkeypatch.setattr(dpfc, "compute_stdv", spy)
    res = run_federated(_grid(3, {0: "nan"}), kind="ae", n_features=6, n_conditions=1,
                        num_nodes=3, rounds=1, strategy="fedavg", dp_noise=1.0, dp_clip=0.5)
    assert [e["reason"] for e in res.rejected] == ["non-finite"]
    assert seen == [pytest.approx(1.0 * 0.5 / 3)]
    assert res.privacy.noise_multiplier == 1.0


def _stats_app(mode: str):
    """A client app whose partition 0 answers the normaliser round with ``mode`` stats."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from edgewise.federated import client_app as ca

    evil = ClientApp(mods=[ca.secagg_when_asked])

    @evil.train()
    def train(msg, context):
        cfg = msg.content["config"]
        if context.node_config["partition-id"] == 0 and cfg.get("phase") == "stats":
            count, total, sq = {
                "shape": ([600.0], np.zeros((1, 7)), np.ones((1, 7))),
                "nan": ([1.0], np.full((1, 6), np.nan), np.full((1, 6), np.nan)),
                "mean": ([1.0], np.full((1, 6), 1e9), np.full((1, 6), 1e9)),
                "var": ([1.0], np.zeros((1, 6)), np.full((1, 6), 1e12)),
                "weight": ([1.0e6], np.full((1, 6), 5e8), np.full((1, 6), 2.6e11)),
            }[mode]
            arrays = ArrayRecord({"count": Array(np.asarray(count)), "sum": Array(total),
                                  "sumsq": Array(sq)})
            return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
                {"num-examples": 10**9})}), reply_to=msg)
        return ca.train(msg, context)

    return evil


@pytest.mark.parametrize("mode", ["shape", "nan", "mean"])
def test_malformed_normaliser_statistics_stop_the_run_naming_the_device(mode):
    from edgewise.federated.server_app import FederatedRunError, fit_normaliser

    grid = _grid(3, client_app=_stats_app(mode))
    with pytest.raises(FederatedRunError, match=r"Normaliser round: device \(node \d+\) sent "
                                                r"malformed statistics"):
        fit_normaliser(grid, 1, 3)


def test_one_device_cannot_move_the_normaliser_under_a_robust_rule():
    """A self-consistent but extreme device (huge variance or mean with a huge count) is
    trimmed when f=1 is declared; the honest fleet's normaliser stays put."""
    from edgewise.federated.server_app import fit_normaliser

    honest = fit_normaliser(_grid(5), 1, 5)
    wire: list = []
    for mode in ("var", "weight"):
        norm = fit_normaliser(_grid(5, client_app=_stats_app(mode)), 1, 5,
                              num_malicious_nodes=1, wire=wire)
        np.testing.assert_allclose(norm.mean, honest.mean, rtol=0.2, atol=1.0)
        np.testing.assert_allclose(norm.std, honest.std, rtol=0.5)
    assert {e["phase"] for e in wire} == {"stats"} and len(wire) == 10


def test_privacy_report_says_what_epsilon_covers_and_what_it_does_not():
    from edgewise.federated.server_app import _privacy_report

    rep = _privacy_report({1: {"dp-sgd-epsilon": 7.9, "dp-sgd-noise": 1.1}}, dp_noise=0.0,
                          dp_clip=1.0, dp_delta=1e-5, dp_sgd_clip=1.0, num_devices=3,
                          rounds=1, sample_size=None, dp_sgd_epsilon=8.0).to_dict()
    assert rep["unit"] == "record" and rep["dp_covers"].startswith("model weights only")
    assert any("normaliser statistics" in x for x in rep["not_covered"])
    assert any("train-loss" in x for x in rep["not_covered"])


def test_cli_result_line_prints_the_scope_of_epsilon(capsys):
    from edgewise.cli.federate import _print_result
    from edgewise.federated.privacy import PrivacyReport

    p = PrivacyReport(unit="record", epsilon=7.9, delta=1e-5, noise_multiplier=1.0,
                      clipping_norm=1.0, num_devices=3, rounds=1, record_epsilon=7.9)
    _print_result({"rounds": 1, "strategy": "fedavg", "privacy": p.to_dict(),
                   "train_metrics": {}, "model": {"name": "m", "version": "1", "release": 1,
                                                  "data_dir": "d", "target": "t",
                                                  "key_id": "k"}}, as_json=False)
    out = capsys.readouterr().out
    assert "epsilon covers: model weights only" in out and "normaliser statistics" in out
    assert "refused" not in out


def test_cli_result_line_names_the_refused_updates(capsys):
    """The robust rule's refusals and statistics sent without the DP asked for were only in
    the log and --json; the print-out now names them (6 of them: the first 5 and a count)."""
    from edgewise.cli.federate import _print_result
    from edgewise.federated.privacy import PrivacyReport

    p = PrivacyReport(unit="record", epsilon=7.9, delta=1e-5, noise_multiplier=1.0,
                      clipping_norm=1.0, num_devices=3, rounds=2, record_epsilon=7.9)
    rejected = [{"server_round": 0, "node_id": 11, "reason": "no-dp-stats", "detail": ""}] + [
        {"server_round": r, "node_id": 12, "reason": "norm", "detail": ""} for r in range(1, 6)]
    _print_result({"rounds": 2, "strategy": "trimmed", "privacy": p.to_dict(),
                   "train_metrics": {}, "rejected": rejected,
                   "model": {"name": "m", "version": "1", "release": 1, "data_dir": "d",
                             "target": "t", "key_id": "k"}}, as_json=False)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "refused" in x]
    assert line == ("  refused: 6 updates: node 11 round 0 (no-dp-stats), node 12 round 1 "
                    "(norm), node 12 round 2 (norm), node 12 round 3 (norm), node 12 round 4 "
                    "(norm), and 1 more (--json lists all)")


def test_a_trimmed_mean_that_trims_nothing_is_refused_naming_a_beta_that_does():
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.strategies import make_strategy

    with pytest.raises(InvalidParameterError, match=r"beta=0.2 trims 0 updates per side of "
                                                    r"n=3.*use beta >= 0.334"):
        make_strategy("trimmed", num_nodes=3, beta=0.2)
    auto = make_strategy("trimmed", num_nodes=3, beta=0.0)  # the server's default: auto
    assert int(auto.strategy.beta * 3) == 1


def test_readme_server_command_with_three_clients_trims_a_sign_flipper():
    """``federate server --clients 3 --strategy trimmed`` (default beta) must trim one
    update per side, so a sign-flip attacker never reaches the mean."""
    from edgewise.cli.federate import _check_strategy

    _check_strategy("trimmed", 3, num_malicious_nodes=0, beta=0.0)  # accepted
    import typer

    with pytest.raises(typer.Exit):
        _check_strategy("trimmed", 3, num_malicious_nodes=0, beta=0.2)


def test_a_dropped_honest_device_does_not_reduce_f():
    """Bulyan with f=1 over n=7: one honest device failing must not make it a plain mean
    of the 6 left (an attacker among them that passes the screen would steer it); with
    f=1 still unaccounted for among 6, Bulyan cannot run, and the round is skipped."""
    from flwr.clientapp import ClientApp

    from edgewise.federated import client_app as ca
    from edgewise.federated.server_app import FederatedRunError

    flaky = ClientApp(mods=[ca.secagg_when_asked])

    @flaky.train()
    def train(msg, context):
        if context.node_config["partition-id"] == 1 \
                and msg.content["config"].get("phase", "fit") == "fit":
            raise ConnectionError("device went offline")
        return ca.train(msg, context)

    with pytest.raises(FederatedRunError, match=r"rounds \[1\] had too few updates left"):
        run_federated(_grid(7, client_app=flaky), kind="ae", n_features=6,
                      n_conditions=1, num_nodes=7, rounds=1, strategy="bulyan",
                      num_malicious_nodes=1)


def test_any_serverapp_exception_writes_error_json(tmp_path, monkeypatch):
    """An exception outside FederatedRunError (here from training; the registry step is
    wrapped the same way) leaves error.json naming it, not a silent 'no result' timeout."""
    import json

    from flwr.app import Context, RecordDict

    from edgewise.federated import server_app

    def boom(*_a, **_k):
        raise KeyError("registry exploded")

    monkeypatch.setattr(server_app, "run_federated", boom)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config={"out-dir": str(tmp_path / "out")})
    with pytest.raises(KeyError):
        server_app.main(None, ctx)
    err = json.loads((tmp_path / "out" / "error.json").read_text())
    assert err["type"] == "KeyError" and "the ServerApp failed: KeyError" in err["error"]


def test_next_registry_version_never_collides_with_a_gap(tmp_path):
    import torch

    from edgewise.federated.publish import register_global_model
    from edgewise.registry import Registry

    reg = Registry(tmp_path)
    for v in ("1", "3"):
        reg.publish("pump", v, v.encode(), format="npz-state-dict")
    reg.close()
    entry = register_global_model({"w": torch.zeros(2)}, tmp_path, "pump", {})
    assert entry["version"] == "4"


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    import socket

    from edgewise.federated.deploy import LocalFleet

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        fleet = LocalFleet(1, workdir=tmp_path, spawn_nodes=False, port=port)
        try:
            with pytest.raises(RuntimeError, match=rf"Port {port} on 127.0.0.1 is already in "
                                                   "use by another program"):
                fleet.start()
        finally:
            fleet.stop()
    assert not fleet.procs


def test_superlink_on_a_non_default_host_is_reached_there(tmp_path):
    """``server --host <IP>``: the readiness probe, the run's address and the SuperNodes
    use that IP (127.0.0.1 is only for the wildcard addresses)."""
    from edgewise.federated.deploy import LocalFleet, supernode_command

    fleet = LocalFleet(1, workdir=tmp_path, spawn_nodes=False, host="127.0.0.2")
    try:
        fleet.start()
        toml = (fleet.flwr_home / "config.toml").read_text()
        assert f'address = "127.0.0.1:{fleet.link_port}"' in toml  # runs: loopback only
    finally:
        fleet.stop()
    assert fleet.address == f"127.0.0.2:{fleet.port}"
    assert supernode_command(fleet.address, 0, 1, 9999)[3] == fleet.address
    assert LocalFleet(1, workdir=tmp_path / "w", host="0.0.0.0", port=1).address == \
        "127.0.0.1:1"


def test_default_ledger_does_not_depend_on_the_fleet_size(tmp_path, monkeypatch, capsys):
    """The same device's records keep one budget whatever --num-partitions says."""
    import os

    from edgewise.cli.federate import client

    cmds: list[list[str]] = []

    def fake_exec(cmd0, cmd, env):
        cmds.append(cmd)

    monkeypatch.setattr(os, "execvpe", fake_exec)
    for n in (3, 5):
        client(superlink="127.0.0.1:9092", data_dir=tmp_path, partition_id=0,
               num_partitions=n, port=9999, max_epsilon=8.0, privacy_ledger=None)
    ledgers = [c[c.index("--node-config") + 1].split("privacy-ledger=")[1] for c in cmds]
    assert ledgers[0] == ledgers[1]
    assert ledgers[0].endswith("privacy-ledger-0.json'")
    (tmp_path / "federated" / "privacy-ledger-0-of-3.json").write_text("[]")
    client(superlink="127.0.0.1:9092", data_dir=tmp_path, partition_id=0,
           num_partitions=3, port=9999, max_epsilon=8.0, privacy_ledger=None)
    assert "privacy-ledger-0-of-3.json" in capsys.readouterr().err


def test_resuming_a_finished_run_says_no_rounds_are_left(tmp_path):
    from edgewise.federated.server_app import FederatedRunError

    ckpt = tmp_path / "ckpt.npz"
    kw = dict(kind="ae", n_features=6, n_conditions=1, num_nodes=3, rounds=1,
              strategy="fedavg", checkpoint=ckpt)
    run_federated(_grid(3), **kw)
    with pytest.raises(FederatedRunError, match="holds round 1 of 1: no rounds are left"):
        run_federated(_grid(3), **kw)


def test_data_dir_that_is_a_file_is_one_error_line(tmp_path, capsys):
    import typer

    from edgewise.cli.federate import demo

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(typer.Exit):
        demo(data_dir=afile)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--data-dir {afile} is a file, not a folder" in err


def test_an_empty_cmapss_partition_names_itself_and_the_engine_count():
    from pathlib import Path

    from edgewise.errors import InvalidParameterError
    from edgewise.federated.client_app import device_data

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "cmapss"
    if not (data / "train_FD002.txt.gz").exists():
        pytest.skip("C-MAPSS FD002 not available")
    with pytest.raises(InvalidParameterError, match=r"Partition 299 of 300 holds no C-MAPSS "
                                                    r"engine: FD002 .* has 260 engines"):
        device_data("cmapss", str(data), 299, 300)
