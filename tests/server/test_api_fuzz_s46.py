"""Spec-driven fuzzing of every operation in the app's own ``/openapi.json``.

For each documented operation, requests are generated (with an admin and with a viewer
token) whose path and query parameters and JSON bodies are odd but plausible: empty
strings, huge and negative numbers, ``NaN``/``inf`` as text, unicode and percent-encoded
ids, very long ids, wrong types, missing and unknown fields, times far in the past and
future, ranges that end before they start. Every answer must be

* no 5xx;
* a status the operation documents;
* for a 4xx, the app's problem+json (a 422 naming the field that was wrong);
* for a 2xx, a body of a content type the spec declares, valid against its schema.

The examples are derandomized (a fixed sequence) and bounded, so the test cannot flake and
runs in well under a minute. The regression tests below it pin what it found.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewise.store.base import Alert
from tests.server.conftest import PROBLEM_KEYS, Env, build_env, problem

S = 10**9

#: Text that is odd but plausible wherever the API takes text (an id, a time, a duration).
ODD_TEXT = [
    "", " ", "0", "-1", "1", "00", "1e309", "-1e309", "1e-400", "NaN", "nan", "inf", "-inf",
    "Infinity", "+inf", "9" * 30, "-" + "9" * 30, "18446744073709551616", "0x10", "1_000",
    "٣", "１２", "ü", "pump-1", "PUMP-1", "pump-1 ", "%00", "%2F", "%25", "a/b", "..", ".",
    "x" * 3000, "\x00", "a\x00b", "\u202e", "😀", "a\tb", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "2262-04-12T00:00:00Z", "2024-02-30T00:00:00Z",
    "2024-01-31T12:00:00", "2024-01-31", "true", "null", "[]", "{}", "' OR 1=1 --", "%", "-0",
    "1.5", "5m", "-5m", "0s", "1d", "99999999999d", "1e3s", "open", "anomaly", "mix", "wide",
    "epoch_s", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd", "1:abc", "abc:def",
    "9" * 5000 + ":" + "a" * 64, f"{2**63}:" + "a" * 64,
]

#: JSON values that are odd but plausible where a body field goes.
ODD_JSON: list[Any] = [
    None, "", " ", 0, -1, 1, 1.5, 10**30, -(10**30), 1e308, -1e308, True, False, [], {},
    ["x"], {"a": 1}, "NaN", "inf", "x" * 3000, "😀", "\u0000", "pump-1", "a\nb",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-01-01T00:00:00Z", 2**63, -(2**63),
    "admin", "viewer", "true_alarm", "anomaly", "device:pump-1", "group:g", "device:ghost",
    float("nan"), float("inf"), -0.0, "\ud800", "a\x00b", "pump-1\x00",
]

#: What a paging cursor may hold: the scalars of a listing key, some no key can have.
CURSOR_ITEMS = st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 10**30, 1.5, True, None, "", "a",
                                "pump-1", "\ud800", "a\x00", "x" * 300, [], {}])


#: Text no id can hold (a NUL, lone surrogates): an id the store must never be asked about.
HOSTILE_TEXT = ["\x00", "a\x00b", "\ud800", "x\udfff"]

#: A cursor shaped like a listing key (alerts: [start, created, id]; labels: [device,
#: start, end, version] or [version]) with odd items, and any list of odd items.
CURSORS = st.one_of(
    st.tuples(st.sampled_from([0, 1, 2**62]), st.sampled_from([0, 5]),
              st.sampled_from(["x", *HOSTILE_TEXT])).map(list),
    st.tuples(st.sampled_from(["pump-1", *HOSTILE_TEXT]), st.just(1), st.just(2),
              st.just(3)).map(list),
    st.lists(CURSOR_ITEMS, min_size=0, max_size=5))


def _cursor(items: list[Any]) -> str:
    raw = json.dumps(items).encode()  # escapes a surrogate, as a client's JSON may
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _ops(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def _spec() -> dict[str, Any]:
    """The app's own /openapi.json (read at collection, to make one test per operation)."""
    with tempfile.TemporaryDirectory() as tmp:
        gen = build_env(Path(tmp))
        env = next(gen)
        try:
            return env.client.get("/openapi.json").json()
        finally:
            gen.close()


SPEC = _spec()
OPS = _ops(SPEC)


