"""Server hunt, defect 5: a missing request body, or one that is JSON but no object, was
answered ``"detail": "Field None: Field required."`` with ``field: null``. The problem names
the body, says what it got, and that a JSON object is what each of these routes takes."""

from __future__ import annotations

import pytest

from tests.server.conftest import Env, problem

ROUTES = ["/v1/devices", "/v1/tokens", "/v1/labels", "/v1/alerts/a-1/label",
          "/v1/registry/rollouts"]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def env(module_env: Env) -> Env:
    """Every request here is refused before anything is done: one app for the module."""
    return module_env


@pytest.mark.parametrize("path", ROUTES)
def test_a_missing_body_names_the_body(env: Env, path: str) -> None:
    body = problem(env.client.post(path, headers=env.auth("admin")), 422)
    assert (body["field"], body["value"], body["allowed"]) == ("body", None, "a JSON object")
    assert body["detail"].startswith("The request body is missing; send a JSON object"), body
    assert "None" not in body["detail"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("sent", "kind"), [(b"[1, 2]", "an array"), (b"5", "a number"),
                                            (b'"pump-1"', "a string"), (b"true", "a boolean"),
                                            (b"null", "null")])
def test_a_body_that_is_no_object_says_what_it_got(env: Env, path: str, sent: bytes,
                                                   kind: str) -> None:
    body = problem(env.client.post(path, content=sent, headers={**env.auth("admin"), **JSON}),
                   422)
    assert (body["field"], body["allowed"]) == ("body", "a JSON object"), body
    assert body["detail"].startswith(f"The request body must be a JSON object; got {kind}."), \
        body
    assert body["reason"] == "invalid"


def test_a_field_missing_from_an_object_is_still_named(env: Env) -> None:
    """Check the body-level answer leaves field-level ones as they were, and a body-level
    problem no longer says 'Field None'."""
    body = problem(env.client.post("/v1/devices", json={}, headers=env.auth("admin")), 422)
    assert (body["field"], body["reason"]) == ("name", "missing_field")
    body = problem(env.client.post("/v1/devices", json=[], headers=env.auth("admin")), 422)
    assert body["field"] == "body" and "Field None" not in body["detail"]
