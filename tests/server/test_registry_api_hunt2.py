"""POST /v1/registry/rollouts after API bug hunt 2 (bug 2): every 404 and 422 names the body
field at fault, its value and what is allowed, as the README promises of problem+json.

The tests of refused rollouts share one app with 'm' 1.0.0 published (``published``); those
that publish or roll out have one of their own."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import Env, problem


def _rollout(env: Env, **body: Any) -> Any:
    full = {"name": "m", "version": "1.0.0", "target": f"device:{env.device}", **body}
    return env.client.post("/v1/registry/rollouts", json=full, headers=env.auth("operator"))


@pytest.fixture(scope="module")
def published(module_env: Env) -> Env:
    """The module's app (shared by the tests whose rollouts are refused), 'm' 1.0.0 published."""
    module_env.client.app.state.registry.publish("m", "1.0.0", b"m", format="bin")
    return module_env


@pytest.mark.parametrize("target", ["everyone", "device:", "pump-1", "site:a"])
def test_a_bad_target_is_named(published: Env, target: str) -> None:
    """Check {"target": "everyone"} no longer answers field, value and allowed null."""
    env = published
    body = problem(_rollout(env, target=target), 422)
    assert (body["field"], body["value"]) == ("target", target)
    assert body["allowed"] == "'device:<id>' or 'group:<name>'"
    assert "'device:<id>'" in body["detail"] and repr(target) in body["detail"]


def test_an_empty_name_is_named(published: Env) -> None:
    env = published
    body = problem(_rollout(env, name=" "), 422)
    assert (body["field"], body["value"]) == ("name", " ")
    assert "non-empty" in body["allowed"]


def test_an_unpublished_version_is_named_with_the_published_ones(env: Env) -> None:
    reg = env.client.app.state.registry
    reg.publish("m", "1.0.0", b"a", format="bin")
    reg.publish("m", "1.1.0", b"b", format="bin")
    body = problem(_rollout(env, version="9.9.9"), 404)
    assert (body["field"], body["value"]) == ("version", "9.9.9")
    assert body["allowed"] == "a published version of 'm': '1.0.0', '1.1.0'"


def test_an_unpublished_name_is_named(published: Env) -> None:
    env = published
    body = problem(_rollout(env, name="nope"), 404)
    assert (body["field"], body["value"]) == ("name", "nope")
    assert "published model" in body["allowed"]


def test_a_wrong_rollback_flag_is_named(env: Env) -> None:
    """Check the registry's refusals of the direction name the body's 'rollback' field."""
    reg = env.client.app.state.registry
    reg.publish("m", "1.0.0", b"old", format="bin")
    reg.publish("m", "1.1.0", b"new", format="bin")
    assert _rollout(env, version="1.1.0").status_code == 200
    down = problem(_rollout(env, version="1.0.0"), 422)  # a downgrade needs rollback: true
    assert (down["field"], down["value"]) == ("rollback", False)
    up = problem(_rollout(env, version="1.1.0", rollback=True), 422)  # no downgrade
    assert (up["field"], up["value"]) == ("rollback", True)
    assert "older" in up["allowed"]
