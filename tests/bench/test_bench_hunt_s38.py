"""Bench hunt (session 38): the ingest bench's gateway no longer inherits ``EDGEWISE_*``.

Before: `bench ingest` started its gateway (and raw broker) with this process's whole
environment, so a shell's ``EDGEWISE_STORE`` got the bench's ``bench-NNN`` readings and
alerts for good (5,560 readings after `--devices 1 --seconds 1`), and ``EDGEWISE_DETECTOR``,
``EDGEWISE_FAST_STREAM_Z`` and the like changed what was measured unrecorded. Also: the
ingest JSON recorded only ``cpus``, `bench federated`'s no machine at all, and
``fleet_cross_cost.py`` a hard-coded "2 cores (shared)"; ``ingest.md`` gave a p99 range its
JSON does not hold; ``bench/groups.py`` counted 14 NAB kinds where it lists 13.
"""

from __future__ import annotations

import json
import re
import runpy
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgewise.bench._machine import machine, machine_fields
from tests.conftest import REPO

#: what the shell of a gateway host might hold; none of it may reach the bench's servers
HOST_ENV = {"EDGEWISE_DETECTOR": "ewzscore", "EDGEWISE_FAST_STREAM_Z": "9",
            "EDGEWISE_MAX_FUTURE_S": "1"}
#: the only settings the bench gives its gateway
BENCH_SETTINGS = {"EDGEWISE_RATE_LIMIT_PER_S": "1e9", "EDGEWISE_RATE_LIMIT_BURST": "1e9",
                  "EDGEWISE_MQTT_CONSUMER": "subscriber"}


class _Started(Exception):
    """Raised by the stand-in Popen: the command and environment are all the test needs."""


