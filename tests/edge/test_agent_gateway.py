"""The edge agent against the real gateway (``edgewise serve``), both as killable processes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx

from edgewise.edge.agent import Outbox, sim_value
from edgewise.store import open_store
from tests.conftest import REPO, wait_until
from tests.gateway.conftest import GatewayProcess
from tests.in_process import edgewise_here

# the agent checks for updates every 0.3 s and flushes in batches: poll gently
_wait = partial(wait_until, timeout=60.0, step=0.1)

ENV = dict(os.environ, PYTHONPATH=str(REPO / "src"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` in this process (setting up, not under test: an interpreter start
    less); the gateway and the agents are the processes under test."""
    done = edgewise_here(*args, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


def _agent(url: str, device: str, secret_file: Path, state: Path, *extra: str):
    cmd = [sys.executable, "-m", "edgewise", "agent", "--gateway", url, "--device", device,
           "--secret-file", str(secret_file), "--state-dir", str(state), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _temps(url: str, token: str, device: str) -> list[float]:
    r = httpx.get(f"{url}/v1/devices/{device}/readings", params={"metric": "temp_c"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if r.status_code == 404:  # the device has no readings yet
        return []
    r.raise_for_status()
    return r.json()["series"].get("temp_c", {}).get("v", [])


def test_agent_and_real_gateway_store_every_reading_exactly_once(tmp_path):
    """Check exactly-once storage at the real gateway across a gateway kill -9 (link cut while
    the agent keeps producing), a kill -9 of the agent offline and one online mid-stream."""
    data = tmp_path / "ew"
    data.mkdir()
    dev = json.loads(_cli("device", "add", "pump-7", "--data-dir", str(data), "--json").stdout)
    secret = tmp_path / "secret"
    secret.write_text(dev["secret"])
    gw = GatewayProcess(data).start()
    try:
        token = re.search(r"admin token \(shown once\): (\S+)", gw.log.read_text()).group(1)
        url = f"http://127.0.0.1:{gw.http_port}"
        state = tmp_path / "agent"
        args = ("--source", "sim", "--rate", "100")
        a = _agent(url, dev["id"], secret, state, *args)
        assert _wait(lambda: len(_temps(url, token, dev["id"])) > 100), gw.log.read_text()[-2000:]
        gw.kill()                                        # link cut: the agent keeps producing
        time.sleep(1.5)
        a.send_signal(signal.SIGKILL)                    # kill -9 while offline
        a.wait()
        gw.start()
        a = _agent(url, dev["id"], secret, state, *args)
        time.sleep(1.0 + random.random())
        a.send_signal(signal.SIGKILL)                    # kill -9 mid-stream, online
        a.wait()
        a = _agent(url, dev["id"], secret, state, *args, "--limit", "100")
        assert a.wait(timeout=120) == 0                  # 100 more, flushed, exits
        box = Outbox(state / "outbox.sqlite")
        produced = box.source_pos - 1
        assert len(box) == 0 and box.dropped == 0 and box.acked == box.next_seq - 1
        expected = [sim_value(i) for i in range(1, produced + 1)]
        assert produced > 250
        assert _temps(url, token, dev["id"]) == expected   # via the REST API, in time order
    finally:
        assert gw.stop() == 0
    store = open_store(f"duckdb:///{data / 'edgewise.duckdb'}")   # the store itself, at rest
    try:
        assert store.seq_watermark(dev["id"]) == box.next_seq - 1 and not store.seq_gaps(dev["id"])
        rows = store.query(dev["id"], "temp_c")
        assert [v for _, _, v in rows] == expected          # each reading once, none missing
        assert len({ts for _, ts, _ in rows}) == produced
    finally:
        store.close()
