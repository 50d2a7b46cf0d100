"""More bad options get one `error:` line naming the option, exit 2, before any work: `serve
--mqtt` at a broker that does not answer (a ConnectionError traceback after 10 s), `serve
--data-dir` a file (FileExistsError), an `--out` under /proc that root's os.access passed
(`bench nab` worked, then FileNotFoundError), `bench fleet --pumps 0` / `--hours 0` and
`token create --role` named without `--` or as a parameter (and made the data dir first),
`bench cmapss --models` / `--subset` named as library parameters or files, `bench ingest
--devices` with no upper bound, and an empty `export --out` or `quality --plots` that wrote
into the working directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.cli import main
from tests.conftest import REPO, free_port

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/nbc"}


class Ran(Exception):
    """Raised by a stand-in for the work a refused command must not reach."""


def _must_not_run(*a: object, **k: object) -> None:
    raise Ran


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> str:
    """Run ``edgewise ARGS`` in this process, through the console script's ``main``; return
    its one `error:` line (exit 2, nothing else on stderr)."""
    monkeypatch.setattr(sys, "argv", ["edgewise", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, (exc.value.code, err)
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# 1. serve --mqtt at a broker that does not accept the gateway ---------------------------

def test_external_broker_start_raises_an_edgewise_connection_error() -> None:
    from edgewise.errors import BrokerUnavailableError, EdgewiseError
    from edgewise.transport.client import ExternalBroker

    port = free_port()  # nothing listens there: every attempt is refused at once
    broker = ExternalBroker(lambda messages: [], f"mqtt://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as exc:
        asyncio.run(broker.start(timeout=0.3))
    assert time.monotonic() - t0 < 5
    assert isinstance(exc.value, ConnectionError) and isinstance(exc.value, EdgewiseError)
    assert (exc.value.host, exc.value.port) == ("127.0.0.1", port)
    assert f"127.0.0.1:{port} did not accept the gateway within 0.3 s" in str(exc.value)


def test_serve_names_mqtt_when_its_broker_does_not_accept(tmp_path: Path) -> None:
    # serve as its console script, with the broker's wait cut from 10 s to 0.5 s
    script = ("import edgewise.transport.client as c; c.ExternalBroker.start.__defaults__ = "
              "(0.5,); from edgewise.cli import main; main()")
    url = f"mqtt://gw:s3cret@127.0.0.1:{free_port()}"
    p = subprocess.run([sys.executable, "-c", script, "serve", "--data-dir",
                        str(tmp_path / "d"), "--port", str(free_port()), "--mqtt", url],
                       capture_output=True, text=True, env=ENV, timeout=120, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:], p.stderr
    # the admin token made before the broker was tried is shown, not lost
    assert lines[0].startswith("admin token (shown once, keep it; the gateway did not start)")
    assert len(lines) == 2, p.stderr
    assert lines[-1].startswith(f"error: --mqtt (EDGEWISE_MQTT) '{url.replace('s3cret', '***')}'")
    assert "did not accept the gateway within 0.5 s" in lines[-1]
    assert "'embedded'" in lines[-1] and "s3cret" not in p.stderr


# 2. serve / demo --data-dir that is a file --------------------------------------------

@pytest.mark.parametrize(("command", "where"), [
    ("serve", "file"), ("serve", "under a file"), ("demo", "file")])
def test_serve_and_demo_refuse_a_data_dir_that_is_no_directory(
        tmp_path: Path, command: str, where: str) -> None:
    f = tmp_path / "passwd"
    f.write_text("root:x:0:0\n")
    data_dir = f if where == "file" else f / "d"
    p = subprocess.run([sys.executable, "-m", "edgewise", command, "--data-dir", str(data_dir),
                        "--port", str(free_port()), "--mqtt-port", str(free_port())],
                       capture_output=True, text=True, env=ENV, timeout=120, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("error: --data-dir (EDGEWISE_DATA_DIR) must be the directory")
    assert repr(str(data_dir)) in lines[0] and "is a file" in lines[0]
    assert f.read_text() == "root:x:0:0\n"


# 3. out_path tries writing; os.access says yes to root even under /proc ---------------

@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.access`` answering as it does for root: yes to every write."""
    monkeypatch.setattr(os, "access", lambda path, mode: True)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.usefixtures("as_root")
