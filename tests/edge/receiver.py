"""A deliberately misbehaving gateway stand-in for the agent's update-attack tests.

The real gateway (``edgewise serve``) is what exactly-once delivery is tested against
(``test_agent_gateway.py``); this one exists because it can attack the agent on request.

It speaks INTERFACES.md: ``POST /v1/telemetry`` with ``Authorization: Bearer`` and
``X-Device-Id``; stores each message idempotently by (device, seq) in SQLite; answers
``{"accepted", "duplicates", "conflicts", "rejected", "ack_seq"}`` after commit, where
``ack_seq`` is the largest w with every seq 1..w stored. It also serves signed releases from
an Edgewise registry: ``GET /v1/devices/{id}/model`` and ``GET /v1/models/{sha256}``.
A ``tamper`` file beside the db makes it flip one bit of served models (attack tests).

Run: ``python -m tests.edge.receiver --port P --db PATH --secret S [--registry DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request, Response

from edgewise.registry import Registry
from edgewise.telemetry import decode


def make_app(db_path: Path, secret: str, registry_dir: Path | None) -> FastAPI:
    app = FastAPI()
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS readings (device TEXT, seq INTEGER, metric TEXT, "
               "value REAL, PRIMARY KEY (device, seq, metric))")
    db.execute("CREATE TABLE IF NOT EXISTS seqs (device TEXT, seq INTEGER, "
               "PRIMARY KEY (device, seq))")
    db.execute("CREATE TABLE IF NOT EXISTS stats (device TEXT PRIMARY KEY, dup INTEGER)")
    reg = Registry(registry_dir) if registry_dir else None
    tamper = db_path.with_name("tamper")
    override = db_path.with_name("serve_release")

    def auth(device: str | None, authorization: str | None) -> str:
        if not device or authorization != f"Bearer {secret}":
            raise HTTPException(401, "bad credentials")
        return device

    def watermark(device: str) -> int:
        rows = db.execute("SELECT seq FROM seqs WHERE device=? ORDER BY seq", (device,))
        w = 0
        for (s,) in rows:
            if s != w + 1:
                break
            w = s
        return w

    @app.post("/v1/telemetry")
    async def telemetry(request: Request, x_device_id: str | None = Header(None),
                        authorization: str | None = Header(None)) -> dict:
        device = auth(x_device_id, authorization)
        d = decode(await request.body(), device_id=device, max_future_s=3600)
        accepted = dup = 0
        db.execute("BEGIN IMMEDIATE")
        seen = set()
        for r in d.readings:
            if r.seq not in seen:
                seen.add(r.seq)
                cur = db.execute("INSERT OR IGNORE INTO seqs VALUES (?, ?)", (device, r.seq))
                if cur.rowcount == 0:
                    dup += 1
                    db.execute("INSERT INTO stats VALUES (?, 1) ON CONFLICT(device) DO UPDATE "
                               "SET dup = dup + 1", (device,))
            cur = db.execute("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?)",
                             (device, r.seq, r.metric, r.value))
            accepted += cur.rowcount
        db.execute("COMMIT")
        return {"accepted": accepted, "duplicates": dup, "conflicts": 0,
                "rejected": [e.to_problem() for e in d.rejected], "ack_seq": watermark(device)}

    @app.get("/v1/devices/{device}/model")
    def model(device: str, x_device_id: str | None = Header(None),
              authorization: str | None = Header(None)) -> Response:
        auth(x_device_id, authorization)
        if reg is None:
            return Response(status_code=204)
        if override.exists():  # serve a chosen (e.g. old) release: rollback attack
            want = int(override.read_text())
            rel = next(r for r in reg.releases() if r.release == want)
        else:
            rel = reg.current(device, ["all"])
        if rel is None:
            return Response(status_code=204)
        return Response(json.dumps(rel.envelope()), media_type="application/json")

    @app.get("/v1/models/{sha256}")
    def blob(sha256: str, x_device_id: str | None = Header(None),
             authorization: str | None = Header(None)) -> Response:
        auth(x_device_id, authorization)
        try:
            data = bytearray(reg.blob(sha256))
        except (KeyError, AttributeError):
            raise HTTPException(404, "no such model") from None
        if tamper.exists():
            data[len(data) // 2] ^= 0x01
        return Response(bytes(data), media_type="application/octet-stream")

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--registry", type=Path)
    a = p.parse_args()
    uvicorn.run(make_app(a.db, a.secret, a.registry), host="127.0.0.1", port=a.port,
                log_level="warning")


if __name__ == "__main__":
    main()
