"""``edgewise bench federated``: the device-level DP runs' per-round sample is secret, and
options one mode does not use are refused in it.

Hunted: the benchmark seeded Python's ``random`` with the published seed (0..N-1) and
Flower's FedAvg samples devices with ``random.sample``, so ``--dp-sample`` reported an ε
amplified by a sample anyone could replay (the most-sampled device took part in 10 of 40
rounds: ε 17.6 without amplification, reported 8). ``--stats-margin`` without
``--stats-dp-only``, and ``--dp-clients/--dp-rounds/--dp-sample/--dp-local-epochs`` with
it, were accepted and ignored.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import shared_data_dir


def _fake_benchmark(monkeypatch) -> list[tuple[str, list[int]]]:
    """Replace every heavy step of :func:`run_federated_benchmark` by stand-ins; each
    federated run records the sample Flower's sampler (``random.sample``) would draw."""
    import edgewise.bench.federated as bf
    import edgewise.federated.data as data
    import edgewise.federated.model as model
    import edgewise.federated.privacy as privacy

    drawn: list[tuple[str, list[int]]] = []
    result = SimpleNamespace(
        bytes_per_client_round=lambda: 1, rejected=[],
        privacy=SimpleNamespace(epsilon=8.0, noise_multiplier=1.0, stats_epsilon=0.8,
                                stats_noise_multiplier=1.0))

    def federate(_cfg, n, _rounds, _seed, _attackers=0, run_config=None, **kw):
        m = kw.get("sample_size") or n
        drawn.append((f"n={n} m={m} dp={kw.get('dp_noise', 0)}", random.sample(range(n), m)))
        return result

    pooled = SimpleNamespace(pooled=lambda: (np.zeros((2, 1)), np.zeros(2)), n_features=1,
                             X_test=None, y_test=None)
    monkeypatch.setattr(bf, "_federate", federate)
    monkeypatch.setattr(bf, "_rmse_of", lambda r, d: 1.0)
    monkeypatch.setattr(bf, "public_envelope", lambda *a, **k: object())
    monkeypatch.setattr(bf, "_pump_fleet_figures", lambda seed: {})
    monkeypatch.setattr(data, "load_cmapss", lambda d: pooled)
    monkeypatch.setattr(model, "build_model", lambda *a, **k: None)
    monkeypatch.setattr(model, "train_local", lambda *a, **k: None)
    monkeypatch.setattr(model, "rmse", lambda *a: 1.0)
    monkeypatch.setattr(privacy, "device_noise_for_epsilon", lambda *a, **k: 1.5)
    return drawn


def test_the_device_level_sample_is_not_replayable_from_the_seed(monkeypatch, tmp_path):
    """Two runs of one seed draw different device-level DP samples (the seed is
    published: a sample drawn from it could be replayed, and the ε's amplification by
    sampling would not hold); the output says where the sample comes from."""
    from edgewise.bench.federated import run_federated_benchmark

    drawn = _fake_benchmark(monkeypatch)
    out = run_federated_benchmark(tmp_path, dp_clients=260, dp_sample=26, dp_rounds=3, seed=0)
    first = [s for what, s in drawn if what.startswith("n=260 m=26 ")]
    drawn.clear()
    run_federated_benchmark(tmp_path, dp_clients=260, dp_sample=26, dp_rounds=3, seed=0)
    again = [s for what, s in drawn if what.startswith("n=260 m=26 ")]
    assert len(first) == len(again) == 3  # eps 8, eps 1, the clean reference
    assert all(a != b for a, b in zip(first, again, strict=True)), "sample replayed"
    assert "OS's entropy" in out["dp_device_sampling"] and "26 of 260" in out["dp_device_sampling"]


def test_the_runs_without_device_level_dp_still_replay(monkeypatch, tmp_path):
    """The runs that use every device keep their seeded order (their figures replay)."""
    from edgewise.bench.federated import run_federated_benchmark

    drawn = _fake_benchmark(monkeypatch)
    run_federated_benchmark(tmp_path, clients=10, dp_clients=20, dp_sample=5, seed=3)
    first = [s for what, s in drawn if what.startswith("n=10 ")]
    drawn.clear()
    run_federated_benchmark(tmp_path, clients=10, dp_clients=20, dp_sample=5, seed=3)
    assert first and [s for what, s in drawn if what.startswith("n=10 ")] == first


@pytest.mark.parametrize(("args", "needle"), [
    (["--stats-margin", "0.5"], "--stats-margin 0.5 needs --stats-dp-only"),
    (["--stats-dp-only", "--dp-clients", "5"], "it does not use --dp-clients 5"),
    (["--stats-dp-only", "--dp-rounds", "2", "--dp-sample", "3", "--dp-local-epochs", "9"],
     "it does not use --dp-rounds 2, --dp-sample 3, --dp-local-epochs 9"),
])
def test_options_the_mode_ignores_are_refused(monkeypatch, args, needle):
    """One line, exit 2, no benchmark run; at their default value they pass."""
    import edgewise.bench.federated as bf
    import edgewise.cli.federate  # noqa: F401 - registers `bench federated`
    from edgewise.cli import app

    ran: list[dict] = []
    monkeypatch.setattr(bf, "run_federated_benchmark_seeds",
                        lambda d, seeds, **kw: ran.append(kw) or {})
    monkeypatch.setattr(bf, "run_stats_dp_benchmark", lambda d, **kw: ran.append(kw) or {})
    data = shared_data_dir() / "cmapss"
    if not (data / "train_FD002.txt.gz").exists():
        pytest.skip(f"C-MAPSS FD002 not in {data}")
    r = CliRunner().invoke(app, ["bench", "federated", "--data", str(data), *args])
    assert (r.exit_code, ran) == (2, []), r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    defaults = ["--stats-margin", "0.1"] if "--stats-dp-only" not in args else [
        "--stats-dp-only", "--dp-clients", "260", "--dp-sample", "0"]
    r = CliRunner().invoke(app, ["bench", "federated", "--data", str(data), *defaults])
    assert r.exit_code == 0 and len(ran) == 1, r.output