def test_the_ingest_gateway_gets_a_temporary_store_and_no_inherited_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Check the gateway `bench ingest` starts has no EDGEWISE_* of this process (only the
    bench's own settings) and an explicit --store in its temporary folder, and the raw
    broker none either. Failed before: EDGEWISE_STORE and the rest were passed on."""
    import edgewise.bench.ingest as ingest

    prod = tmp_path / "prod.duckdb"
    monkeypatch.setenv("EDGEWISE_STORE", f"duckdb:///{prod}")
    for k, v in HOST_ENV.items():
        monkeypatch.setenv(k, v)
    started: list[tuple[list[str], dict[str, str]]] = []

    def popen(args: list[str], env: dict[str, str], **kw: Any) -> None:
        started.append((list(args), dict(env)))
        raise _Started

    monkeypatch.setattr(ingest.subprocess, "Popen", popen)
    with pytest.raises(_Started):
        ingest._gateway(1, 0.1, None, 10, 0, lambda s: None, consumer="subscriber")
    (args, env), = started
    assert {k: v for k, v in env.items() if k.startswith("EDGEWISE_")} == BENCH_SETTINGS
    assert str(Path(ingest.__file__).resolve().parents[2]) in env["PYTHONPATH"]
    data = args[args.index("--data-dir") + 1]
    store = args[args.index("--store") + 1]
    assert store.startswith("duckdb:///") and Path(store[len("duckdb:///"):]).parent == \
        Path(data).absolute()
    assert not prod.exists()
    assert not [k for k in ingest._env() if k.startswith("EDGEWISE_")]  # the raw broker's


def test_the_ingest_result_records_the_machine_and_what_it_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `bench ingest --json` holds machine, cpus and python, the gateway's settings
    and the names (never the values) of the EDGEWISE_* variables it did not pass on.
    Failed before: only cpus."""
    import edgewise.bench.ingest as ingest

    monkeypatch.setenv("EDGEWISE_STORE", "postgresql://ew:secret@db/ew")
    gw = {"messages_per_s": 10.0, "readings_per_s": 80.0}
    monkeypatch.setattr(ingest, "_raw", lambda *a, **k: {"readings_per_s": 100.0})
    monkeypatch.setattr(ingest, "_gateway", lambda *a, **k: dict(gw))
    said: list[str] = []
    r = ingest.run_ingest_bench(devices=1, seconds=0.5, progress=said.append)
    assert {k: r[k] for k in ("machine", "cpus", "python")} == machine_fields()
    assert r["machine"] == machine()
    assert "EDGEWISE_STORE" in r["environment_ignored"]
    assert "secret" not in json.dumps(r) and "secret" not in " ".join(said)
    assert r["gateway_settings"]["EDGEWISE_RATE_LIMIT_PER_S"] == "1e9"
    assert any("EDGEWISE_STORE" in s for s in said)


# bench federated: the machine in both modes ---------------------------------------------

def test_the_federated_benchmark_records_the_machine(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """Check `bench federated --json` (one seed and several) holds machine, cpus and
    python. Failed before: no machine at all."""
    import edgewise.bench.federated as bf
    from tests.federated.test_bench_federated_sampling_and_options import _fake_benchmark

    _fake_benchmark(monkeypatch)
    for seeds in (1, 2):
        out = bf.run_federated_benchmark_seeds(tmp_path, seeds, clients=4, rounds=1,
                                               dp_clients=4, dp_rounds=1)
        assert {k: out[k] for k in ("machine", "cpus", "python")} == machine_fields()


def test_the_stats_dp_benchmark_records_the_machine(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """Check `bench federated --stats-dp-only --json` holds machine, cpus and python.
    Failed before: no machine at all."""
    import edgewise.bench.federated as bf
    import edgewise.federated.data as data

    norm = SimpleNamespace(mean=np.zeros(2), std=np.ones(2))
    result = SimpleNamespace(privacy=SimpleNamespace(epsilon=8.0, noise_multiplier=1.0),
                             normaliser=norm)
    monkeypatch.setattr(bf, "_federate", lambda *a, **k: result)
    monkeypatch.setattr(bf, "_rmse_of", lambda r, d: 20.0)
    monkeypatch.setattr(bf, "public_envelope", lambda *a, **k: object())
    monkeypatch.setattr(data, "cmapss_file", lambda d, split: d / split)
    monkeypatch.setattr(data, "_read", lambda path: None)
    monkeypatch.setattr(data, "_engine_rows", lambda df: (None, None, None, None))
    monkeypatch.setattr(data, "ConditionNormaliser", SimpleNamespace(
        stats=lambda sensors, cond: (), from_stats=lambda *a: norm))
    out = bf.run_stats_dp_benchmark(tmp_path, seeds=1, clients=4, rounds=1)
    assert {k: out[k] for k in ("machine", "cpus", "python")} == machine_fields()


# fleet_cross_cost.py: the machine as measured ------------------------------------------

def test_fleet_cross_cost_records_the_machine_it_ran_on(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Check the script's JSON says this machine (machine_fields()), not "2 cores
    (shared)". Failed before: the core count was hard-coded."""
    import edgewise.bench.fleet as fleet

    def bench_fleet(*a: Any, **k: Any) -> dict[str, Any]:
        return {"readings": 10, "detectors": [
            {"fleet_prior": True, "cross_gate": True, "seconds": 2.0},
            {"fleet_prior": False, "cross_gate": True, "seconds": 1.5},
            {"fleet_prior": False, "cross_gate": False, "seconds": 1.0}]}

    monkeypatch.setattr(fleet, "bench_fleet", bench_fleet)
    runpy.run_path(str(REPO / "benchmarks/scripts/fleet_cross_cost.py"), run_name="__main__")
    doc = json.loads(capsys.readouterr().out)
    assert {k: doc[k] for k in ("machine", "cpus", "python")} == machine_fields()
    assert doc["ratio"] == 2.0


# figures and counts in the text match their sources -------------------------------------

def test_ingest_md_s_embedded_p99_range_is_the_json_s() -> None:
    """Check the verdict's half-load p99 for the embedded broker (median; min-max across
    runs) is what ingest.json holds. Failed before: "288-2,147" (the runs: 688, 590, 2,147)."""
    text = " ".join((REPO / "benchmarks/results/ingest.md").read_text().split())
    m = re.search(r"embedded broker \(([\d,]+) ms; ([\d,]+)-([\d,]+) ms across runs\)", text)
    assert m, "the verdict's embedded-broker p99 sentence is gone"
    runs = json.loads((REPO / "benchmarks/results/ingest.json").read_text())["emb"]
    p99 = [r["half"]["p99_stored_ms"] for r in runs]
    wanted = [statistics.median(p99), min(p99), max(p99)]
    assert [int(g.replace(",", "")) for g in m.groups()] == [round(v) for v in wanted]


def test_groups_docstring_counts_the_nab_kinds_it_lists() -> None:
    """Check the module docstring's "(N kinds: a, b, ...)" has N = the kinds listed = the
    kinds NAB_KINDS gives. Failed before: 14 for 13."""
    import edgewise.bench.groups as groups

    doc = " ".join((groups.__doc__ or "").split())
    m = re.search(r"\((\d+) kinds: ([^)]*)\)", doc)
    assert m, "the docstring no longer counts NAB's kinds"
    listed = [k.strip() for k in m.group(2).split(",")]
    kinds = {k for k in groups.NAB_KINDS.values() if k != "ad_cpc_or_cpm"} | {"ad_cpc",
                                                                              "ad_cpm"}
    assert int(m.group(1)) == len(listed) == len(kinds)
