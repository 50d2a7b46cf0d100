"""Server hunt, defect 1: the registry's device routes (``GET /v1/devices/{id}/model``,
``GET /v1/models/{sha256}``) count wrong secrets per peer address, as telemetry does, and in
``edgewise_auth_failures_total``; they used to count every caller under one shared key, so
one address's guesses throttled every other, and the metric missed them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import Env, build_env, problem

PATHS = ["/v1/devices/pump-1/model", "/v1/models/" + "0" * 64]


@pytest.fixture
def env3(data_dir: Path) -> Iterator[Env]:
    """An app whose sources are paused after 3 wrong secrets."""
    yield from build_env(data_dir, throttle_after_failures=3)


def _wrong(device: str = "pump-1") -> dict[str, str]:
    return {"Authorization": "Bearer wrong-secret", "X-Device-Id": device}


@pytest.mark.parametrize("path", PATHS)
def test_one_addresss_wrong_secrets_do_not_throttle_another(env3: Env, path: str) -> None:
    """Check a source paused on a model route leaves another address's first try a 401."""
    for _ in range(3):
        problem(env3.client.get(path, headers=_wrong()), 401)
    assert problem(env3.client.get(path, headers=_wrong()), 429)["reason"] == "throttled"
    # another peer, on the same app (no lifespan run again)
    other = TestClient(env3.client.app, client=("10.0.0.2", 50000))
    body = problem(other.get(path, headers=_wrong()), 401)
    assert body["reason"] == "bad_credentials"
    assert env3.security.throttled_attempts("testclient") >= 1  # under its own address
    # the right secret passes from anywhere, even from the paused address
    assert other.get(PATHS[0], headers=env3.device_headers()).status_code in (200, 204)
    assert env3.client.get(PATHS[0], headers=env3.device_headers()).status_code in (200, 204)


def test_model_route_failures_are_counted_in_the_metric(env: Env) -> None:
    """Check a wrong secret, no credentials and a paused source on the model routes show in
    ``edgewise_auth_failures_total`` by reason, as on telemetry."""
    metric = env.pipeline.metrics.get
    for path in PATHS:
        problem(env.client.get(path, headers=_wrong()), 401)
    problem(env.client.get(PATHS[0]), 401)  # no Authorization at all
    assert metric("edgewise_auth_failures_total", reason="bad_secret") == 2
    assert metric("edgewise_auth_failures_total", reason="empty_password") == 1
    text = env.client.get("/metrics").text
    assert 'edgewise_auth_failures_total{reason="bad_secret"} 2' in text


def test_a_paused_source_is_counted_as_throttled(env3: Env) -> None:
    for _ in range(4):
        env3.client.get(PATHS[0], headers=_wrong())
    assert env3.pipeline.metrics.get("edgewise_auth_failures_total", reason="throttled") == 1
