"""CLI inconsistencies found in session 31's hunt, each refused or said in one line now.

* ``train``'s own options given before a subcommand (``train --data-dir D transfer``,
  ``train --json forecast``) were silently ignored: another data dir, text, exit 0.
* ``train --with-labels --csv`` with a mistyped ``--data-dir`` trained on no labels and made
  ``labels.sqlite`` and ``models/`` there; ``label import`` made the dir and its files too,
  and was refused for an unrelated ``EDGEWISE_RATE_LIMIT_PER_S`` in the shell.
* ``agent --limit N`` exited 0, silently, when the gateway refused every send (HTTP 401).
* ``quality`` merged every device of a long file whose column is ``device`` into one.
* ``--data-dir ""``, ``--state-dir ""`` and ``--out ""`` silently meant the working directory
  (``--out`` was reported as ``'.'``).
* A damaged SQLite file was a ~45-line traceback; ``device delete`` revoked the credentials
  before the damaged label store crashed it.
* ``registry list`` made a registry; ``registry publish`` said a directory "does not exist";
  ``train forecast`` refused a ``readings export`` CSV (its time column is ``time``).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from tests.conftest import REPO, free_port

load_commands()

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/nbc"}
T0 = 1_700_000_000


def cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner(mix_stderr=False).invoke(app, list(args), env=env or {})


def one_error(res, code: int = 2) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == code and len(lines) == 1, (res.exit_code, res.stderr, res.stdout)
    assert lines[0].startswith("error: ")
    return lines[0]


def history_csv(path: Path, time_name: str = "timestamp", n: int = 300) -> Path:
    rows = [f"{time_name},value"] + [f"{T0 + 3600 * i},{20 + (i % 24) * 0.5}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def registered(data_dir: Path, device: str = "p1") -> str:
    res = cli("device", "add", device, "--data-dir", str(data_dir), "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)["secret"]


# 1. train's own options before a subcommand


def test_train_options_before_a_subcommand_are_refused_naming_where_they_go(tmp_path):
    csv = history_csv(tmp_path / "h.csv")
    res = cli("train", "--data-dir", str(tmp_path / "gw"), "transfer", "--device", "pump-7",
              env={"EDGEWISE_DATA_DIR": str(tmp_path)})
    assert "give --data-dir after 'transfer'" in one_error(res)
    res = cli("train", "--json", "forecast", "--csv", str(csv), "--column", "value",
              "--out", str(tmp_path / "m.fc"))
    assert "give --json after 'forecast'" in one_error(res)
    assert not (tmp_path / "m.fc").exists()
    res = cli("train", "--with-labels", "--device", "X", "rul", "--data", str(csv),
              "--out", str(tmp_path / "m.rul"))
    assert "'train rul' takes none" in one_error(res)
    help_text = " ".join(cli("train", "--help").stdout.split())
    assert "The options below are for 'train --with-labels --device D' without a" in help_text


def test_train_with_labels_refuses_a_data_dir_that_does_not_exist(tmp_path):
    csv = history_csv(tmp_path / "h.csv")
    typo = tmp_path / "typo"
    res = cli("train", "--with-labels", "--device", "p1", "--csv", str(csv),
              "--data-dir", str(typo))
    assert "does not exist" in one_error(res)
    assert not typo.exists()


# 2. label import


def test_label_import_makes_nothing_in_a_mistyped_data_dir(tmp_path):
    labels = tmp_path / "l.csv"
    labels.write_text(f"device_id,start,end,label\np1,{T0},{T0 + 60},anomaly\n")
    typo = tmp_path / "typo"
    res = cli("label", "import", str(labels), "--data-dir", str(typo))
    assert "does not exist" in one_error(res)
    assert not typo.exists()


def test_label_import_ignores_gateway_settings_of_the_shell(tmp_path):
    registered(tmp_path)
    labels = tmp_path / "l.csv"
    labels.write_text(f"device_id,start,end,label\np1,{T0},{T0 + 60},anomaly\n")
    res = cli("label", "import", str(labels), "--data-dir", str(tmp_path), "--json",
              env={"EDGEWISE_RATE_LIMIT_PER_S": "10s"})
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["imported"] == 1


# 3. agent: readings left undelivered


@pytest.fixture
def refusing_gateway() -> Iterator[str]:
    """A gateway that answers every request 401, as one does a wrong secret."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"title": "Unauthorized", "detail": "invalid device credentials"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def agent(tmp_path: Path, gateway: str, flush: str) -> object:
    secret = tmp_path / "secret"
    secret.write_text("s" * 43)
    return cli("agent", "--gateway", gateway, "--device", "pump-7", "--secret-file",
               str(secret), "--state-dir", str(tmp_path / "state"), "--limit", "2",
               "--rate", "100", "--flush-timeout", flush)


