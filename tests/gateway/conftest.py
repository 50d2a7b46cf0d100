"""A real gateway process (``python -m edgewise serve``) that tests can kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port, port_answers

# ``edgewise serve`` with its imports done ahead (``GatewayProcess(prestart=True)``): it
# waits for "go" on stdin before it reads its arguments or opens anything in the data dir.
_PRESTARTED_SERVE = (
    "import sys\n"
    "import uvicorn\n"
    "import edgewise.cli, edgewise.cli.gateway, edgewise.gateway.runtime, edgewise.server.app\n"
    "import edgewise.store.duckdb, edgewise.transport.broker\n"
    "edgewise.cli.load_commands()\n"
    "if sys.stdin.readline() != 'go\\n':\n"
    "    raise SystemExit(0)\n"
    "sys.argv[0] = 'edgewise'\n"
    "edgewise.cli.main()\n"
)


class GatewayProcess:
    """Runs ``edgewise serve`` on free ports with ``data_dir``; ``kill()`` is SIGKILL.

    ``prestart``: once a start is ready, the next start's process is launched and imports
    what ``serve`` needs while this one runs (a restart is then the gateway's own start-up:
    store, state, broker, HTTP), for tests that kill and restart it many times.
    """

    def __init__(self, data_dir: Path, *extra: str, mqtt_port: int | None = None,
                 prestart: bool = False) -> None:
        self.data_dir = data_dir
        self.mqtt_port = mqtt_port or free_port()
        self.http_port = free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log = data_dir / "gateway.log"
        self.prestart = prestart
        self._spare: subprocess.Popen[bytes] | None = None

    def _spawn(self, waiting: bool) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
        args = ["serve", "--data-dir", str(self.data_dir), "--mqtt-port", str(self.mqtt_port),
                "--port", str(self.http_port), *self.extra]
        cmd = ([sys.executable, "-c", _PRESTARTED_SERVE, *args] if waiting
               else [sys.executable, "-m", "edgewise", *args])
        with open(self.log, "ab") as log:
            return subprocess.Popen(cmd, stdin=subprocess.PIPE if waiting else None,
                                    stdout=log, stderr=subprocess.STDOUT, env=env)

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            assert spare.stdin is not None
            spare.stdin.write(b"go\n")
            spare.stdin.close()
            self.proc = spare
        else:
            self.proc = self._spawn(waiting=False)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n"
                                   + self.log.read_text()[-3000:])
            if self._ready():  # this start's "ready" (the last line may be the previous one's)
                if self.prestart:
                    self._spare = self._spawn(waiting=True)
                return self
            time.sleep(0.05)
        raise TimeoutError("gateway did not become ready:\n" + self.log.read_text()[-3000:])

    def drop_spare(self) -> None:
        """End the process launched ahead for the next start, if any."""
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
            spare.wait(10)

    def _ready(self) -> bool:
        lines = self.log.read_text().splitlines()
        # the HTTP port: with an external broker nothing listens on mqtt_port
        return self.starts == sum(1 for line in lines if line == "ready") and port_answers(
            "127.0.0.1", self.http_port)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGINT and wait for a clean exit; return the exit code."""
        self.drop_spare()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def gateway_factory(tmp_path):
    made: list[GatewayProcess] = []

    def make(*extra: str, data_dir: Path | None = None, **kw) -> GatewayProcess:
        g = GatewayProcess(data_dir or tmp_path / "ew", *extra, **kw)
        g.data_dir.mkdir(exist_ok=True)
        made.append(g)
        return g

    yield make
    for g in made:
        g.drop_spare()
        g.kill()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Any]]:
    """Makes webhook receivers (``tests.gateway.test_alert_webhooks.Receiver``, not
    started), each stopped after the test."""
    from tests.gateway.test_alert_webhooks import Receiver

    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()
