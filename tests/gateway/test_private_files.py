"""Security hunt L2 and M2 on a real ``edgewise serve``: the files the gateway creates are
0600 whatever the data directory's mode or the store's location, and the start banner
never shows the external MQTT broker's password."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from edgewise.security.credentials import Security
from tests.conftest import REPO, free_port, port_answers, wait_until


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in root.rglob("*") if p.is_file()}


def test_gateway_files_are_private_in_an_open_directory(gateway_factory: Any,
                                                         tmp_path: Path) -> None:
    """Check that in a data dir that is 0755 (made beforehand), and for a DuckDB store
    elsewhere, the telemetry, registry, labels, credentials and detector files are 0600."""
    data = tmp_path / "ew"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    elsewhere = tmp_path / "stores"
    elsewhere.mkdir(mode=0o755)
    gw = gateway_factory("--store", f"duckdb:///{elsewhere / 'fleet.duckdb'}", data_dir=data)
    sec = Security(data)
    _, secret = sec.add_device("pump-1")
    admin = sec.create_token("admin", "test-admin")
    sec.close()
    gw.start()
    base = f"http://127.0.0.1:{gw.http_port}"
    r = httpx.post(f"{base}/v1/telemetry", json={"ts": time.time(), "metrics": {"t": 1.0},
                                                 "seq": 1},
                   headers={"Authorization": f"Bearer {secret}", "X-Device-Id": "pump-1"})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{base}/v1/labels", headers={"Authorization": f"Bearer {admin}"},
                   json={"device_id": "pump-1", "start": str(time.time() - 60),
                         "end": str(time.time()), "label": "normal"})
    assert r.status_code in (200, 201), r.text
    assert gw.stop() == 0
    modes = {**_modes(data), **_modes(elsewhere)}
    for name in ("security.sqlite", "registry/registry.sqlite", "labels.sqlite",
                 "detectors.pickle", "fleet.duckdb"):
        assert modes.get(name) == 0o600, (name, {k: oct(v) for k, v in modes.items()})
    public = {"registry/signing_key.pub", "gateway.log"}  # the public key; the test's log
    assert not {k: oct(v) for k, v in modes.items() if v & 0o077 and k not in public}


def test_the_start_banner_masks_the_mqtt_password(tmp_path: Path) -> None:
    """Check ``serve --mqtt mqtt://USER:PASS@…`` prints the broker URL without the password."""
    port = free_port()
    broker = subprocess.Popen([sys.executable, "-c", (
        "import asyncio\nfrom amqtt.broker import Broker\nasync def main():\n"
        "    b = Broker({'listeners': {'default': {'type': 'tcp', "
        f"'bind': '127.0.0.1:{port}'}}}},"
        " 'plugins': {'amqtt.plugins.authentication.AnonymousAuthPlugin':"
        " {'allow_anonymous': True}}})\n    await b.start()\n    await asyncio.Event().wait()\n"
        "asyncio.run(main())")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = None
    try:
        assert wait_until(lambda: port_answers("127.0.0.1", port), 20)
        http = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        log = tmp_path / "serve.log"
        with open(log, "wb") as out:
            gw = subprocess.Popen(
                [sys.executable, "-m", "edgewise", "serve", "--data-dir", str(tmp_path / "ew"),
                 "--port", str(http), "--mqtt", f"mqtt://gateway:S3cretPw@127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        assert wait_until(lambda: "ready" in log.read_text().splitlines(), 60), log.read_text()
        text = log.read_text()
        assert "S3cretPw" not in text and "mqtt://gateway:***@127.0.0.1" in text, text
    finally:
        for p in (gw, broker):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(20)