def test_agent_whose_readings_the_gateway_refuses_exits_1_saying_why(tmp_path,
                                                                      refusing_gateway):
    res = agent(tmp_path, refusing_gateway, "2")
    assert res.exit_code == 1, (res.stdout, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 readings not delivered"), last
    assert "HTTP 401: invalid device credentials" in last and "--secret-file" in last


def test_agent_with_an_unreachable_gateway_says_what_stays_buffered(tmp_path):
    res = agent(tmp_path, f"http://127.0.0.1:{free_port()}", "0")
    assert res.exit_code == 0, res.stderr  # store-and-forward: the next run sends them
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("warning: 2 readings not delivered"), last
    assert "outbox.sqlite" in last and "next run" in last


# 4. quality: a long file's `device` column


def test_quality_splits_a_long_file_by_its_device_column(tmp_path):
    rows = ["device,metric,ts,value"] + [
        f"{d},temp,{T0 + 60 * i},{20 + i * 0.1 + (5 if d == 'b' else 0)}"
        for i in range(20) for d in ("a", "b")]
    f = tmp_path / "long.csv"
    f.write_text("\n".join(rows) + "\n")
    res = cli("quality", str(f), "--json")
    assert res.exit_code == 0, res.stderr
    devices = json.loads(res.stdout)["devices"]
    assert sorted(devices) == ["a", "b"]
    assert all(d["metrics"]["temp"]["conflicts"] == 0 for d in devices.values())
    assert "device_id, else device" in " ".join(cli("quality", "--help").stdout.split())


# 5. blank paths


def test_blank_paths_are_refused_not_taken_as_the_working_directory(tmp_path, monkeypatch):
    registered(tmp_path / "ew")
    monkeypatch.chdir(tmp_path)
    env = {"EDGEWISE_DATA_DIR": str(tmp_path / "ew")}
    res = cli("device", "list", "--data-dir", "", env=env)
    assert res.exit_code == 2 and "--data-dir" in res.stderr, res.stdout
    assert "empty one would mean the working directory" in res.stderr
    res = cli("device", "add", "p2", "--data-dir", "")
    assert res.exit_code == 2 and not (tmp_path / "security.sqlite").exists()
    assert json.loads(cli("device", "list", "--json", env=env).stdout)[0]["id"] == "p1"
    res = cli("agent", "--gateway", "http://127.0.0.1:9", "--device", "p1", "--secret-file",
              str(tmp_path / "nope"), "--state-dir", "")
    assert res.exit_code == 2 and "--state-dir" in res.stderr
    csv = history_csv(tmp_path / "h.csv")
    res = cli("train", "forecast", "--csv", str(csv), "--column", "value", "--out", "")
    assert res.exit_code == 2 and "Got ''" in res.stderr and "'.'" not in res.stderr


# 7. damaged SQLite files


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, env=ENV, check=False, timeout=120)


def test_a_damaged_label_store_refuses_device_delete_before_anything_changes(tmp_path):
    registered(tmp_path)
    junk = tmp_path / "labels.sqlite"
    junk.write_bytes(bytes(range(256)) * 32)
    p = run_main("device", "delete", "p1", "--json", "--data-dir", str(tmp_path))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith(f"error: SQLite database {str(junk)!r} is damaged"), lines
    listed = json.loads(cli("device", "list", "--json", "--data-dir", str(tmp_path)).stdout)
    assert [d["id"] for d in listed] == ["p1"]  # its credentials were not revoked


def test_a_damaged_credentials_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "security.sqlite").write_bytes(b"\x07" * 8192)
    p = run_main("device", "list", "--json", "--data-dir", str(tmp_path))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-3000:]
    assert "security.sqlite' is damaged or not an Edgewise database" in lines[0]


# smaller


def test_registry_list_makes_no_registry_and_publish_names_a_directory(tmp_path):
    res = cli("registry", "list", "--data-dir", str(tmp_path), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["versions"] == [] and list(tmp_path.iterdir()) == []
    res = cli("registry", "publish", "m", "1", str(tmp_path), "--data-dir", str(tmp_path))
    assert "is a directory" in one_error(res)


def test_forecast_finds_a_time_column_named_time(tmp_path):
    csv = history_csv(tmp_path / "export.csv", time_name="time")
    res = cli("train", "forecast", "--csv", str(csv), "--column", "value", "--horizon", "4",
              "--out", str(tmp_path / "m.fc"), "--json")
    assert res.exit_code == 0, res.stderr
    res = cli("predict", "forecast", "--model", str(tmp_path / "m.fc"), "--csv", str(csv),
              "--column", "value", "--json")
    assert res.exit_code == 0, res.stderr
    assert len(json.loads(res.stdout)["forecast"]) == 4


def test_json_help_says_document_not_object():
    assert "one JSON document" in " ".join(cli("device", "list", "--help").stdout.split())
