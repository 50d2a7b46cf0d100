"""The edge agent with real processes: signed updates and attacks, kill -9 during install.

Exactly-once delivery is tested against the real gateway in ``test_agent_gateway.py``. The
update tests here use the stand-in receiver (``receiver.py``) because they need a server that
misbehaves on purpose: it flips a bit of a served model and replays an older release, which
the real gateway never does.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot, Outbox
from edgewise.registry import Artifact, Registry, load_or_create_key, sign
from tests.conftest import REPO, free_port, wait_until

# the agent checks for updates every 0.3 s and flushes in batches: poll gently
_wait = partial(wait_until, timeout=60.0, step=0.1)

SECRET = "s3cret-" + "x" * 36
ENV = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")


class Receiver:
    def __init__(self, tmp: Path, registry: Path | None = None) -> None:
        self.port = free_port()
        self.db = tmp / "gateway.sqlite"
        self.registry = registry
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tests.edge.receiver", "--port", str(self.port),
               "--db", str(self.db), "--secret", SECRET]
        if self.registry:
            cmd += ["--registry", str(self.registry)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=ENV)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.post(f"{self.url}/v1/telemetry", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("receiver did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def rows(self, sql: str, *args):
        with sqlite3.connect(self.db, timeout=30) as db:
            return db.execute(sql, args).fetchall()


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.stop()


def _agent(gateway: str, device: str, state: Path, *extra: str, log: Path | None = None):
    secret = state.parent / "secret"
    secret.write_text(SECRET)
    cmd = [sys.executable, "-m", "edgewise", "agent", "--gateway", gateway, "--device", device,
           "--secret-file", str(secret), "--state-dir", str(state), *extra]
    err = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)


def test_outbox_bound_and_drop_counter_are_exact(tmp_path):
    """Check that the byte bound holds, drops are counted exactly and seq survives reopening."""
    box = Outbox(tmp_path / "o.sqlite", max_bytes=10_000)
    results = [box.put({"ts": 1.7e9, "metrics": {"t": float(i)}}) for i in range(300)]
    kept = [s for s in results if s is not None]
    assert kept == list(range(1, len(kept) + 1)) and 0 < len(kept) < 300
    assert box.dropped == 300 - len(kept) and box.bytes_used <= 10_000
    box.ack(10)
    box.close()
    box = Outbox(tmp_path / "o.sqlite", max_bytes=10_000)
    assert box.next_seq == len(kept) + 1 and box.pending(1)[0]["seq"] == 11
    assert box.put({"ts": 1.7e9, "metrics": {"t": 0.0}}) == len(kept) + 1


def _publish(reg: Registry, version: str, z0: float) -> None:
    reg.publish("ewz", version, pickle.dumps(EWZScore(z0=z0)), format="pickle",
                trained_on="sim")


def _events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if "{" in line:
            try:
                out.append(json.loads(line[line.index("{"):]))
            except ValueError:
                pass
    return out


def _has(log: Path, **kw) -> bool:
    return any(all(e.get(k) == v for k, v in kw.items()) for e in _events(log))


def test_signed_update_switches_and_attacks_are_refused(tmp_path):
    """Check a signed model installs, tampered and rolled-back ones are refused, rollback order works."""  # noqa: E501
    data = tmp_path / "gw"
    reg = Registry(data)
    _publish(reg, "1.0.0", 4.0)
    _publish(reg, "2.0.0", 5.0)
    reg.rollout("ewz", "1.0.0", "device:dev-2")
    rec = Receiver(tmp_path, registry=data)
    rec.start()
    state, log = tmp_path / "agent", tmp_path / "agent.log"
    a = _agent(rec.url, "dev-2", state, "--source", "sim", "--rate", "50", "--trust-key",
               str(data / "registry" / "signing_key.pub"), "--update-interval", "0.3", log=log)
    try:
        assert _wait(lambda: _has(log, event="update_installed", release=1)), log.read_text()
        (tmp_path / "tamper").write_text("1")                     # bit flip in transit
        reg.rollout("ewz", "2.0.0", "device:dev-2")
        assert _wait(lambda: _has(log, event="update_refused", release=2, reason="tampered"))
        (tmp_path / "tamper").unlink()
        assert _wait(lambda: _has(log, event="update_installed", release=2))
        (tmp_path / "serve_release").write_text("1")              # replaying an older release
        assert _wait(lambda: _has(log, event="update_refused", release=1, reason="rollback"))
        (tmp_path / "serve_release").unlink()
        reg.rollback("ewz", "1.0.0", "device:dev-2")              # explicit signed order
        assert _wait(lambda: _has(log, event="update_installed", release=3, kind="rollback"))
        cur = ModelSlot(state / "models").current()
        assert cur.release == 3 and pickle.loads(cur.payload).z0 == 4.0
        assert _wait(lambda: {v for (v,) in rec.rows(
            "SELECT value FROM readings WHERE metric='agent.update_refused'")} >= {1.0, 2.0})
    finally:
        a.kill()
        a.wait()
        rec.stop()


_INSTALLER = """
import sys
from pathlib import Path
from edgewise.edge.agent import ModelSlot

