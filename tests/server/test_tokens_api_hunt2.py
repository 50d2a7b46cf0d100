"""POST /v1/tokens after API bug hunt 2: the name rules are Security.create_token's (bug 4:
one limit, 64 characters, for CLI and HTTP; bug 3: no name of a token id's form), answered
as problem+json naming the field, its value and what is allowed."""

from __future__ import annotations

from tests.server.conftest import Env, problem


def _create(env: Env, name: str):
    return env.client.post("/v1/tokens", json={"role": "admin", "name": name},
                           headers=env.auth("admin"))


def test_a_name_of_a_token_ids_form_is_422(module_env: Env) -> None:
    """Check an admin token cannot be named with a viewer token's id over HTTP either."""
    env = module_env
    viewer_id = env.security.authenticate_token(env.tokens["viewer"]).token_id
    body = problem(_create(env, viewer_id), 422)
    assert (body["field"], body["value"]) == ("name", viewer_id)
    assert "must not look like a token id" in body["detail"]
    assert "8 hex digits" in body["allowed"]
    assert [t.name for t in env.security.list_tokens()].count(viewer_id) == 0


def test_the_name_limit_is_the_same_as_the_clis(env: Env) -> None:
    assert _create(env, "n" * 64).status_code == 201
    body = problem(_create(env, "n" * 65), 422)
    assert (body["field"], body["value"]) == ("name", "n" * 65)
    assert body["detail"].startswith("The 'name' of an API token must be at most 64 "
                                     "characters. Got 65 characters")
    assert body["allowed"].startswith("at most 64 characters")


def test_the_schema_still_documents_the_limit(module_env: Env) -> None:
    env = module_env
    schema = env.client.get("/openapi.json").json()["components"]["schemas"]["NewToken"]
    assert schema["properties"]["name"]["maxLength"] == 64
