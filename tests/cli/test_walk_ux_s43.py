"""README-walk UX fixes (s43).

Before:
* ``readings export --out typo/dir/pump-7.csv`` made the missing folders (as root even
  ``/nonexist``), where ``detect``, ``train``/``predict forecast`` and ``export`` refuse a
  missing directory.
* ``bench edge`` ran for minutes with no progress, and onnxruntime's quantizer printed
  ``WARNING:root:Please consider to run pre-processing before quantization...`` twice.
* ``agent --source bogus`` / ``--trust-key nosuch.pub`` exited 2 but left an empty
  ``./edgewise-agent/`` state folder.
* ``device delete nosuch`` exited 1 where ``device groups`` / ``rotate-secret`` refuse an
  unknown device with 2 (bad input).
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.detect.zscore import EWZScore
from tests.bench.test_bench_provenance import _edge_figures
from tests.cli import test_readings_export_cli
from tests.cli.test_readings_export_cli import Gateway
from tests.conftest import REPO

load_commands()


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner(mix_stderr=False).invoke(app, list(args), env=env or {})


# -- 1. readings export --out into a missing directory ---------------------------------------

gw = test_readings_export_cli.gw  # the live gateway fixture, shared


def test_readings_export_refuses_a_missing_out_directory(gw: Gateway, tmp_path: Path) -> None:
    """Check ``--out`` in a directory that does not exist is refused in one line (exit 2),
    naming the directory, as ``detect`` refuses it, and nothing is made; an existing
    directory still gets the CSV."""
    out = tmp_path / "tpyo" / "dir" / "pump-1.csv"
    r = gw.cli("export", gw.env.device, "--out", str(out))
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stderr == (f"error: --out {str(out)!r}: the directory {str(out.parent)!r} does "
                        "not exist; create it or give a path in an existing directory\n")
    assert not (tmp_path / "tpyo").exists()
    out.parent.mkdir(parents=True)
    r = gw.cli("export", gw.env.device, "--out", str(out))
    assert r.exit_code == 0 and out.read_text().startswith("time"), r.stderr


def test_readings_export_refuses_it_before_asking_the_gateway(tmp_path: Path) -> None:
    """Check the refusal comes before the gateway is contacted: with nothing listening at
    --gateway it is still the missing directory that is named (exit 2), not the gateway."""
    out = tmp_path / "nope" / "x.csv"
    r = _invoke("readings", "export", "pump-1", "--gateway", "http://127.0.0.1:9", "--out",
                str(out), env={"EDGEWISE_TOKEN": "x" * 40, "EDGEWISE_CA_FILE": None})
    assert r.exit_code == 2 and "does not exist; create it" in r.stderr, r.stderr
    assert not out.parent.exists()


# -- 2. bench edge: progress per part, the quantizer's root-logger advice kept quiet ----------

def _stub_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace every measuring step of ``edgewise.bench.edge.run`` by a stub."""
    import edgewise.bench.edge as edge

    z = np.zeros((2, 3))
    for name, value in {"nab_values": np.zeros(3), "_bench_detector": {},
                        "_all_nab_parity": {}, "_bench_multivariate": {},
                        "cmapss_fd001_windows": (z, z[:, 0], z, z[:, 0]),
                        "_bench_rul_standin": {}, "_bench_mlp": {}, "_bench_agent": {},
                        "_bench_rul_model": {}}.items():
        monkeypatch.setattr(edge, name, lambda *a, _v=value, **k: _v)


