"""/openapi.json describes the errors the API really answers: problem+json, per operation.

An API fuzzer found every operation documenting its 422 as FastAPI's ``HTTPValidationError``
(``{"detail": [...]}``, application/json) while every error is application/problem+json with a
string ``detail``, and 401/403/404/409 (and the 204 of ``GET /v1/devices/{id}/model``) not
documented at all: ``DELETE /v1/devices/0`` answered 401, documented 200 and 422 only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server.conftest import PROBLEM_KEYS, Env

PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture
def spec(env: Env) -> dict[str, Any]:
    return env.client.get("/openapi.json").json()


def _operations(spec: dict[str, Any]):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def _statuses(op: dict[str, Any]) -> set[int]:
    return {int(code) for code in op["responses"] if code.isdigit()}


def test_no_operation_documents_fastapis_validation_error(spec: dict[str, Any]) -> None:
    """Check HTTPValidationError appears nowhere, and every error response of every operation
    is application/problem+json with the Problem schema, which has the keys of every body."""
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text and '"ValidationError"' not in text
    problem_schema = spec["components"]["schemas"]["Problem"]
    assert PROBLEM_KEYS <= set(problem_schema["required"]) <= set(problem_schema["properties"])
    assert problem_schema["properties"]["detail"]["type"] == "string"
    for method, path, op in _operations(spec):
        for code, resp in op["responses"].items():
            if int(code) < 400 or (path, code) == ("/healthz", "503"):
                continue
            assert list(resp["content"]) == ["application/problem+json"], (method, path, code)
            schema = resp["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": PROBLEM_REF}, (method, path, code)
            assert resp["description"], (method, path, code)


def test_each_operation_documents_the_errors_it_answers(spec: dict[str, Any]) -> None:
    """Check the statuses that follow from an operation: 401 (with WWW-Authenticate) for every
    credential, 403 for every API token, 413 for every body, 422 for every input; and those
    only some operations answer."""
    for method, path, op in _operations(spec):
        codes = _statuses(op)
        where = (method, path, sorted(codes))
        if path in ("/healthz", "/metrics"):
            assert "security" not in op and codes <= {200, 503}, where
            continue
        assert 401 in codes, where
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"], where
        if op["security"] == [{"apiToken": []}]:
            assert {403, 429} <= codes, where  # 429: a wrong device secret, paused
        if "requestBody" in op:
            assert {413, 422} <= codes, where
            # a JSON body is taken only as it is; telemetry also inflates gzip
            assert 415 in codes or path == "/v1/telemetry", where
        if op.get("parameters"):
            assert 422 in codes, where
    ops = {(m, p): _statuses(op) for m, p, op in _operations(spec)}
    expected = {
        ("delete", "/v1/devices/{device_id}"): {200, 401, 403, 404, 422, 429, 503},
        # asks the store; 415: a gzip body it cannot decode (tests/server/test_devices_data_only)
        ("post", "/v1/devices"): {201, 401, 403, 409, 413, 415, 422, 429, 503},
        ("get", "/v1/devices/{device_id}/model"): {200, 204, 401, 403, 422, 429},
        ("get", "/v1/models/{sha256}"): {200, 401, 404, 422, 429, 503},
        ("get", "/v1/registry"): {200, 401, 403, 422, 429},
        ("post", "/v1/registry/rollouts"): {200, 401, 403, 404, 409, 413, 415, 422, 429},
        ("post", "/v1/alerts/{alert_id}/label"): {200, 401, 403, 404, 409, 413, 415, 422,
                                                  429, 503},
        ("post", "/v1/telemetry"): {200, 400, 401, 413, 415, 422, 429, 503},
        ("get", "/v1/me"): {200, 401, 403, 422, 429},
    }
    for key, codes in expected.items():
        assert ops[key] == codes, (key, sorted(ops[key]))
    blob = spec["paths"]["/v1/models/{sha256}"]["get"]["responses"]["200"]
    assert list(blob["content"]) == ["application/octet-stream"]


def test_what_the_api_answers_without_credentials_is_documented(env: Env,
                                                                spec: dict[str, Any]) -> None:
    """Check each operation, called without credentials (path parameters '0', a JSON body
    '{}'), answers a status its operation documents, as the documented Problem."""
    for method, path, op in _operations(spec):
        if path in ("/healthz", "/metrics"):
            continue
        url = path.replace("{device_id}", "0").replace("{alert_id}", "0").replace(
            "{sha256}", "0").replace("{metric}", "0")
        kwargs = {"json": {}} if "requestBody" in op else {}
        resp = env.client.request(method.upper(), url, **kwargs)
        assert resp.status_code in _statuses(op), (method, path, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/problem+json", (method, path)
        assert PROBLEM_KEYS <= resp.json().keys(), (method, path)