d = Path(sys.argv[1])
slot = ModelSlot(d / "slot")
pairs = [((d / f"m{i}").read_bytes(), (d / f"p{i}").read_bytes()) for i in (1, 2)]
i = 0
while True:
    slot.install(*pairs[i % 2])
    i += 1
    print(i, flush=True)
"""


def test_kill9_during_install_leaves_old_or_new(tmp_path):
    """Check that kill -9 at random points of installs always leaves a whole model."""
    key = load_or_create_key(tmp_path / "key")
    payloads = {}
    for i in (1, 2):
        payload = bytes([i]) * (3 * 1024 * 1024) + os.urandom(64)
        s = sign(Artifact(payload, "m", f"{i}.0.0", i, "device:d"), key)
        (tmp_path / f"m{i}").write_bytes(s.manifest_bytes)
        (tmp_path / f"p{i}").write_bytes(payload)
        payloads[i] = payload
    ModelSlot(tmp_path / "slot").install((tmp_path / "m1").read_bytes(), payloads[1])
    rng = random.Random(0)
    seen = set()
    for k in range(10):
        p = subprocess.Popen([sys.executable, "-c", _INSTALLER, str(tmp_path)], env=ENV,
                             stdout=subprocess.PIPE)
        for _ in range(1 + k % 4):       # let 1..4 installs finish, then kill inside the next
            p.stdout.readline()
        time.sleep(rng.random() * 0.05)
        p.send_signal(signal.SIGKILL)
        p.stdout.close()
        p.wait()
        cur = ModelSlot(tmp_path / "slot").current()   # re-checks the hash
        assert cur.payload == payloads[cur.release]
        seen.add(cur.release)
    assert seen == {1, 2}


def test_local_alerts_while_offline_and_csv_resume(tmp_path, nab_series):
    """Check local alerts are raised and buffered with no gateway, and a CSV source resumes."""
    from edgewise.edge.agent import Agent, _source

    series = nab_series[:3000].copy()
    series[[700, 1500]] += 60.0  # two faults on real data
    csv = tmp_path / "s.csv"
    t0 = 1_600_000_000
    csv.write_text("timestamp,value\n" + "".join(f"{t0 + 300 * i},{v}\n"
                                                 for i, v in enumerate(series)))
    agent = Agent(f"http://127.0.0.1:{free_port()}", "dev-3", SECRET, tmp_path / "a")
    pos = agent.outbox.source_pos
    for reading, ts in _source(f"csv:{csv}", pos, 0):
        pos += 1
        agent.handle(reading, source_pos=pos, ts_ns=ts)
        if pos > 2000:
            break
    py = EWZScore().score_many(series[:2000])
    assert agent.local_alerts == int((py >= 0.9).sum()) > 0
    alerts = [m for m in agent.outbox.pending(5000) if "alert:value" in m["metrics"]]
    assert len(alerts) == agent.local_alerts and agent.outbox.next_seq == 2001
    first = next(_source(f"csv:{csv}", agent.outbox.source_pos, 0))
    assert first == ({"value": series[2000]}, (t0 + 300 * 2000) * 10**9)


def test_agent_refuses_a_format_it_cannot_run_and_unknown_keys(tmp_path):
    """Check that a signed ONNX release is refused as unsupported_format, and a foreign key as unknown_key."""  # noqa: E501
    from edgewise.edge.agent import Agent

    data = tmp_path / "gw"
    reg = Registry(data)
    reg.publish("ewz", "1.0.0", b"onnx graph bytes", format="onnx")
    reg.rollout("ewz", "1.0.0", "device:dev-4")
    rec = Receiver(tmp_path, registry=data)
    rec.start()
    try:
        other = load_or_create_key(tmp_path / "other")
        with httpx.Client(timeout=10) as client:
            foreign = Agent(rec.url, "dev-4", SECRET, tmp_path / "a1",
                            trusted_keys={other.key_id: other.public_key_bytes})
            assert foreign.check_update(client) == "refused:unknown_key"
            agent = Agent(rec.url, "dev-4", SECRET, tmp_path / "a2",
                          trusted_keys={reg.key_id: reg.public_key_bytes})
            assert agent.check_update(client) == "refused:unsupported_format"
            assert ModelSlot(tmp_path / "a2" / "models").current() is None
            assert agent.outbox.pending()[0]["metrics"] == {"agent.update_refused": 1.0}
    finally:
        rec.stop()


def test_bad_stdin_lines_are_skipped_and_the_agent_keeps_going(tmp_path):
    """Check a sensor process that prints junk does not stop the agent: every good reading
    (a number, or JSON with numbers and booleans) is buffered, each bad line or field is
    logged by line number, and the agent exits 0 (it used to die on the first bad line; an
    integer too large for a float, 400 digits, raised OverflowError: exit 1, the rest lost)."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    lines = ["20.5", "oops", '{"temp_c": 21.0, "running": true}', "{not json",
             '{"temp_c": "hot", "rpm": 1450}', "[1, 2]", "", "nan", '{"temp_c": null}',
             '{"temp_c": ' + "9" * 400 + ', "rpm": 1460}', "22.5"]
    done = subprocess.run(
        [sys.executable, "-m", "edgewise", "agent", "--gateway", f"http://127.0.0.1:{free_port()}",
         "--device", "dev-9", "--secret-file", str(secret), "--source", "stdin",
         "--state-dir", str(tmp_path / "a"), "--flush-timeout", "0"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    bad = [json.loads(x.split(" WARNING ")[1]) for x in done.stderr.splitlines()
           if '"bad_input"' in x]
    assert [(b["line"], b.get("field")) for b in bad] == [
        (2, None), (4, None), (5, "temp_c"), (6, None), (8, "value"), (9, "temp_c"),
        (10, "temp_c")]
    out = Outbox(tmp_path / "a" / "outbox.sqlite")
    got = [m["metrics"] for m in out.pending(100)]
    assert [{k: v for k, v in m.items() if not k.startswith("alert:")} for m in got] == [
        {"value": 20.5}, {"temp_c": 21.0, "running": 1.0}, {"rpm": 1450.0}, {"rpm": 1460.0},
        {"value": 22.5}]


def test_a_reading_too_large_for_a_float_is_left_out_not_raised(tmp_path):
    """Check Agent.handle leaves out a value no float holds (an int of 400 digits) and
    buffers the rest of the reading (math.isfinite raised OverflowError)."""
    agent = Agent("http://127.0.0.1:9", "pump-7", SECRET, tmp_path / "a")
    try:
        assert agent.handle({"huge": 10**400, "temp_c": 21.5}, ts_ns=1_700_000_000 * 10**9) == 1
        assert agent.handle({"huge": -(10**400)}) is None
        assert [m["metrics"] for m in agent.outbox.pending()] == [{"temp_c": 21.5}]
    finally:
        agent.outbox.close()