def test_bench_edge_run_reports_each_part_once_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``run`` calls ``progress`` with every part's name, in the order measured, and
    the result keeps its keys."""
    import edgewise.bench.edge as edge

    _stub_parts(monkeypatch)
    calls: list[str] = []
    res = edge.run("unused", repeats=1, progress=calls.append)
    assert calls == list(edge.SECTIONS)
    assert set(res) == {*edge.SECTIONS, "repeats"}


def test_bench_edge_cli_drives_a_progress_bar(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """Check ``bench edge`` hands ``run`` a progress callback, which takes every part."""
    import edgewise.bench.edge as edge

    data = tmp_path / "shared"  # (empty) files wherever bench edge's checks look
    for rel in (f"nab/data/{edge.NAB_SERIES}", "cmapss/train_FD001.txt.gz",
                "cmapss/test_FD001.txt.gz", "cmapss/RUL_FD001.txt"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).touch()
    seen: list[str] = []

    def fake_run(data: Path, repeats: int,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        assert progress is not None
        for name in edge.SECTIONS:
            progress(name)
            seen.append(name)
        return _edge_figures()

    monkeypatch.setattr(edge, "run", fake_run)
    r = _invoke("bench", "edge", "--data", str(data), "--repeats", "1")
    assert r.exit_code == 0, (r.exception, r.stderr)
    assert seen == list(edge.SECTIONS) and "rul_standin" in r.stdout


def test_quiet_root_warnings_keeps_the_advice_off_stderr() -> None:
    """Check a root-logger warning inside the block (how onnxruntime's quantizer logs its
    pre-processing advice) does not reach stderr, and afterwards the root logger is as it
    was: no stderr handler left behind by ``logging.basicConfig``, its level unchanged, a
    later warning printed plainly."""
    code = (
        "import logging\n"
        "from edgewise.edge.export_onnx import quiet_root_warnings\n"
        "with quiet_root_warnings():\n"
        "    logging.warning('Please consider to run pre-processing before quantization.')\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)\n"
        "logging.getLogger('other').warning('later warning')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"0 {logging.WARNING}\n"
    assert p.stderr == "later warning\n"


def test_int8_quantization_keeps_the_root_warnings_quiet_for_every_caller() -> None:
    """Check an int8 ONNX export through the Python API (``quantize_int8``, as ``bench edge``
    and ``edgewise export`` call it) prints no onnxruntime pre-processing advice on stderr:
    the quiet block sits around the quantizer itself now, where it sat around ``bench
    edge``'s call alone (``edgewise export`` printed the advice twice per graph), and a
    later root warning of other code still prints."""
    code = (
        "import logging, numpy as np, torch\n"
        "from edgewise.edge import export\n"
        "torch.manual_seed(0)\n"
        "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), "
        "torch.nn.Linear(4, 1)).eval()\n"
        "X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)\n"
        "q = export(net, format='onnx', dtype='int8', name='m', calibration=X)\n"
        "print(q.dtype)\n"
        "logging.warning('later warning')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "int8", p.stdout
    assert "pre-processing" not in p.stderr, p.stderr
    assert "later warning" in p.stderr, p.stderr


# -- 3. agent: arguments checked before the state dir is made ----------------------------------

@pytest.mark.parametrize("bad", [["--source", "bogus"], ["--trust-key", "nosuch.pub"]])
def test_agent_refused_start_makes_no_state_dir(bad: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a refused ``--source`` or ``--trust-key`` exits 2 naming it and leaves no
    ``./edgewise-agent/`` (the default state dir) behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_text("abc")
    r = _invoke("agent", "--gateway", "http://127.0.0.1:9", "--device", "pump-7",
                "--secret-file", "secret", *bad, env={"EDGEWISE_AGENT_DIR": None})
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert ("--source must be sim" if bad[0] == "--source" else "nosuch.pub") in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


# -- 5. device delete of an unknown device: exit 2, as groups and rotate-secret ----------------

def test_unknown_device_is_exit_2_for_delete_groups_and_rotate_secret(data_dir: Path) -> None:
    """Check ``device delete``, ``device groups`` and ``device rotate-secret`` all refuse an
    unknown device with exit 2 and one line, with and without a credentials file, and
    ``device delete`` makes nothing to say so."""
    def run(*args: str) -> Any:
        return _invoke(*args, "--data-dir", str(data_dir))

    commands = (("device", "delete", "nosuch"), ("device", "groups", "nosuch"),
                ("device", "rotate-secret", "--device", "nosuch"))
    for registered in (False, True):
        if registered:
            assert run("device", "add", "pump-1").exit_code == 0
        for cmd in commands:
            before = sorted(p.name for p in data_dir.iterdir())
            r = run(*cmd)
            assert (r.exit_code, r.stderr.count("\n")) == (2, 1), (cmd, r.exit_code, r.stderr)
            assert "'nosuch'" in r.stderr and "not registered" in r.stderr, r.stderr
            if cmd[1] == "delete":
                assert sorted(p.name for p in data_dir.iterdir()) == before

def test_onnx_host_test_runs_from_any_working_directory(tmp_path: Path) -> None:
    """Check ``<name>_host_test.py`` opens the graph beside itself: run from another folder
    it scores (it opened 'ewz.onnx' in the working directory: NoSuchFile, exit 1)."""
    load_commands()
    det = tmp_path / "ewz.pkl"
    det.write_bytes(pickle.dumps(EWZScore()))
    out = tmp_path / "out"
    r = CliRunner(mix_stderr=False).invoke(app, ["export", str(det), "--format", "onnx",
                                                 "--name", "ewz", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, str(out / "ewz_host_test.py")], input="1 2 1 50",
                         cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) == 4
