"""Options of `bench edge`, `bench active`, `bench ingest --mosquitto` and every bench `--out`
are refused in one `error:` line before any work: before, `bench edge --out /tmp` measured
for four minutes and then died on IsADirectoryError, `--repeats 0` and a `--data` without
the corpus ended in tracebacks, `bench active --nab-files -3` quietly used all but three
files, `--datasets ,` ran nothing and wrote an empty report, `bench ingest --mosquitto PORT`
with no broker there printed its first progress line and a ConnectionRefusedError
traceback, and `bench nab --out ""` wrote 58 result files into the working directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import ConfigError
from tests.conftest import REPO, free_port, shared_data_dir

load_commands()

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/nbc"}


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner(mix_stderr=False).invoke(app, list(args))


def _refused(res, *needles: str) -> str:  # type: ignore[no-untyped-def]
    """The one `error:` line of a refusal (exit 2), holding every needle."""
    assert res.exit_code == 2, (res.exit_code, res.exception, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the runs of the three benchmarks (and NAB loading) by a record of the call."""
    import edgewise.bench.active as active
    import edgewise.bench.edge as edge
    import edgewise.bench.ingest as ingest
    import edgewise.bench.nab as nab

    ran: list[str] = []

    def record(name: str, result: object = None):  # type: ignore[no-untyped-def]
        def fake(*a: object, **k: object) -> object:
            ran.append(name)
            if result is None:
                raise AssertionError(f"{name} ran")
            return result
        return fake

    monkeypatch.setattr(edge, "run", record("edge.run"))
    monkeypatch.setattr(active, "load_nab", record("active.load_nab"))
    monkeypatch.setattr(active, "run_benchmark", record("active.run_benchmark", {}))
    monkeypatch.setattr(ingest, "run_ingest_bench", record("ingest.run_ingest_bench"))
    monkeypatch.setattr(nab, "run_nab", record("nab.run_nab"))
    return ran


@pytest.fixture
def edge_data(tmp_path: Path) -> Path:
    """A folder with (empty) files wherever `bench edge` reads: enough for its checks."""
    from edgewise.bench.edge import NAB_SERIES

    root = tmp_path / "shared"
    for rel in (f"nab/data/{NAB_SERIES}", "cmapss/train_FD001.txt.gz",
                "cmapss/test_FD001.txt.gz", "cmapss/RUL_FD001.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    return root


# the shared helper --------------------------------------------------------------------

def test_out_path_takes_a_missing_folder_and_refuses_what_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from edgewise.cli._app import out_path

    deep = tmp_path / "a" / "b"
    assert out_path("--out", str(deep), folder=True, example="/tmp/x") == deep
    assert out_path("--out", str(deep / "r.md"), folder=False, example="r.md") == deep / "r.md"
    assert out_path("--out", ".", folder=True, example="/tmp/x") == Path(".")  # said, not empty
    assert not (tmp_path / "a").exists()  # checking makes nothing
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    for value, folder, needle in (
        ("", True, "an empty one would mean the working directory. Got ''."),
        ("  ", False, "Got '  '."),
        (str(locked / "new" / "r.md"), False, f"but {str(locked)!r} is not writable"),
    ):
        with pytest.raises(typer.Exit) as exc:
            out_path("--out", value, folder=folder, example="/tmp/x")
        assert exc.value.exit_code == 2
        assert needle in capsys.readouterr().err


# bench nab (and every other --out) ----------------------------------------------------

@pytest.mark.parametrize("kind", ["empty", "under a file"])
def test_bench_nab_refuses_an_empty_out_or_one_under_a_file(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_work: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x\n")
    out = "" if kind == "empty" else str(tmp_path / "notes.txt" / "nab")
    res = _invoke("bench", "nab", "--data", str(shared_data_dir() / "nab"), "--out", out)
    line = _refused(res, "--out must be a folder for the results")
    assert ("Got ''" in line) if kind == "empty" else ("is a file, so no folder" in line)
    assert no_work == [] and os.listdir(tmp_path) == ["notes.txt"]


# bench edge ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "wanted"), [
    (["--repeats", "0"], "--repeats must be an int >= 1. Got 0"),
    (["--repeats", "-2"], "--repeats must be an int >= 1. Got -2"),
])
def test_bench_edge_refuses_repeats_below_one(
        args: list[str], wanted: str, edge_data: Path, no_work: list[str]) -> None:
    res = _invoke("bench", "edge", "--data", str(edge_data), *args)
    assert isinstance(res.exception, ConfigError), res.exception  # one line, from main()
    assert wanted in str(res.exception)
    assert no_work == []


def test_bench_edge_refuses_a_data_folder_without_the_corpus(
        edge_data: Path, tmp_path: Path, no_work: list[str]) -> None:
    _refused(_invoke("bench", "edge", "--data", str(tmp_path / "none")),
             "--data must be a folder holding nab/", "Got ", "no nab/data/realKnownCause/")
    (edge_data / "cmapss" / "RUL_FD001.txt").unlink()
    _refused(_invoke("bench", "edge", "--data", str(edge_data)),
             "which has no cmapss/RUL_FD001.txt[.gz].")
    assert no_work == []


