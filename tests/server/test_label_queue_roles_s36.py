"""GET /v1/label-queue: a viewer reads; only an operator's request records questions.

A viewer's GET ran the query mix and saved its state (``label-mix.json``): each request
recorded new open questions, unaudited, and changed what the next caller (an operator's
dashboard included) was offered (the third window went 720 -> 450 -> 90 s). A viewer's GET
now answers from the saved state and saves nothing; an operator's records as before.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from tests.server.conftest import Env

N = 1000


def _send_history(env: Env) -> None:
    t0 = int(time.time()) - 2 * N
    rng = np.random.default_rng(0)
    for c in range(0, N, 500):
        batch = [{"ts": t0 + i, "seq": i + 1,
                  "metrics": {"t": float(rng.normal()), "v": float(rng.normal())}}
                 for i in range(c, c + 500)]
        r = env.send(batch)
        assert r.status_code == 200, r.text


def _queue(env: Env, role: str) -> list[list[int]]:
    r = env.client.get("/v1/label-queue", params={"device": "pump-1", "k": 3},
                       headers=env.auth(role))
    assert r.status_code == 200, r.text
    return [[it["start_ns"], it["end_ns"]] for it in r.json()["items"]]


def _pending(env: Env) -> list[Any]:
    states = json.loads((env.settings.data_dir / "label-mix.json").read_text())
    return [p[0] for p in states["pump-1"]["pending"]]


def test_viewer_queue_saves_nothing_and_repeats(env: Env) -> None:
    _send_history(env)
    mix = env.settings.data_dir / "label-mix.json"
    seen = [_queue(env, "viewer") for _ in range(3)]
    assert not mix.exists(), f"a viewer's GET wrote {mix}: {mix.read_text()[:200]}"
    assert seen[0] == seen[1] == seen[2], seen
    # the viewer's requests did not change what the operator is offered, and the
    # operator's request records its windows as the mix's open questions
    offered = _queue(env, "operator")
    assert offered == seen[0]
    assert all(w in _pending(env) for w in offered), (offered, _pending(env))


def test_viewer_sees_what_the_next_operator_gets(env: Env) -> None:
    _send_history(env)
    _queue(env, "operator")
    mix = env.settings.data_dir / "label-mix.json"
    before = mix.read_bytes()
    viewed = _queue(env, "viewer")
    assert mix.read_bytes() == before  # the viewer's GET left the saved state alone
    assert _queue(env, "operator") == viewed
    assert mix.read_bytes() != before  # the operator's did record its questions


def test_an_edited_mix_state_with_more_hits_than_asks_is_a_422_naming_the_file(
        env: Env) -> None:
    """Check a label-mix.json edited to more hits than asks is refused for every role,
    naming the file and what to do: it passed the state's checks, and the Thompson draw
    then raised numpy's "b <= 0", a 500 from every GET of the queue."""
    from fastapi.testclient import TestClient

    _send_history(env)
    _queue(env, "operator")
    mix = env.settings.data_dir / "label-mix.json"
    states = json.loads(mix.read_text())
    states["pump-1"].update(hits=[3, 0, 0, 0], asks=[1, 1, 1, 1], pending=[])
    mix.write_text(json.dumps(states))
    client = TestClient(env.client.app, raise_server_exceptions=False)
    for role in ("viewer", "operator"):
        r = client.get("/v1/label-queue", params={"device": "pump-1", "k": 3},
                       headers=env.auth(role))
        assert r.status_code == 422, (role, r.status_code, r.text[:300])
        assert str(mix) in r.json()["detail"] and "0 <= hits <= asks" in r.json()["detail"]
