"""Routes pick their problem (status, title, field) from an error's type and attributes.

The devices and labels routes used to read the wording of an :class:`InvalidParameterError`
(``str(exc).startswith("Group name")``, ``"'start_ns'" in text``): a reworded message, or a
label whose text held ``'start_ns'``, named the wrong field. The raisers now say the argument
at fault in ``exc.field``; the answers stay what they were. The registry's token checks are
the shared :func:`~edgewise.server.deps.require_role`, given the router's own ``Security``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore
from edgewise.registry import Registry
from edgewise.security import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes.models import make_router
from tests.server.conftest import Env, problem

NAME_ALLOWED = "1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
ID_RULE = "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
LABEL_ALLOWED = "'normal', 'anomaly' or a fault class"
START, END = 1704067200000000000, 1704070800000000000  # the body's start and end
BODY = {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z",
        "label": "anomaly"}


@pytest.fixture
def env(module_env: Env) -> Env:
    """Every request here is refused (or only reads): one app for the module."""
    return module_env


def _raises(exc: Exception) -> Any:
    def fake(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fake


# -- the raisers say which argument is at fault ----------------------------------------------

def test_credentials_errors_name_the_argument_at_fault(data_dir: Path) -> None:
    """Check Security's refusals carry ``field`` and ``value``, and keep them when pickled."""
    sec = Security(data_dir)
    try:
        cases = [
            (lambda: sec.add_device("a/b"), "name", "a/b"),
            (lambda: sec.add_device("pump-2", groups=["ok", "a/b"]), "groups", "a/b"),
            (lambda: sec.set_device_groups("pump-2", "x y"), "groups", "x y"),
        ]
        for call, field, value in cases:
            with pytest.raises(InvalidParameterError) as info:
                call()
            assert (info.value.field, info.value.value) == (field, value), info.value
            again = pickle.loads(pickle.dumps(info.value))
            assert (again.field, again.value, str(again)) == (field, value, str(info.value))
    finally:
        sec.close()


@pytest.mark.parametrize("args, field, value", [
    (("bad dev!", 0, 10, "normal"), "device_id", "bad dev!"),
    (("pump-1", -1, 10, "normal"), "start_ns", -1),
    (("pump-1", 0, 2**63, "normal"), "end_ns", 2**63),
    (("pump-1", 10, 10, "normal"), "end_ns", 10),  # the window must end after it starts
    (("pump-1", 0, 10, "x'start_ns'"), "label", "x'start_ns'"),
])
def test_label_store_errors_name_the_argument_at_fault(
        data_dir: Path, args: tuple, field: str, value: object) -> None:
    """Check each refusal of LabelStore.add names its own argument, whatever its text says."""
    store = LabelStore(data_dir)
    try:
        with pytest.raises(InvalidParameterError) as info:
            store.add(*args)
        assert (info.value.field, info.value.value) == (field, value)
    finally:
        store.close()


# -- each branch answers as before ------------------------------------------------------------

@pytest.mark.parametrize("body, title, detail, field, value, reason", [
    ({"name": "a/b"}, "Invalid device name",
     f"Device name 'a/b' is not a valid device id: it must be {ID_RULE}.", "name", "a/b",
     "bad_device"),
    ({"name": "pump-4", "groups": ["ok", "a/b"]}, "Invalid group name",
     f"Group name 'a/b' is not valid: it must be {ID_RULE}.", "groups", "['ok', 'a/b']",
     "bad_group"),
])
def test_each_device_error_answers_its_problem(
        env: Env, body: dict, title: str, detail: str, field: str, value: object,
        reason: str) -> None:
    """Check a bad device name and a bad group name get their own 422, word for word."""
    got = problem(env.client.post("/v1/devices", json=body, headers=env.auth("admin")), 422)
    assert (got["title"], got["detail"], got["field"], got["value"], got["allowed"],
            got["reason"]) == (title, detail, field, value, NAME_ALLOWED, reason)
    assert not env.security.has_device(body["name"])


