"""What a gateway's stop leaves behind when it is pressed.

1. ``Pipeline.close`` waited 30 s for detection, then saved the detector state and returned
   while the detection thread was still scoring (and changing the detectors it pickled),
   leaving the rest of the queue unscored without a word. Now it tells detection to stop
   after the batch it is scoring, waits for it, saves the state, and counts and logs the
   readings left unscored.
2. uvicorn's ``Server.serve`` took SIGINT and SIGTERM while HTTP ran and put back the
   handlers it found at its start (SIG_DFL) when HTTP stopped, early in ``Gateway.stop``:
   the handlers ``edgewise serve`` sets after the start were gone, and a second SIGTERM
   during the rest of the stop killed the gateway before it saved its state.
3. ``edgewise serve`` printed "ready" before it set its SIGINT/SIGTERM handlers: a signal
   sent on that line (a supervisor, a test) ended it with KeyboardInterrupt, exit 130,
   state unsaved (seen in CI under load).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.gateway.runtime import Gateway
from edgewise.store import open_store
from tests.conftest import REPO, free_port, wait_until

T0 = 1_700_000_000
METRICS = ("a", "b", "c", "d", "e")


def _msg(seq: int) -> bytes:
    return json.dumps({"seq": seq, "ts": T0 + seq,
                       "metrics": {m: 20.0 + k + seq % 3 for k, m in enumerate(METRICS)}}
                      ).encode()


def test_close_stops_detection_that_is_behind_before_saving_its_state(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    state = tmp_path / "detectors.pickle"
    pipe = Pipeline(store, Settings(data_dir=tmp_path), state_path=state)
    pipe.close_wait_s = 0.3
    # detection is slow: it is held in its first batch until close() tells it to stop
    pipe._detect_lock.acquire()
    for seq in range(1, 11):
        assert pipe.ingest("pump-1", _msg(seq)).ack_seq == seq  # stored and acknowledged

    def release() -> None:
        wait_until(lambda: getattr(pipe, "_stop_detect", threading.Event()).is_set(), 5)
        pipe._detect_lock.release()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        with caplog.at_level(logging.WARNING, logger="edgewise.gateway.pipeline"):
            pipe.close()
        assert pipe._worker is not None and not pipe._worker.is_alive(), (
            "close() returned with the detection thread still scoring")
        # the first message's readings were scored; the nine queued after it were not
        assert pipe.metrics.get("edgewise_readings_scored_total") == len(METRICS)
        assert pipe.metrics.get("edgewise_readings_unscored_at_stop_total") == 9 * len(METRICS)
        assert "45 stored reading(s) of 9 committed batch(es) left unscored" in caplog.text
        # the state saved is what the detectors learned: up to the first message, no further
        with open(state, "rb") as f:
            saved = pickle.load(f)
        assert saved["last_scored"] == {
            ("pump-1", m): (T0 + 1) * 10**9 for m in METRICS}
        assert store.count_readings() == 10 * len(METRICS)  # all of it stored all along
    finally:
        releaser.join(10)
        store.close()


def _handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def test_http_leaves_the_process_signal_handlers_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "ew", http_port=free_port(),
                        mqtt_port=free_port())
    seen: dict[str, object] = {}

    async def main() -> None:
        seen["before"] = before = _handlers()  # asyncio.run's own SIGINT handler included
        gw = Gateway(settings)
        await gw.start()
        assert gw.http_server is not None, "HTTP did not start"
        seen["during"] = _handlers()
        # as `edgewise serve` does once the gateway has started
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        seen["ours"] = _handlers()
        try:
            await gw.stop()
            seen["after"] = _handlers()
            if seen["after"] == seen["ours"]:  # else SIGTERM would end this process
                os.kill(os.getpid(), signal.SIGTERM)  # a further SIGTERM while stopping
                await asyncio.wait_for(stopping.wait(), 5)
                seen["handled"] = True
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, before[sig])  # type: ignore[arg-type]

    asyncio.run(main())
    assert seen["during"] == seen["before"], "the HTTP server took the process's signals"
    assert seen["after"] == seen["ours"], (
        f"stopping HTTP replaced the gateway's signal handlers with {seen['after']}: a "
        "second SIGTERM during the stop would kill the gateway")
    assert seen.get("handled"), "the further SIGTERM did not reach the gateway's handler"


# 3. a signal the moment "ready" is printed ----------------------------------------------

_SIGINT_AT_READY = """
import os, signal, sys
import typer
import edgewise.cli
echo = typer.echo
def echo_then_signal(message=None, *args, **kwargs):
    echo(message, *args, **kwargs)
    if message == "ready":  # the supervisor's SIGINT, as early as it can come
        os.kill(os.getpid(), signal.SIGINT)
typer.echo = echo_then_signal
edgewise.cli.load_commands()
sys.argv[0] = "edgewise"
edgewise.cli.main()
"""


def test_a_signal_sent_when_ready_is_printed_stops_the_gateway_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    res = subprocess.run(
        [sys.executable, "-c", _SIGINT_AT_READY, "serve", "--data-dir", str(tmp_path / "ew"),
         "--mqtt-port", str(free_port()), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.splitlines()[-1] == "stopped", res.stderr[-3000:]


# 4. a signal while the gateway starts -------------------------------------------------

_SIGNAL_IN_START = """
import os, signal, sys
import edgewise.cli
from edgewise.gateway.runtime import Gateway
start = Gateway.start
async def start_after_a_signal(self, *args, **kwargs):
    os.kill(os.getpid(), getattr(signal, os.environ["THE_SIGNAL"]))  # docker stop, Ctrl-C
    return await start(self, *args, **kwargs)
Gateway.start = start_after_a_signal
edgewise.cli.load_commands()
sys.argv[0] = "edgewise"
edgewise.cli.main()
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_starting_stops_the_gateway_and_shows_the_token(
        tmp_path: Path, sig: str) -> None:
    """Check SIGINT or SIGTERM while the gateway starts stops it cleanly once started, and
    shows the admin token its first start made: a Ctrl-C there was swallowed (the gateway
    ran on), a SIGTERM killed it with a token made and never shown."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), THE_SIGNAL=sig)
    res = subprocess.run(
        [sys.executable, "-c", _SIGNAL_IN_START, "serve", "--data-dir", str(tmp_path / "ew"),
         "--mqtt-port", str(free_port()), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    assert lines[-1] == "stopped" and "ready" not in lines, res.stderr[-3000:]
    assert any(line.startswith("admin token (shown once, keep it; stopped while starting): ")
               for line in lines), res.stderr[-3000:]