def test_out_path_refuses_where_nothing_can_be_made(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from edgewise.cli._app import out_path

    for value, folder in (("/proc/edgewise-x/y", True), ("/proc/edgewise-x.md", False)):
        with pytest.raises(typer.Exit) as exc:
            out_path("--out", value, folder=folder, example="/tmp/x")
        assert exc.value.exit_code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out must be a ") and f"Got {value!r}" in err
        assert "nothing can be written in '/proc'" in err
    assert not Path("/proc/edgewise-x").exists()


def test_out_path_leaves_nothing_behind(tmp_path: Path) -> None:
    from edgewise.cli._app import out_path

    (tmp_path / "old.md").write_text("kept\n")
    before = os.stat(tmp_path / "old.md")
    for value, folder in ((tmp_path, True), (tmp_path / "a" / "b", True),
                          (tmp_path / "new.md", False), (tmp_path / "old.md", False),
                          (tmp_path / "c" / "r.md", False)):
        assert out_path("--out", str(value), folder=folder, example="x") == value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.md"]
    after = os.stat(tmp_path / "old.md")
    assert (tmp_path / "old.md").read_text() == "kept\n"
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.usefixtures("as_root")
def test_bench_nab_refuses_an_out_under_proc_before_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import edgewise.bench.nab as nab

    monkeypatch.setattr(nab, "run_nab", _must_not_run)
    data = tmp_path / "nab"
    (data / "labels").mkdir(parents=True)
    (data / "labels" / "combined_windows.json").write_text("{}")
    line = refused(monkeypatch, capsys, "bench", "nab", "--data", str(data),
                   "--out", "/proc/edgewise-x/y")
    assert "--out must be a folder for the results that this user may write" in line


# 4. every refusal names its option ----------------------------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    (["--pumps", "0"], "error: --pumps must be at least 1"),
    (["--hours", "0"], "error: --hours must give at least one reading"),
    (["--hours", "nan"], "error: --hours must give at least one reading"),
])
def test_bench_fleet_names_pumps_and_hours(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], needle: str) -> None:
    import edgewise.bench.fleet as fleet

    monkeypatch.setattr(fleet, "bench_fleet", _must_not_run)
    line = refused(monkeypatch, capsys, "bench", "fleet", *args)
    assert line.startswith(needle) and f"Got {args[1]}" in line