@pytest.mark.parametrize("extra, field, value, allowed", [
    ({"device_id": "bad dev!"}, "device_id", "bad dev!", "a registered device id"),
    ({"start": None, "start_ns": -1}, "start", -1, "a time from 1970 to 2262"),
    ({"end": None, "end_ns": 2**64}, "end", 2**64, "a time from 1970 to 2262, after 'start'"),
    ({"end": "2023-01-01T00:00:00Z"}, "end", 1672531200000000000,
     "a time from 1970 to 2262, after 'start'"),
    ({"label": "Bad Label!"}, "label", "Bad Label!", LABEL_ALLOWED),
    # the label's text names another field: it is still the label that is wrong
    ({"label": "x'start_ns'"}, "label", "x'start_ns'", LABEL_ALLOWED),
    ({"label": "x'end_ns' must end after it starts"}, "label",
     "x'end_ns' must end after it starts", LABEL_ALLOWED),
])
def test_each_label_error_answers_its_problem(
        env: Env, extra: dict, field: str, value: object, allowed: str) -> None:
    """Check each refused label names its own body field, value and what is allowed."""
    got = problem(env.client.post("/v1/labels", json={**BODY, **extra},
                                  headers=env.auth("operator")), 422)
    assert (got["title"], got["field"], got["value"], got["allowed"], got["reason"]) == (
        "Invalid label", field, value, allowed, "bad_label")
    assert env.client.get("/v1/labels", headers=env.auth("viewer")).json() == []


# -- the routes read the attributes, not the wording -------------------------------------------

@pytest.mark.parametrize("at_fault, title, field, value, reason", [
    ("groups", "Invalid group name", "groups", "['line-a']", "bad_group"),
    ("name", "Invalid device name", "name", "pump-4", "bad_device"),
])
def test_the_devices_route_maps_by_field_not_wording(
        env: Env, monkeypatch: pytest.MonkeyPatch, at_fault: str, title: str, field: str,
        value: object, reason: str) -> None:
    """Check a reworded refusal of Security.add_device still gets the problem of its field."""
    exc = InvalidParameterError("Reworded: no longer says which.", field=at_fault)
    monkeypatch.setattr(env.security, "add_device", _raises(exc))
    got = problem(env.client.post("/v1/devices", json={"name": "pump-4", "groups": ["line-a"]},
                                  headers=env.auth("admin")), 422)
    assert (got["title"], got["detail"], got["field"], got["value"], got["reason"]) == (
        title, "Reworded: no longer says which.", field, value, reason)


@pytest.mark.parametrize("at_fault, field, value", [
    ("device_id", "device_id", "pump-1"),
    ("start_ns", "start", START),
    ("end_ns", "end", END),
    ("label", "label", "anomaly"),
    (None, "label", "anomaly"),
])
def test_the_labels_route_maps_by_field_not_wording(
        env: Env, monkeypatch: pytest.MonkeyPatch, at_fault: str | None, field: str,
        value: object) -> None:
    """Check a reworded refusal of LabelStore.add still names the body field at fault."""
    exc = InvalidParameterError("Reworded: 'device_id' 'start_ns' 'end_ns'.", field=at_fault)
    monkeypatch.setattr(LabelStore, "add", _raises(exc))
    got = problem(env.client.post("/v1/labels", json=BODY, headers=env.auth("operator")), 422)
    assert (got["detail"], got["field"], got["value"], got["reason"]) == (
        str(exc), field, value, "bad_label")


# -- the registry's token checks are the shared dependency ------------------------------------

def test_the_registry_router_checks_tokens_with_its_own_security(env: Env) -> None:
    """Check make_router's routes answer a token's 200, 401 and 403 as the app's routes do,
    also in an app that holds no Security of its own."""
    reg = Registry(env.settings.data_dir)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(make_router(reg, env.security))
    body = {"name": "detector", "version": "1.0.0", "target": "group:all"}
    cases = [({}, 401), ({"Authorization": "Bearer ew_not-a-token"}, 401),
             (env.device_headers(), 403)]
    try:
        with TestClient(app) as bare:
            assert bare.get("/v1/registry", headers=env.auth("viewer")).status_code == 200
            for headers, status in cases:
                r = bare.get("/v1/registry", headers=headers)
                same = env.client.get("/v1/devices", headers=headers)
                assert problem(r, status) == problem(same, status)
                assert r.headers.get("www-authenticate") == same.headers.get("www-authenticate")
            low = bare.post("/v1/registry/rollouts", json=body, headers=env.auth("viewer"))
            assert problem(low, 403)["detail"] == (
                "Token 'test-viewer' has role 'viewer'; this needs 'operator' or higher.")
    finally:
        reg.close()
