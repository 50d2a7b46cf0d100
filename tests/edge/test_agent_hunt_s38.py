"""Agent hunt, round 38: the outbox after a full disk and its bound on disk, the model kept as
fallback across installs, an offer whose key_id is no string, a 429's Retry-After date.

No mount and no root: the full disk is simulated on the outbox's connection (a write fails as
SQLite fails on a full disk once the WAL's file has grown to the room the disk has left).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import _WAL_LIMIT, OUTBOX_MARGIN, Agent, ModelSlot, Outbox
from edgewise.errors import SignatureError
from edgewise.registry import Artifact, load_or_create_key, sign, verify

MSG = {"ts": 1700000000, "metrics": {f"m{i}": 1.5 for i in range(20)}}


def _fast(box: Outbox) -> Outbox:
    """This connection skips fsync (the files grow the same)."""
    box._db.execute("PRAGMA synchronous=OFF")
    return box


# -- 1. after a full disk, every new reading was dropped until a restart ------------------------
def test_the_wal_never_grows_past_its_limit_to_reach_a_checkpoint(tmp_path):
    """Check the outbox's WAL file stays within _WAL_LIMIT while messages come (it was
    checkpointed at 64 pages, 263,712 bytes of WAL, over the 262,144 it is cut back to: after
    a full disk the WAL could never grow to its checkpoint and every put failed for good)."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path))
    worst = 0
    for _ in range(400):
        assert box.put(MSG) is not None
        worst = max(worst, os.path.getsize(f"{path}-wal"))
    assert 0 < worst <= _WAL_LIMIT, worst
    box.close()


class _DiskRoomForTheWal:
    """The outbox's connection on a full disk whose only room is what the WAL's file takes
    and ``room`` bytes more: a message stored past that fails as SQLite fails then."""

    def __init__(self, db: sqlite3.Connection, wal: str, room: int) -> None:
        self._db, self._wal, self._room = db, wal, room

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT INTO outbox") and os.path.getsize(self._wal) >= self._room:
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_put_the_full_disk_refuses_gives_the_wals_room_back(tmp_path):
    """Check that once the disk is full with nothing pending (all acked: no ack comes to
    free room), new messages are stored: the WAL is checkpointed and cut to nothing, and
    the put tried once more (they were all dropped, though the database held free pages,
    until the agent restarted)."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path))
    for _ in range(200):
        box.put(MSG)
    assert box.ack(box.next_seq - 1) == 200 and len(box) == 0
    box._db = _DiskRoomForTheWal(box._db, f"{path}-wal", 64 * 1024)  # type: ignore[assignment]
    stored = [box.put(MSG) for _ in range(300)]
    assert None not in stored and box.dropped == 0 and not box.disk_full
    assert len(box) == 300
    box.close()


# -- 2. the outbox took about twice --max-mb on disk for 2 KB messages -------------------------
@pytest.mark.parametrize("width", [88, 40])
def test_outbox_files_stay_within_the_bound_for_messages_of_a_page_each(tmp_path, width):
    """Check an outbox of ~2 KB messages (88 metrics: one 4 KB page each, as SQLite stores
    them) and ~1 KB ones (3 a page) keeps its files within max_bytes plus OUTBOX_MARGIN: the
    pages in use are bounded, not the counted JSON alone (4 MB bound: 8.4 MB on disk)."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path, max_bytes=1024 * 1024))
    msg = {"ts": 1700000000000000000, "metrics": {f"sensor_{i:03d}": 21.123456
                                                  for i in range(width)}}
    n = 0
    while box.put(msg) is not None:
        n += 1
    assert n > 200 and box.dropped == 1
    assert box.bytes_on_disk() <= box.max_bytes + OUTBOX_MARGIN, box.bytes_on_disk()
    assert box.bytes_in_pages <= box.max_bytes + OUTBOX_MARGIN
    assert box.ack(n) == n and box.put(msg) == n + 1  # the room comes back with the ack
    box.close()


# -- 3. a new install deleted the working fallback model and kept the failed one ----------------
class Brittle:
    """A detector that works on the install probe's readings (0.0) and raises on a large one
    (``tag`` tells one release's model from another's)."""

    def __init__(self, tag: int = 0) -> None:
        self.tag = tag

    def clone(self) -> Brittle:
        return Brittle(self.tag)

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        (v,) = x.values()
        if v > 50:
            raise OverflowError(f"cannot score {v}")
        return 0.0


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return load_or_create_key(tmp_path / "key")


def _release(key: Any, release: int, model: Any) -> Any:
    return sign(Artifact(pickle.dumps(model), "ewz", f"1.0.{release}", release,
                         "device:pump-7", format="pickle"), key)


class _Offers:
    """The gateway's offer: the signed release given last."""

    signed: Any = None


def _offer_client() -> tuple[_Offers, httpx.Client]:
    """A gateway's model routes, in process: the offer and its payload."""
    offers = _Offers()

    def handle(req: httpx.Request) -> httpx.Response:
        s = offers.signed
        if req.url.path.endswith("/model"):
            return httpx.Response(200, json={
                "manifest": base64.b64encode(s.manifest_bytes).decode(),
                "signature": base64.b64encode(s.signature).decode()})
        if req.url.path.startswith("/v1/models/"):
            return httpx.Response(200, content=s.payload)
        return httpx.Response(404)

    return offers, httpx.Client(transport=httpx.MockTransport(handle))


