"""Crash hunt (s46): SIGKILL a real ``edgewise serve`` while devices send over MQTT (paho,
QoS 1, seqs) and HTTP, during a device's purge and during retention; ``edgewise repair`` of
a damaged write-ahead log on a full disk (a real tmpfs). What was acknowledged must be
stored exactly once, and what was committed before a log's damage must survive its repair.

Held here (no fix needed): every acked reading stored once after 3-4 kills; a kill during
``DELETE /v1/devices`` leaves the device whole or deleted and purged at the next start; a
kill during retention leaves the expired rows deleted or not, purged at the next pass, the
seq watermark kept."""

from __future__ import annotations

import itertools
import random
import threading
import time

import httpx
import pytest

from edgewise.security.credentials import Security
from edgewise.sim.device import MqttDevice
from edgewise.store import open_store

T0 = 1_700_000_000


def _stored_once(store, dev: str, seqs: range, value) -> tuple[int, int, int]:
    """(lost, duplicated, wrong) of ``dev``'s readings ``m`` at T0 + seq for ``seqs``."""
    got: dict[int, list[float]] = {}
    for _metric, ts_ns, v in store.query(dev):
        got.setdefault(ts_ns // 10**9 - T0, []).append(v)
    lost = sum(1 for s in seqs if s not in got)
    dup = sum(len(got.get(s, [])) - 1 for s in seqs if len(got.get(s, [])) > 1)
    wrong = sum(1 for s in seqs for v in got.get(s, []) if v != value(s))
    return lost, dup, wrong


class _HttpDevice:
    """Sends seq 1, 2, ... one request each, keeping each until a 200 answers it."""

    def __init__(self, dev: str, secret: str, port_of) -> None:
        self.dev, self.secret, self.port_of = dev, secret, port_of
        self.ok: list[int] = []  # seqs a 200 answered
        self.acks: list[int] = []  # ack_seq of each 200
        self.stop = threading.Event()
        self.errors = 0
        self.last_bad: tuple[int, int, str] | None = None  # seq, status, body of a refusal
        self.last_exc: str | None = None

    def run(self, n: int) -> None:
        with httpx.Client(timeout=5.0) as c:
            seq = 1
            while seq <= n and not self.stop.is_set():
                body = {"ts": T0 + seq, "metrics": {"m": seq * 0.5}, "seq": seq}
                try:
                    r = c.post(f"http://127.0.0.1:{self.port_of()}/v1/telemetry", json=body,
                               headers={"Authorization": f"Bearer {self.secret}",
                                        "X-Device-Id": self.dev})
                except httpx.HTTPError as exc:
                    self.errors += 1
                    self.last_exc = repr(exc)
                    time.sleep(0.05)
                    continue
                if r.status_code != 200:
                    self.errors += 1
                    self.last_bad = (seq, r.status_code, r.text[:300])
                    time.sleep(0.05)
                    continue
                self.ok.append(seq)
                self.acks.append(r.json()["ack_seq"])
                seq += 1
                time.sleep(0.003)


@pytest.mark.slow  # a guard (held before too): -m slow
@pytest.mark.parametrize("seed", [46])
def test_kill_9_under_mqtt_and_http_keeps_every_ack_once(gateway_factory, seed: int) -> None:
    """Check that 3 MQTT devices (QoS 1, resending until acked) and 3 HTTP devices (each
    request repeated until a 200) through 3 kill -9s have every acknowledged reading stored
    once, and nothing stored past what the HTTP answers acknowledged."""
    gw = gateway_factory(prestart=True)
    sec = Security(gw.data_dir)
    mq = [sec.add_device(f"mq-{i}") for i in range(3)]
    ht = [sec.add_device(f"ht-{i}") for i in range(3)]
    sec.close()
    gw.start()
    acks: dict[str, list[tuple[int, int]]] = {d: [] for d, _ in mq}  # (gateway start, seq)
    lock = threading.Lock()

    def on_ack(dev: str, seq: int, _t: float) -> None:
        with lock:
            acks[dev].append((gw.starts, seq))

    devices = [MqttDevice(d, s, port=gw.mqtt_port, resend_after_s=2.0, on_ack=on_ack)
               .start(resume=False) for d, s in mq]
    https = [_HttpDevice(d, s, lambda: gw.http_port) for d, s in ht]
    n_mqtt, n_http = 400, 10_000
    done = threading.Event()

    def produce() -> None:
        for seq in range(1, n_mqtt + 1):
            for d in devices:
                d.send(T0 + seq, {"m": seq * 0.5})
            time.sleep(0.01)
        done.set()

    threads = [threading.Thread(target=produce, daemon=True)] + [
        threading.Thread(target=h.run, args=(n_http,), daemon=True) for h in https]
    for t in threads:
        t.start()
    rnd = random.Random(seed)
    kills = 3
    http_ok_at_kill: list[dict[str, int]] = []
    start_s: list[float] = []
    try:
        for k in range(kills):
            time.sleep(rnd.uniform(0.2, 1.2))
            gw.kill()
            http_ok_at_kill.append({h.dev: (h.acks[-1] if h.acks else 0) for h in https})
            time.sleep(rnd.uniform(0.0, 0.3))
            gw.prestart = k < kills - 1
            t0 = time.monotonic()
            gw.start()
            start_s.append(round(time.monotonic() - t0, 2))
        threads[0].join(60)
        assert done.is_set()
        assert all(d.wait_acked(60) for d in devices), [len(d.pending) for d in devices]
        base = {h.dev: len(h.ok) for h in https}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(len(h.ok) < base[h.dev] + 30 for h in https):
            time.sleep(0.1)
    finally:
        for h in https:
            h.stop.set()
        for t in threads[1:]:
            t.join(10)
        for d in devices:
            d.stop()
    assert gw.stop() == 0
    store = open_store(f"duckdb:///{gw.data_dir / 'edgewise.duckdb'}")
    try:
        for dev, _ in mq:
            top = max(s for _, s in acks[dev])
            assert top == n_mqtt
            assert _stored_once(store, dev, range(1, n_mqtt + 1), lambda s: s * 0.5) == (0, 0, 0)
            # each restart's acks reach at least the last one's (else an acked reading was lost)
            tops = [max((s for g, s in acks[dev] if g == life), default=0)
                    for life in range(1, gw.starts + 1)]
            assert all(b == 0 or b >= a for a, b in itertools.pairwise(tops)), tops
        for h in https:
            assert h.ok == list(range(1, len(h.ok) + 1))
            assert h.acks == h.ok  # each 200 acknowledges exactly what was sent so far
            assert len(h.ok) > 30, (start_s, h.errors, h.last_bad, h.last_exc, http_ok_at_kill)
            assert _stored_once(store, h.dev, range(1, len(h.ok) + 1),
                                lambda s: s * 0.5) == (0, 0, 0)
            # nothing stored past what a 200 answered but the request in flight at the end
            assert store.seq_watermark(h.dev) <= len(h.ok) + 1
        assert store.conflicts() == []
    finally:
        store.close()


def _prefill(data_dir, devices: dict[str, tuple[list[float], int]]) -> None:
    """Store, for each device, ``n`` readings of metric ``v`` (seqs 1..n, values cycled
    from its list) and checkpoint."""
    from edgewise.store.duckdb import DuckDBStore
    from edgewise.telemetry import Reading

    s = DuckDBStore(data_dir / "edgewise.duckdb")
    try:
        for dev, (vals, n) in devices.items():
            for lo in range(0, n, 5000):
                seqs = list(range(lo + 1, min(n, lo + 5000) + 1))
                s.append([Reading(dev, "v", (T0 - 10**6 + k) * 10**9, vals[k % len(vals)],
                                  seq=k) for k in seqs], {dev: seqs})
        s.checkpoint()
    finally:
        s.close()


@pytest.mark.slow  # a guard (held before too): -m slow
@pytest.mark.parametrize("seed", [2, 5, 7])
def test_kill_9_during_a_device_purge(gateway_factory, seed: int) -> None:
    """Check that a kill -9 at a random moment of ``DELETE /v1/devices/victim`` (about
    2.4 s here: the purge rewrites 100,000 readings of another device) while that device
    sends leaves the victim whole or deleted with its bytes gone from the files after the
    restart, and every reading of the other device stored once."""
    from tests.conftest import random_values, values_on_disk

    gw = gateway_factory(prestart=True)
    sec = Security(gw.data_dir)
    sec.add_device("victim")
    keeper, keeper_secret = sec.add_device("keeper")
    admin = sec.create_token("admin", "test-admin")
    sec.close()
    gone_vals = random_values(seed)
    per = 100_000  # the keeper's: the purge copies them (a few tenths of a second)
    _prefill(gw.data_dir, {"victim": (gone_vals, len(gone_vals)),
                           "keeper": ([k / 4 for k in range(97)], per)})
    path = gw.data_dir / "edgewise.duckdb"
    assert values_on_disk(path, gone_vals) == len(gone_vals)  # uncompressed: searchable
    gw.start()
    d = MqttDevice(keeper, keeper_secret, port=gw.mqtt_port, resend_after_s=2.0).start()
    assert d.next_seq == per + 1
    answer: list[int] = []

    def delete() -> None:
        try:
            r = httpx.delete(f"http://127.0.0.1:{gw.http_port}/v1/devices/victim",
                             headers={"Authorization": f"Bearer {admin}"}, timeout=30)
            answer.append(r.status_code)
        except httpx.HTTPError:
            answer.append(-1)

    rnd = random.Random(seed)
    sent = 0
    try:
        for _ in range(20):
            sent += 1
            d.send(T0 + sent, {"m": sent * 0.5})
        t = threading.Thread(target=delete, daemon=True)
        t.start()
        end = time.monotonic() + rnd.uniform(0.3, 2.6)  # the DELETE takes ~2.4 s here
        while time.monotonic() < end:
            sent += 1
            d.send(T0 + sent, {"m": sent * 0.5})
            time.sleep(0.01)
        gw.kill()
        t.join(10)
        gw.prestart = False
        gw.start()
        for _ in range(20):
            sent += 1
            d.send(T0 + sent, {"m": sent * 0.5})
        assert d.wait_acked(30), len(d.pending)
    finally:
        d.stop()
    assert gw.stop() == 0
    store = open_store(f"duckdb:///{path}")
    try:
        n_victim = len(store.query("victim"))
        kept = store.query(keeper)
        purge_pending = store.purge_pending
    finally:
        store.close()
    # the deletion happened whole or not at all; once it did, the bytes are gone too
    assert n_victim in (0, len(gone_vals)), n_victim
    if answer == [200]:
        assert n_victim == 0
    if n_victim == 0:
        assert values_on_disk(path, gone_vals) == 0
        assert not purge_pending
    assert len([r for r in kept if r[0] == "v"]) == per
    got = sorted(ts // 10**9 - T0 for m, ts, _ in kept if m == "m")
    assert got == list(range(1, sent + 1))


@pytest.mark.slow  # a guard (held before too): -m slow
@pytest.mark.parametrize("seed", [2, 46])
def test_kill_9_during_retention_at_start(gateway_factory, monkeypatch, seed: int) -> None:
    """Check that kill -9s while the start's retention pass deletes and purges expired
    readings leave them gone (bytes too, by the restarted gateway's own pass), the recent
    readings whole and the seq watermark where it was."""
    from edgewise.store.duckdb import DuckDBStore
    from edgewise.telemetry import Reading
    from tests.conftest import random_values, values_on_disk

    monkeypatch.setenv("EDGEWISE_RETENTION_DAYS", "365")
    gw = gateway_factory()
    sec = Security(gw.data_dir)
    sec.add_device("pump")
    sec.close()
    old = random_values(seed)
    now = time.time_ns()
    recent = 100_000
    path = gw.data_dir / "edgewise.duckdb"
    s = DuckDBStore(path)
    try:  # 200 readings from 2023 (expired), then 100,000 of the last hours
        s.append([Reading("pump", "old", T0 * 10**9 + k, v, seq=k + 1)
                  for k, v in enumerate(old)], {"pump": range(1, len(old) + 1)})
        for lo in range(0, recent, 10_000):
            seqs = range(len(old) + lo + 1, len(old) + lo + 10_001)
            s.append([Reading("pump", "v", now - 10**13 + q * 10**6, (q % 97) / 4, seq=q)
                      for q in seqs], {"pump": seqs})
        s.checkpoint()
    finally:
        s.close()
    top = len(old) + recent
    assert values_on_disk(path, old) == len(old)
    rnd = random.Random(seed)
    gw.prestart = True
    gw.start(60)  # a first start only launches the next one ahead (its imports)
    gw.kill()
    for delay in (rnd.uniform(0.3, 2.5), rnd.uniform(0.3, 2.5)):
        timer = threading.Timer(delay, gw.kill)
        timer.start()
        try:
            gw.start()
        except RuntimeError:
            pass  # killed while starting
        timer.join()
        gw.kill()
        # a start killed before its "ready" line: the next start waits for one more
        gw.starts = gw.log.read_text().splitlines().count("ready")
    gw.prestart = False
    gw.start()
    deadline = time.monotonic() + 15  # the gateway's own retention pass purges the bytes
    while time.monotonic() < deadline and values_on_disk(path, old):
        time.sleep(0.2)
    assert values_on_disk(path, old) == 0
    assert gw.stop() == 0
    s = DuckDBStore(path)
    try:
        assert s.seq_watermark("pump") == top  # no device is asked to resend
        assert s.query("pump", "old") == []
        assert len(s.query("pump", "v")) == recent
        assert not s.purge_pending
    finally:
        s.close()
    assert values_on_disk(path, old) == 0


def _store_with_a_damaged_log(folder, batches: int = 200) -> tuple[dict[int, int], int]:
    """A store in ``folder`` (edgewise.duckdb): batches 1-10 of ``_crash_writer`` in the
    file, the rest only in its write-ahead log, whose bytes are zeroed at 3/4 of its length
    (as a crash mid-write leaves them); return (each logged batch's end offset in the log,
    the damage's offset)."""
    import shutil
    import tempfile
    from pathlib import Path

    from edgewise.store.duckdb import DuckDBStore
    from tests.store._crash_writer import batch

    work = Path(tempfile.mkdtemp(dir=folder.parent))
    p = work / "edgewise.duckdb"
    wal = work / "edgewise.duckdb.wal"
    s = DuckDBStore(p)
    ends: dict[int, int] = {}
    try:
        for k in range(1, 11):
            s.append(batch(k, 50), {"crash": [k]})
        s.checkpoint()
        for k in range(11, batches + 1):
            s.append(batch(k, 50), {"crash": [k]})
            ends[k] = wal.stat().st_size
        folder.mkdir(exist_ok=True)
        for f in (p, wal):  # what a kill -9 now leaves (every batch committed)
            shutil.copy(f, folder / f.name)
    finally:
        s.close()
        shutil.rmtree(work)
    damage = ends[batches] * 3 // 4
    with open(folder / wal.name, "r+b") as fh:
        fh.seek(damage)
        fh.write(b"\0" * 64)
    return ends, damage


def _cli(*args: str) -> tuple[int, str, str]:
    """``edgewise ARGS`` in this process, answered as ``python -m edgewise`` answers (its
    status, output and any traceback are under test, not the process: an interpreter start
    each was a second of CPU)."""
    from tests.in_process import edgewise_here

    r = edgewise_here(*args)
    return r.returncode, r.stdout, r.stderr


def test_repair_on_a_full_disk_keeps_the_intact_part_of_the_log(small_disk, tmp_path) -> None:
    """A repair that cannot write the intact part of the log (the disk is full, as it often
    is after such a crash) changes nothing and says so; run again with space, it replays
    every batch committed before the damage. It cut the log short and crashed (exit 1, a
    traceback); the next repair said 'nothing to repair' and the store lost 96 committed
    batches silently."""
    import os

    from edgewise.store.duckdb import DuckDBStore

    data = small_disk / "ew"
    ends, damage = _store_with_a_damaged_log(data)
    intact = max(k for k, end in ends.items() if end <= damage)
    wal = data / "edgewise.duckdb.wal"
    size = wal.stat().st_size
    filler = small_disk / "filler"
    st = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - damage // 4))

    rc, out, err = _cli("repair", "--data-dir", str(data))
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err and "run the repair again" in err, err
    assert wal.stat().st_size == size  # the log as it was: nothing changed
    assert sorted(f.name for f in data.iterdir()) == ["edgewise.duckdb", wal.name]
    filler.unlink()

    rc, out, err = _cli("repair", "--data-dir", str(data))
    assert rc == 0, (rc, out, err)
    assert "did not replay" in out and "bytes (the transactions committed before" in out, out
    s = DuckDBStore(data / "edgewise.duckdb")
    try:
        assert s.seq_watermark("crash") == intact
        assert s.count_readings() == intact * 50
    finally:
        s.close()