@pytest.fixture
def cmapss_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with (empty) files of subsets FD001 and FD002, and FD003 without its RUL
    file; the benchmark itself replaced by a stand-in that must not run."""
    import edgewise.bench.cmapss as cmapss

    monkeypatch.setattr(cmapss, "run", _must_not_run)
    d = tmp_path / "cmapss"
    d.mkdir()
    for name in ("train_FD001.txt.gz", "test_FD001.txt.gz", "RUL_FD001.txt",
                 "train_FD002.txt", "test_FD002.txt", "RUL_FD002.txt.gz",
                 "train_FD003.txt", "test_FD003.txt"):
        (d / name).touch()
    return d


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--models", "bogus", "--models must be comma-separated members from gbm, cnn"),
    ("--models", ",", "--models must be comma-separated members from gbm, cnn"),
    ("--models", "gbm,gbm", "each once"),
    ("--subset", "", "the subsets there are FD001, FD002"),
    ("--subset", "FD009", "the subsets there are FD001, FD002"),
    ("--subset", "FD003", "the subsets there are FD001, FD002"),  # no RUL_FD003: fails late
])
def test_bench_cmapss_names_models_and_subset(
        cmapss_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        option: str, value: str, needle: str) -> None:
    line = refused(monkeypatch, capsys, "bench", "cmapss", "--data", str(cmapss_dir),
                   option, value)
    assert line.startswith(f"error: {option} must be ") and needle in line
    assert line.endswith(f"Got {value!r}.")


def test_bench_cmapss_takes_a_subset_that_is_there(
        cmapss_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["edgewise", "bench", "cmapss", "--data", str(cmapss_dir),
                                      "--subset", "FD002", "--models", "gbm, cnn"])
    with pytest.raises(Ran):
        main()


def test_token_create_names_role_and_makes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(monkeypatch, capsys, "token", "create", "--data-dir", str(tmp_path / "d"),
                   "--role", "bogus")
    assert line == "error: --role must be one of admin, operator, viewer. Got 'bogus'."
    assert not (tmp_path / "d").exists()


# 5. bench ingest --devices: at most what this process can open ------------------------

def test_bench_ingest_devices_are_bounded_by_the_open_file_limit(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import resource

    import edgewise.bench.ingest as ingest
    from edgewise.cli.bench_ingest import FILES_PER_DEVICE, FILES_RESERVED, max_devices

    monkeypatch.setattr(ingest, "run_ingest_bench", _must_not_run)
    line = refused(monkeypatch, capsys, "bench", "ingest", "--devices", "100000000",
                   "--seconds", "1")
    assert line.startswith(f"error: --devices must be an int in [1, {max_devices()}]")
    assert "open files" in line and line.endswith("Got 100000000.")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    top = (1024 - FILES_RESERVED) // FILES_PER_DEVICE
    assert max_devices() == top
    line = refused(monkeypatch, capsys, "bench", "ingest", "--devices", str(top + 1))
    assert f"[1, {top}]" in line and "may open 1024 (`ulimit -n`, at most 4096" in line
    monkeypatch.setattr(sys, "argv", ["edgewise", "bench", "ingest", "--devices", str(top)])
    with pytest.raises(Ran):
        main()


# 6. an empty output folder is refused, not the working directory ----------------------

def test_export_refuses_an_empty_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    line = refused(monkeypatch, capsys, "export", "--detector", "ewzscore", "--format", "c",
                   "--out", "", "--name", "x")
    assert line.startswith("error: --out must be a folder for the exported files")
    assert "an empty one would mean the working directory. Got ''." in line
    assert list(tmp_path.iterdir()) == []


def test_quality_refuses_empty_plots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [f"{1_700_000_000 + i},d1,{120.0 if i == 100 else 20.0 + (i % 3) * 0.1}"
            for i in range(200)]  # a spike: a plot would be written
    Path("r.csv").write_text("ts,device_id,temp\n" + "\n".join(rows) + "\n")
    line = refused(monkeypatch, capsys, "quality", "r.csv", "--plots", "")
    assert line.startswith("error: --plots must be a folder for the plots")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_a_label_file_held_by_another_writer_is_said_so_not_called_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check ``label import`` (and ``device delete``) with ``labels.sqlite`` held past the busy
    timeout by another writer prints the label store's one line (held, retry), exit 1: the
    sqlite3 error was reported as a damaged database file."""
    import sqlite3

    from edgewise.label.store import LabelStore

    real_init = LabelStore.__init__

    def quick(self: LabelStore, *a: object, **k: object) -> None:
        k["timeout_s"] = 0.2
        real_init(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(LabelStore, "__init__", quick)
    data = tmp_path / "d"
    monkeypatch.setattr(sys, "argv", ["edgewise", "device", "add", "p1", "--data-dir",
                                      str(data)])
    main()  # exit 0: returns
    LabelStore(data).close()
    csv = tmp_path / "l.csv"
    csv.write_text("device_id,start,end,label\n"
                   "p1,2025-01-01T00:00:00Z,2025-01-01T01:00:00Z,anomaly\n")
    other = sqlite3.connect(data / "labels.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        monkeypatch.setattr(sys, "argv", ["edgewise", "label", "import", str(csv),
                                          "--data-dir", str(data)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        other.execute("ROLLBACK")
        other.close()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 1 and len(err.splitlines()) == 1, err
    assert "held by another writer" in err and "damaged" not in err, err
