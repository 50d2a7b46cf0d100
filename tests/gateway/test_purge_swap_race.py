"""A command run while a gateway's device deletion purges its DuckDB store.

Hunt (concurrency): the purge closed the store's file and reopened the purged copy with
no lock held in between, so a CLI command (``label suggest``, ``train``, ``store purge``,
a second ``serve``) that opened the store in that gap got it: the gateway's reopen then
failed and was never retried (every ingest and /healthz 503 "Connection already closed!"
until a restart), or the command's own purge deleted the gateway's copy (DELETE 500).

The gateway here is ``edgewise serve`` whose rename of the purged copy waits for the test
(the gap made as long as the test needs, nothing else changed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from edgewise.security.credentials import Security
from tests.conftest import REPO, wait_until
from tests.gateway.conftest import GatewayProcess
from tests.in_process import edgewise_here

# ``edgewise serve`` whose store module renames a purged copy over the store only once the
# file argv[2] exists, after making argv[1] (the old file is closed by then)
_PAUSED_SERVE = """
import os, sys, time, pathlib
import edgewise.cli, edgewise.store.duckdb as ddb
in_swap, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
class PausedOs:
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, src, dst):
        if ".purge-" in str(src):
            in_swap.touch()
            deadline = time.monotonic() + 120
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return os.replace(src, dst)
ddb.os = PausedOs()
sys.argv = ["edgewise", *sys.argv[3:]]
edgewise.cli.load_commands()
edgewise.cli.main()
"""


class _PausedGateway(GatewayProcess):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.in_swap = data_dir.parent / "in_swap"
        self.go = data_dir.parent / "go"

    def _spawn(self, waiting: bool) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
        args = ["serve", "--data-dir", str(self.data_dir), "--mqtt-port", str(self.mqtt_port),
                "--port", str(self.http_port)]
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-c", _PAUSED_SERVE, str(self.in_swap), str(self.go), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env)


def _edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=REPO)


def _post(base: str, device: str, secret: str, seq: int) -> httpx.Response:
    return httpx.post(f"{base}/v1/telemetry", timeout=30,
                      json={"ts": 1_700_000_000 + seq, "metrics": {"t": float(seq)},
                            "seq": seq},
                      headers={"Authorization": f"Bearer {secret}", "X-Device-Id": device})


def test_a_command_in_a_purge_s_swap_is_refused_and_the_gateway_keeps_ingesting(
        tmp_path: Path) -> None:
    """Check that ``label suggest`` run while the gateway's DELETE /v1/devices/{id} has its
    store file closed for the swap is refused in one line saying a gateway (its pid) runs
    on the data dir and what to do (no 4-slash --store URL, no PostgreSQL advice); the
    DELETE then answers 200 with the purge done, ingest and /healthz go on answering 200,
    and a second ``serve`` on the data dir is told a gateway already runs there."""
    data = tmp_path / "ew"
    data.mkdir()
    sec = Security(data)
    _, keep = sec.add_device("keep")
    _, gone = sec.add_device("gone")
    admin = sec.create_token("admin", "test-admin")
    sec.close()
    gw = _PausedGateway(data).start(timeout=60)
    try:
        base = f"http://127.0.0.1:{gw.http_port}"
        for seq in range(1, 6):
            assert _post(base, "keep", keep, seq).status_code == 200
        assert _post(base, "gone", gone, 1).status_code == 200
        deleted: dict[str, Any] = {}

        def delete() -> None:
            r = httpx.delete(f"{base}/v1/devices/gone", timeout=120,
                             headers={"Authorization": f"Bearer {admin}"})
            deleted.update(status=r.status_code, body=r.text)

        t = threading.Thread(target=delete)
        t.start()
        try:
            assert wait_until(gw.in_swap.exists, 60), "the purge never reached its swap"
            # in this process (an interpreter start less): the gateway holding the data
            # dir is the other process, and what the command answers is under test
            out = edgewise_here("label", "suggest", "--device", "keep", "--data-dir",
                                str(data), cwd=REPO)
        finally:
            gw.go.touch()
            t.join(120)
        err = out.stderr.strip()
        assert out.returncode != 0, (
            f"label suggest opened the store inside the gateway's purge (rc 0): {out.stdout}")
        assert gw.proc is not None
        assert f"a gateway (pid {gw.proc.pid}) runs on data dir {str(data)!r}" in err, err
        assert "edgewise readings export" in err and "--csv" in err, err
        assert "duckdb:////" not in err and "postgresql" not in err, err
        assert len(err.splitlines()) == 1, err
        assert deleted.get("status") == 200, deleted
        assert '"purge_pending":false' in deleted["body"].replace(" ", ""), deleted
        r = _post(base, "keep", keep, 6)
        assert r.status_code == 200 and r.json()["ack_seq"] == 6, r.text
        health = httpx.get(f"{base}/healthz", timeout=30)
        assert health.status_code == 200, health.text

        second = _edgewise("serve", "--data-dir", str(data), "--port", "1", "--mqtt-port", "2")
        assert second.returncode != 0, second.stdout[-2000:]
        assert (f"A gateway already runs on data dir {str(data)!r} (pid {gw.proc.pid}"
                in second.stderr), second.stderr
        assert "postgresql" not in second.stderr, second.stderr
        assert _post(base, "keep", keep, 7).status_code == 200
        assert gw.stop() == 0
    finally:
        gw.kill()