def _seed(env: Env) -> dict[str, str]:
    """Readings, an alert and a label, so the reading routes have something to answer."""
    now = time.time()
    for i in range(40):
        env.send({"ts": now - 400 + i * 10, "seq": i + 1,
                  "metrics": {"rpm": 1000.0 + i % 7, "temp": 20.0 + i % 3}})
    t0 = int((now - 300) * S)
    alert = env.store.add_alert(Alert(env.device, t0, t0 + 5 * S, 0.9, drivers={"rpm": 1.0}))
    env.client.post("/v1/labels", headers=env.auth("operator"), json={
        "device_id": env.device, "start": t0 // S, "end": t0 // S + 10, "label": "anomaly"})
    return {"alert": alert.id}


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, dict[str, str]]]:
    gen = build_env(tmp_path_factory.mktemp("ewfuzz"))
    env = next(gen)
    try:
        yield env, _seed(env)
    finally:
        gen.close()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _good(name: str, known: dict[str, str], env: Env) -> str:
    """A path parameter's value that names what the seeded app holds."""
    return {"device_id": env.device, "alert_id": known["alert"], "metric": "rpm",
            "sha256": "0" * 64}.get(name, "x")


def _path_value(name: str, known: dict[str, str], env: Env) -> st.SearchStrategy[str]:
    return st.one_of(st.just(_good(name, known, env)), st.sampled_from(ODD_TEXT),
                     st.text(min_size=0, max_size=12))


