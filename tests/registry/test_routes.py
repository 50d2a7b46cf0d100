"""Registry REST routes on a real FastAPI app with real Security and Registry."""

from __future__ import annotations

import base64
import pickle
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from edgewise.detect.zscore import EWZScore
from edgewise.registry import Registry, verify
from edgewise.security.credentials import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes.models import make_router
from tests.conftest import free_port


class _Served:
    """Serve an app with uvicorn on a free loopback port, in a thread."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def test_rollout_over_rest_and_agent_fetch(data_dir):
    """Check operator rollout, device fetch + verify, and that roles and secrets are enforced."""
    reg, sec = Registry(data_dir), Security(data_dir)
    dev, secret = sec.add_device("pump")
    reg.publish("ewz", "1.0.0", pickle.dumps(EWZScore()), format="pickle")
    app = FastAPI()
    install_problem_handlers(app)  # the router raises Problem; the app turns it into 4xx
    app.include_router(make_router(reg, sec))
    with _Served(app) as c:
        _exercise(c, reg, sec, dev, secret)


def _exercise(c, reg, sec, dev, secret):
    dh = {"Authorization": f"Bearer {secret}", "X-Device-Id": dev}
    assert c.get(f"/v1/devices/{dev}/model", headers=dh).status_code == 204
    viewer, operator = sec.create_token("viewer"), sec.create_token("operator")
    body = {"name": "ewz", "version": "1.0.0", "target": f"device:{dev}"}
    r = c.post("/v1/registry/rollouts", json=body, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    r = c.post("/v1/registry/rollouts", json=body, headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 200 and r.json()["release"] == 1
    env = c.get(f"/v1/devices/{dev}/model", headers=dh).json()
    mb, sig = base64.b64decode(env["manifest"]), base64.b64decode(env["signature"])
    import json

    blob = c.get(f"/v1/models/{json.loads(mb)['sha256']}", headers=dh).content
    m = verify(mb, sig, blob, trusted_keys={reg.key_id: reg.public_key_bytes}, device_id=dev)
    assert m.release == 1
    bad = {"Authorization": "Bearer nope", "X-Device-Id": dev}
    assert c.get(f"/v1/devices/{dev}/model", headers=bad).status_code == 401
    r = c.post("/v1/registry/rollouts", json={**body, "target": "pump"},
               headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 422 and "'device:<id>'" in r.json()["detail"]
    assert any(e.action == "model.rollout" for e in sec.audit_log())