@pytest.mark.parametrize("kind", ["empty", "a directory", "under a file"])
def test_bench_edge_refuses_an_out_it_could_not_write(
        kind: str, edge_data: Path, tmp_path: Path, no_work: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("x\n")
    out, needle = {"empty": ("", "Got ''."),
                   "a directory": (str(tmp_path), "which is a directory"),
                   "under a file": (str(tmp_path / "notes.txt" / "edge.md"),
                                    "is a file, so no folder")}[kind]
    res = _invoke("bench", "edge", "--data", str(edge_data), "--repeats", "1", "--out", out)
    _refused(res, "--out must be a file to write", needle)
    assert no_work == []


# bench active -------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "wanted"), [
    (["--nab-files", "-3"], ("--nab-files must be an int >= 0 (the first N NAB files, sorted; "
                             "0 = all). Got -3.")),
    (["--datasets", ","], ("--datasets must name one or more of nab, pumps, sim-pumps, "
                           "comma-separated, each once. Got ',', which names none.")),
    (["--datasets", "nab,junk"], "Got 'nab,junk': 'junk' is not one of them."),
    (["--datasets", "pumps,pumps"], "Got 'pumps,pumps': 'pumps' is named twice."),
    (["--strategies", ""], "--strategies must name one or more of mix, "),
    (["--strategies", "mix,best"], "Got 'mix,best': 'best' is not one of them."),
    (["--out", ""], ("--out must be a file to write, e.g. benchmarks/results/active.md; an "
                     "empty one would mean the working directory. Got ''.")),
    (["--out", "."], "Got '.', which is a directory."),
])
def test_bench_active_refuses_bad_options_before_reading_nab(
        args: list[str], wanted: str, no_work: list[str]) -> None:
    nab = ["--nab-dir", str(shared_data_dir() / "nab")]
    _refused(_invoke("bench", "active", "--datasets", "nab,pumps", *nab, *args), wanted)
    assert no_work == []  # NAB not read, nothing simulated


def test_bench_active_still_makes_the_folder_of_its_report(
        tmp_path: Path, no_work: list[str]) -> None:
    out = tmp_path / "new" / "active.md"
    res = _invoke("bench", "active", "--datasets", "pumps", "--seeds", "1", "--json",
                  "--out", str(out))
    assert res.exit_code == 0, (res.exception, res.stderr)
    assert no_work == ["active.run_benchmark"]
    assert out.read_text().startswith("# Active learning")


# bench ingest --mosquitto -------------------------------------------------------------

@contextmanager
def _fake_broker(reply: bytes) -> Iterator[int]:
    """A port where one connection gets ``reply`` to whatever it sends first."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(reply)
            conn.settimeout(0.5)
            try:
                conn.recv(1024)  # the client's DISCONNECT, or its close
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        t.join(5)


@pytest.mark.parametrize(("reply", "wanted"), [
    (None, "nothing answers there (Connection refused)."),
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", "what listens there does not answer an MQTT CONNECT."),
    (bytes([0x20, 2, 0, 5]), "the broker refused the connection (Not authorized)."),
])
def test_bench_ingest_refuses_a_mosquitto_port_without_a_broker(
        reply: bytes | None, wanted: str, no_work: list[str]) -> None:
    with _fake_broker(reply) if reply is not None else nullcontext(free_port()) as port:
        res = _invoke("bench", "ingest", "--seconds", "0.3", "--mosquitto", str(port))
    _refused(res, "--mosquitto must be the port of a running Mosquitto on 127.0.0.1 that lets "
                  f"an anonymous client connect, or 0 for the embedded amqtt. Got {port}: ",
             wanted)
    assert no_work == []


def test_a_broker_that_accepts_passes_the_mosquitto_check() -> None:
    from edgewise.cli.bench_ingest import check_mosquitto

    with _fake_broker(bytes([0x20, 2, 0, 0])) as port:  # CONNACK: accepted
        check_mosquitto(port)


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="no mosquitto installed")
def test_a_real_mosquitto_passes_the_mosquitto_check() -> None:
    from edgewise.cli.bench_ingest import check_mosquitto
    from tests.conftest import port_answers

    port = free_port()
    proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while not port_answers("127.0.0.1", port) and time.monotonic() < end:
            time.sleep(0.05)
        check_mosquitto(port)
    finally:
        proc.terminate()
        proc.wait(10)


# as real processes: one line through `edgewise`'s main --------------------------------

def test_refusals_are_one_line_from_the_real_command(tmp_path: Path) -> None:
    def one_line(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                           text=True, env=ENV, check=False, timeout=120, cwd=tmp_path)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
        assert lines[0].startswith("error: ") and p.stdout == ""
        return lines[0]

    nab = str(shared_data_dir() / "nab")
    assert "--out must be a folder for the results" in one_line(
        "bench", "nab", "--data", nab, "--out", "")
    assert "--repeats must be an int >= 1. Got 0" in one_line("bench", "edge", "--repeats", "0")
    assert f"Got {str(tmp_path)!r}, which is a directory" in one_line(
        "bench", "active", "--datasets", "pumps", "--out", str(tmp_path))
    assert "--mosquitto must be the port" in one_line("bench", "ingest", "--mosquitto",
                                                      str(free_port()))
    assert os.listdir(tmp_path) == []  # nothing written into the working directory