def _query_value(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    kinds = {s.get("type") for s in schema.get("anyOf", [schema])}
    odd = [st.sampled_from(ODD_TEXT), st.text(max_size=8)]
    if "integer" in kinds:
        odd += [st.integers(-(2**70), 2**70).map(str),
                st.integers(-3, 400).map(str)]
    if "boolean" in kinds:
        odd.append(st.sampled_from(["true", "false", "1", "0", "yes", "2", "TRUE"]))
    if "enum" in schema:
        odd.append(st.sampled_from(schema["enum"]))
    return st.one_of(odd)


def _body(op: dict[str, Any], env: Env) -> tuple[st.SearchStrategy[Any], Any]:
    """Odd bodies of ``op`` (a good one with a field left out, set odd or added; or no
    object at all), and the good one."""
    content = op["requestBody"]["content"]
    schema = _resolve(content[next(iter(content))]["schema"])
    props = schema.get("properties", {})
    valid = {
        "NewDevice": {"name": "fz", "groups": ["g"]},
        "LabelIn": {"device_id": env.device, "start": "2024-01-01T00:00:00Z",
                    "end": "2024-01-01T01:00:00Z", "label": "anomaly"},
        "LabelBody": {"label": "true_alarm", "note": "n"},
        "NewToken": {"role": "viewer", "name": "fz"},
        "RolloutRequest": {"name": "m", "version": "1", "target": f"device:{env.device}"},
    }.get(schema.get("title", ""), {})
    if not valid:  # telemetry: the device's own body
        valid = {"ts": time.time(), "metrics": {"rpm": 1.0}}
        props = {"ts": {}, "metrics": {}, "seq": {}}

    def mutate(draw_field: str, how: str, odd: Any) -> Any:
        body = dict(valid)
        if how == "drop":
            body.pop(draw_field, None)
        elif how == "set":
            body[draw_field] = odd
        elif how == "extra":
            body["unknown_" + draw_field] = odd
        return body

    fields = sorted(props) or ["x"]
    bodies = st.builds(mutate, st.sampled_from(fields),
                       st.sampled_from(["drop", "set", "set", "extra", "keep"]),
                       st.one_of(st.sampled_from(ODD_JSON), st.sampled_from(HOSTILE_TEXT)))
    return st.one_of(bodies, bodies, st.sampled_from(ODD_JSON), st.just(valid)), valid


def _request(op: dict[str, Any], path: str, env: Env, known: dict[str, str]
             ) -> st.SearchStrategy[dict[str, Any]]:
    path_params = [p for p in op.get("parameters", []) if p["in"] == "path"]
    query_params = [p for p in op.get("parameters", []) if p["in"] == "query"]
    cursors = st.one_of(CURSORS.map(_cursor), st.sampled_from(ODD_TEXT))

    targets = [p["name"] for p in path_params + query_params] + (
        ["body"] if "requestBody" in op else [])

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        # one odd input, the others good or left out (so no other input is refused first),
        # or several odd inputs at once
        target = draw(st.sampled_from(targets)) if targets and draw(st.booleans()) else None
        url = path
        rerouted = False
        for p in path_params:
            value = draw(_path_value(p["name"], known, env)) if target in (None, p["name"]) \
                else _good(p["name"], known, env)
            encode = draw(st.booleans())
            # what the server decodes: httpx (the TestClient) turns a '%25' it is sent back
            # into '%', so '%2F' fully encoded still arrives as a '/'
            rerouted |= any(seen in ("", ".", "..") or "/" in seen
                            for seen in (value, unquote(value)))
            url = url.replace("{" + p["name"] + "}", quote(value, safe="") if encode
                              else quote(value, safe="/%"))
        query: list[tuple[str, str]] = []
        for p in query_params:
            if target not in (None, p["name"]) or (target is None and draw(st.booleans())):
                continue
            query.append((p["name"], draw(cursors if p["name"] == "cursor"
                                          else _query_value(p["schema"]))))
        extra = draw(st.integers(0, 9)) if target is None else -1
        if extra == 0 and query_params:  # a parameter twice
            p = draw(st.sampled_from(query_params))
            query.append((p["name"], draw(_query_value(p["schema"]))))
        elif extra == 1:
            query.append((draw(st.sampled_from(["limti", "x", "", "start[]"])), "1"))
        body = None
        if "requestBody" in op:
            odd, valid = _body(op, env)
            body = draw(odd) if target in (None, "body") else valid
        role = draw(st.sampled_from(["admin", "admin", "viewer"]))
        return {"url": url, "query": query, "body": body, "role": role, "rerouted": rerouted}

    return build()


#: What a 422 may name besides a parameter or a body key: the body itself, the payload, or
#: the fleet (GET /v1/fleet/groups with fewer than 2 devices to group)
FIELD_OK = {"body", "payload", "devices"}

_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def _check(method: str, path: str, op: dict[str, Any], req: dict[str, Any], resp: Any) -> None:
    where = (f"{method} {req['url']} {req['query']} body={str(req['body'])[:200]} "
             f"as {req['role']}: {resp.status_code} {resp.text[:400]}")
    assert resp.status_code < 500, where
    if req["rerouted"]:  # an id '', '.' or with a '/' (%2F too): the path is another's, or none
        assert resp.status_code < 300 or resp.headers["content-type"].startswith(
            "application/problem+json"), where
        return
    documented = op["responses"]
    assert str(resp.status_code) in documented, f"undocumented status: {where}"
    ctype = resp.headers.get("content-type", "").split(";")[0].strip()
    if resp.status_code >= 400:
        assert ctype == "application/problem+json", where
        body = resp.json()
        assert PROBLEM_KEYS <= body.keys(), where
        assert body["status"] == resp.status_code, where
        if resp.status_code == 422:
            field = body["field"]
            assert isinstance(field, str), f"422 names no field: {where}"
            names = {p["name"] for p in op.get("parameters", [])} | {k for k, _ in req["query"]}
            if isinstance(req["body"], dict):
                names |= set(req["body"])
            if "requestBody" in op:
                content = op["requestBody"]["content"]
                names |= set(_resolve(content[next(iter(content))]["schema"]).get(
                    "properties", {}))
            head = field.split(".")[0]
            assert field in names or head in names or head in FIELD_OK, \
                f"422 names {field!r}: {where}"
        return
    content = documented[str(resp.status_code)].get("content")
    if resp.status_code == 204 or not content:
        assert not resp.content, where
        return
    assert ctype in content, f"content type {ctype!r} not in {list(content)}: {where}"
    schema = content[ctype].get("schema")
    if ctype.endswith("json") and schema:
        key = f"{method} {path} {resp.status_code} {ctype}"
        if key not in _VALIDATORS:
            root = {**schema, "components": SPEC["components"]}
            _VALIDATORS[key] = jsonschema.Draft202012Validator(root)
        errors = list(_VALIDATORS[key].iter_errors(resp.json()))
        assert not errors, f"{errors[0].message[:300]} at {list(errors[0].path)}: {where}"


def _send(env: Env, method: str, req: dict[str, Any]) -> Any:
    headers = {**env.auth(req["role"])}
    kw: dict[str, Any] = {}
    if req["body"] is not None or method in ("POST", "PUT", "PATCH"):
        kw["content"] = json.dumps(req["body"]).encode()
        headers["Content-Type"] = "application/json"
    if "/telemetry" in req["url"]:
        headers = {**env.device_headers(), **({"Content-Type": "application/json"}
                                               if "content" in kw else {})}
    return env.client.request(method, req["url"], params=req["query"], headers=headers, **kw)


@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in OPS])
def test_every_operation_answers_within_its_spec(fuzz_env: tuple[Env, dict[str, str]],
                                                method: str, path: str) -> None:
    env, known = fuzz_env
    op = SPEC["paths"][path][method.lower()]

    @settings(max_examples=60, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(req=_request(op, path, env, known))
    def run(req: dict[str, Any]) -> None:
        if method in ("DELETE", "POST") and "{device_id}" in path and not path.endswith(
                "telemetry") and req["url"].split("/")[3] in (env.device, quote(env.device)):
            return  # deleting the seeded device, or a new secret for it, spoils the others
        _check(method, path, op, req, _send(env, method, req))

    run()


# --- What the fuzzer found -------------------------------------------------------------


def test_a_label_cursor_holding_a_lone_surrogate_or_nul_is_a_422(module_env: Env) -> None:
    """A cursor is base64url JSON a client can forge: one whose device id is a lone
    surrogate reached the label store's query and failed there (500, UnicodeEncodeError);
    one with a NUL was quietly an empty page. Both are a 422 naming 'cursor' now."""
    env = module_env
    for device in ("\ud800", "a\x00"):
        cursor = _cursor([device, 1, 2, 3])
        r = env.client.get("/v1/labels", params={"cursor": cursor}, headers=env.auth("viewer"))
        body = problem(r, 422)
        assert (body["field"], body["reason"], body["value"]) == ("cursor", "bad_cursor", cursor)
    # a cursor the API gave still pages
    r = env.client.get("/v1/labels", params={"cursor": _cursor(["pump-1", 1, 2, 3])},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text


def test_an_alert_cursor_holding_an_id_no_alert_can_have_is_a_422_not_a_503(
        module_env: Env) -> None:
    """An alert id with a NUL or a lone surrogate in a forged cursor went to the store,
    which refused it: a 503 "Store unavailable", telling the client to retry a request
    that can never succeed. It is the 422 'bad_cursor' of any other forged cursor now."""
    env = module_env
    for alert_id in ("a\x00", "\ud800"):
        cursor = _cursor([1, 2, alert_id])
        r = env.client.get("/v1/alerts", params={"cursor": cursor}, headers=env.auth("viewer"))
        body = problem(r, 422)
        assert (body["field"], body["reason"]) == ("cursor", "bad_cursor")
    r = env.client.get("/v1/alerts", params={"cursor": _cursor([1, 2, "x"])},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text


def test_a_device_name_with_a_nul_is_a_422_naming_name(env: Env) -> None:
    """POST /v1/devices asked the store about the name before checking it: a NUL in it was
    a 503 "Store unavailable" (has_device_data refused it). It is the 422 'bad_device' of
    any other name that is no device id, naming 'name', and nothing is registered."""
    for name in ("\x00", "pump\x00-9"):
        r = env.client.post("/v1/devices", content=json.dumps({"name": name}).encode(),
                            headers={**env.auth("admin"), "Content-Type": "application/json"})
        body = problem(r, 422)
        assert (body["field"], body["reason"], body["value"]) == ("name", "bad_device", name)
        assert "letters, digits" in body["allowed"]
    ids = {d["id"] for d in env.client.get("/v1/devices", headers=env.auth("admin")).json()}
    assert ids == {env.device}


@pytest.mark.parametrize("entry_id", ["9" * 5000, "9" * 4301, str(2**63)],
                         ids=["5000-digits", "4301-digits", "2**63"])
def test_an_audit_head_whose_id_no_entry_can_have_is_a_422(module_env: Env,
                                                           entry_id: str) -> None:
    """GET /v1/audit/verify?expect=ID:HASH read the id with int(): one of more than 4300
    digits raised ValueError (a 500), and one over 2**63 - 1 (no SQLite rowid) was a 200
    reporting the newest entries 'deleted' up to an entry that cannot exist."""
    env = module_env
    expect = f"{entry_id}:{'a' * 64}"
    r = env.client.get("/v1/audit/verify", params={"expect": expect}, headers=env.auth("admin"))
    body = problem(r, 422)
    assert (body["field"], body["reason"]) == ("expect", "invalid")
    assert str(2**63 - 1) in body["allowed"] and f"({len(entry_id)} digits)" in body["detail"]
    assert len(body["detail"]) < 600
    # the head verify answers is still accepted, and a malformed one still named
    head = env.client.get("/v1/audit/verify", headers=env.auth("admin")).json()["head"]
    r = env.client.get("/v1/audit/verify", params={"expect": head}, headers=env.auth("admin"))
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert problem(env.client.get("/v1/audit/verify", params={"expect": "x:y"},
                                  headers=env.auth("admin")), 422)["field"] == "expect"