def test_a_new_release_keeps_the_model_that_runs_after_a_fallback_as_its_fallback(tmp_path,
                                                                                   key):
    """Check the hunter's scenario through the update check: release 2 works, release 3
    fails on a reading (release 2 runs again), release 4 installs and fails too: release 2
    runs, now and at the next start (release 4's install deleted release 2's file and kept
    the failed release 3's, so the built-in detector ran)."""
    offers, client = _offer_client()
    agent = Agent("http://gw", "pump-7", "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    for rel, model in ((1, EWZScore()), (2, EWZScore(alpha=0.2)), (3, Brittle())):
        offers.signed = _release(key, rel, model)
        assert agent.check_update(client) == "installed"
    assert agent.handle({"t": 99.0}) is not None and agent.running_release == 2
    offers.signed = _release(key, 4, Brittle(tag=4))
    assert agent.check_update(client) == "installed" and agent.running_release == 4
    kept = sorted(p.name.split("-")[1] for p in agent.slot.root.glob("model-*.bin"))
    assert kept == ["2", "4"]
    assert agent.handle({"t": 99.0}) is not None
    assert (agent.release, agent.running_release, agent.template.alpha) == (4, 2, 0.2)
    agent.outbox.close()
    again = Agent("http://gw", "pump-7", "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert (again.release, again.running_release) == (4, 2)
    again.outbox.close()
    client.close()


def test_a_slot_install_does_not_keep_a_failed_release_as_the_fallback(tmp_path, key):
    """Check ModelSlot.install alone (no running model given) keeps, when the pointer's
    release failed on readings (models/failed.json), the release that runs in its place."""
    slot = ModelSlot(tmp_path / "models")
    for rel, model in ((1, EWZScore()), (2, EWZScore(alpha=0.2)), (3, Brittle())):
        s = _release(key, rel, model)
        slot.install(s.manifest_bytes, s.payload)
    slot.mark_failed(3, s.manifest.sha256, "OverflowError: cannot score 99.0")
    s = _release(key, 4, EWZScore())
    slot.install(s.manifest_bytes, s.payload)
    kept = sorted(p.name.split("-")[1] for p in slot.root.glob("model-*.bin"))
    assert kept == ["2", "4"] and slot.previous().release == 2


# -- 4. a manifest whose key_id is a JSON list raised TypeError at every poll -------------------
@pytest.mark.parametrize("kid", [["x"], {"a": 1}])
def test_an_offer_whose_key_id_is_no_string_is_refused_as_bad_manifest(tmp_path, key, kid,
                                                                         caplog):
    """Check the offer is refused once as bad_manifest (naming manifest.key_id), then
    refused:bad_manifest at each poll, never raised (TypeError: unhashable type, logged as
    the gateway being unreachable every update interval)."""
    caplog.set_level(logging.WARNING, "edgewise.agent")
    mb = json.dumps({"release": 3, "key_id": kid}).encode()

    class R:
        status_code = 200

        def json(self) -> Any:
            return {"manifest": base64.b64encode(mb).decode(),
                    "signature": base64.b64encode(b"\0" * 64).decode()}

        def raise_for_status(self) -> None:
            pass

    class C:
        def get(self, *a: Any, **k: Any) -> Any:
            return R()

    agent = Agent("http://gw", "pump-7", "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert [agent.check_update(C()) for _ in range(2)] == ["refused:bad_manifest"] * 2
    events = [json.loads(r.getMessage()) for r in caplog.records
              if '"update_refused"' in r.getMessage()]
    assert len(events) == 1 and events[0]["field"] == "manifest.key_id"
    assert events[0]["release"] == 3
    agent.outbox.close()


@pytest.mark.parametrize("kid", [["x"], {"a": 1}, 7])
def test_verify_refuses_a_key_id_that_is_no_string_as_tampered(key, kid):
    """Check registry.verify raises SignatureError (tampered), never TypeError."""
    s = sign(Artifact(b"abc", "m", "1.0.0", 2, "device:d1"), key)
    head = json.loads(s.manifest_bytes)
    mb = json.dumps({**head, "key_id": kid}).encode()
    with pytest.raises(SignatureError, match="key_id") as info:
        verify(mb, s.signature, b"abc", trusted_keys={key.key_id: key.public_key_bytes},
               device_id="d1")
    assert info.value.reason == "tampered"


# -- 5. a 429 whose Retry-After is an HTTP date was logged as the gateway being unreachable -----
@pytest.mark.parametrize(("header", "lo", "hi"), [
    ("Wed, 21 Oct 2037 07:28:00 GMT", 30.0, 30.0),  # far ahead: capped
    # past: 1 s, as with no header (a device clock ahead of the gateway's; 0 s posted again
    # some 20 times a second); RFC 9110 would have it at once
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0, 1.0),
    ("12", 12.0, 12.0), ("nan", 1.0, 1.0), ("-5", 1.0, 1.0), ("soon", 1.0, 1.0),
])
def test_a_429_retry_after_date_or_odd_value_is_waited_as_rfc_9110_says(tmp_path, header, lo,
                                                                          hi):
    """Check drain_once waits for a 429 as its Retry-After says (seconds or an HTTP date,
    within 0 to 30 s), 1 s for a value it cannot read, NaN or negative, or a date already
    past; it raised ValueError
    for a date (logged as gateway_unreachable, posted again 50 ms later)."""
    agent = Agent("http://gw", "pump-7", "s", tmp_path / "a")
    agent.handle({"t": 1.0})
    waits: list[float] = []
    agent._stop.wait = lambda s=None: waits.append(s) or False  # type: ignore[method-assign]

    class R:
        status_code = 429
        text = "slow down"

        def __init__(self) -> None:
            self.headers = {"Retry-After": header}

        def json(self) -> Any:
            raise ValueError

    class C:
        def post(self, *a: Any, **k: Any) -> Any:
            return R()

    assert agent.drain_once(C()) == -1 and len(agent.outbox) == 1
    assert len(waits) == 1 and lo <= waits[0] <= hi, waits
    agent.outbox.close()
