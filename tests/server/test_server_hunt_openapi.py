"""Server hunt, defect 3: /openapi.json documents what ack and label of a merged alert
answer (409, reason ``merged_alert``), and every strategy /v1/label-queue accepts."""

from __future__ import annotations

import time

import pytest

from edgewise.label.strategies import STRATEGIES
from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

S = 10**9


@pytest.mark.parametrize("action", ["ack", "label"])
def test_the_409_of_a_merged_alert_is_documented(env: Env, action: str) -> None:
    """Check ack and label of a merged alert answer a 409 their operation documents, as the
    Problem, saying what to do."""
    t0 = time.time_ns() - 600 * S
    a = env.store.add_alert(Alert(env.device, t0, t0 + 10 * S, 0.9, drivers={"a": 1.0}))
    b = env.store.add_alert(Alert(env.device, t0 + 50 * S, t0 + 60 * S, 0.95,
                                  drivers={"a": 1.0}))
    env.store.merge_alert(b.id, a.id, end_ns=t0 + 60 * S, score=0.95)
    body = {"label": "true_alarm"} if action == "label" else None
    got = problem(env.client.post(f"/v1/alerts/{b.id}/{action}", json=body,
                                  headers=env.auth("operator")), 409)
    assert got["reason"] == "merged_alert"
    spec = env.client.get("/openapi.json").json()
    doc = spec["paths"]["/v1/alerts/{alert_id}/" + action]["post"]["responses"]
    assert "409" in doc, sorted(doc)
    assert "merged_alert" in doc["409"]["description"]
    schema = doc["409"]["content"]["application/problem+json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Problem"}


def test_the_strategy_parameter_names_every_accepted_strategy(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    params = spec["paths"]["/v1/label-queue"]["get"]["parameters"]
    text = next(p for p in params if p["name"] == "strategy")["description"]
    assert "novelty" in text
    assert all(s in text for s in STRATEGIES), (text, STRATEGIES)
