"""Registry hunt (s46): the length of a model's name and version.

Nothing bounded them: a 2,000,000-character name was published, and each release of it
signed a 2 MB manifest that its devices were offered (2.7 MB of JSON at every update check)
and that every agent kept whole in ``current.json`` and in each ``history.json`` entry; the
listings carried it whole; a rollout of it over HTTP was a 413. Publish now takes a name of
at most :data:`MAX_NAME_BYTES` and a version of at most :data:`MAX_VERSION_BYTES` bytes of
UTF-8; a version published before there were limits still lists, rolls out and is repaired.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app as cli_app
from edgewise.cli import load_commands
from edgewise.errors import InvalidParameterError
from edgewise.registry import MAX_NAME_BYTES, MAX_VERSION_BYTES, Registry
from edgewise.security import Security
from tests.server.conftest import Env, build_env

load_commands()


@pytest.fixture
def env(data_dir: Path) -> Iterator[Env]:
    """The real app (its registry in ``data_dir``) with a device 'pump-1' and tokens."""
    yield from build_env(data_dir)


def _cli(data: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner(mix_stderr=False).invoke(cli_app, [*args, "--data-dir", str(data)])
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(("name", "version", "field", "size", "limit"), [
    ("m" * (MAX_NAME_BYTES + 1), "1.0.0", "name", MAX_NAME_BYTES + 1, MAX_NAME_BYTES),
    ("m" * 2_000_000, "1.0.0", "name", 2_000_000, MAX_NAME_BYTES),
    ("ewz", "1" * (MAX_VERSION_BYTES + 1), "version", MAX_VERSION_BYTES + 1,
     MAX_VERSION_BYTES),
    ("ewz", "é" * 33, "version", 66, MAX_VERSION_BYTES),  # 33 characters, 66 bytes
], ids=["name-129", "name-2000000", "version-65", "version-33-chars-66-bytes"])
def test_publish_refuses_an_over_long_name_or_version_and_writes_nothing(
        tmp_path: Path, name: str, version: str, field: str, size: int, limit: int) -> None:
    """Check Registry.publish refuses a name over 128 or a version over 64 bytes of UTF-8,
    naming the parameter, its length and the limit in a short message, and stores neither
    the version nor its blob; at the limits exactly it publishes."""
    reg = Registry(tmp_path)
    try:
        with pytest.raises(InvalidParameterError) as err:
            reg.publish(name, version, b"model", format="pickle")
        assert err.value.field == field
        msg = str(err.value)
        assert f"'{field}'" in msg and f"at most {limit} bytes" in msg and f"{size} bytes" in msg
        assert len(msg) < 400
        assert reg.versions() == []
        assert list((reg.root / "blobs").glob("*")) == []
        mv = reg.publish("m" * MAX_NAME_BYTES, "1" * MAX_VERSION_BYTES, b"m", format="pickle")
        assert [v.name for v in reg.versions()] == [mv.name]
    finally:
        reg.close()


def test_cli_publish_refuses_an_over_long_name_in_one_line_and_makes_nothing(
        tmp_path: Path) -> None:
    """Check `registry publish` of a 200,000-character name is one `error:` line (exit 2)
    naming the parameter, its length and the limit, and makes nothing in the data dir (no
    registry, no audit entry)."""
    data = tmp_path / "data"
    data.mkdir()
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    code, out, err = _cli(data, "registry", "publish", "m" * 200_000, "1.0.0", str(model))
    assert code == 2 and out == "", out
    assert err.count("\n") == 1 and err.startswith("error: ") and len(err) < 400, err[:500]
    assert "'name'" in err and "200000 bytes" in err and f"at most {MAX_NAME_BYTES}" in err
    assert sorted(p.name for p in data.iterdir()) == []
    # in a data dir with a registry too: nothing published, nothing audited
    assert _cli(data, "registry", "publish", "ewz", "1.0.0", str(model))[0] == 0
    code, _, err = _cli(data, "registry", "publish", "ewz", "9" * 65, str(model))
    assert code == 2 and err.count("\n") == 1 and "'version'" in err and "65 bytes" in err
    reg = Registry(data)
    sec = Security(data)
    try:
        assert [v.version for v in reg.versions()] == ["1.0.0"]
        assert [e.detail["version"] for e in sec.audit_log()
                if e.action == "model.publish"] == ["1.0.0"]
    finally:
        sec.close()
        reg.close()


def test_cli_rollout_of_an_over_long_name_is_refused_for_its_length(tmp_path: Path) -> None:
    """Check `registry rollout` of a name over the limit says the limit (one line, exit 2),
    not a 'no published version' line that echoes the whole name, and signs nothing."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    assert _cli(tmp_path, "registry", "publish", "ewz", "1.0.0", str(model))[0] == 0
    code, _, err = _cli(tmp_path, "registry", "rollout", "e" * 100_000, "1.0.0", "group:a")
    assert code == 2 and err.count("\n") == 1 and len(err) < 400, err[:300]
    assert "'name'" in err and f"at most {MAX_NAME_BYTES} bytes" in err
    reg = Registry(tmp_path)
    try:
        assert reg.releases() == []
    finally:
        reg.close()


def test_http_rollout_of_an_over_long_version_is_a_422_naming_the_field(env: Env) -> None:
    """Check POST /v1/registry/rollouts with a version over 64 bytes is a 422 whose field is
    'version' and whose detail says the length and the limit (it was a 404)."""
    r = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"), json={
        "name": "ewz", "version": "v" * 5000, "target": "group:a"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "version" and "5000 bytes" in body["detail"]
    assert f"at most {MAX_VERSION_BYTES} bytes" in body["detail"]
    assert f"{MAX_VERSION_BYTES} bytes" in body["allowed"]
    assert len(r.content) < 2000


def test_a_version_stored_before_the_limits_still_lists_rolls_out_and_repairs(
        env: Env, tmp_path: Path) -> None:
    """Check a name over the limit stored by an older registry (before there were limits)
    still lists (CLI and GET /v1/registry), rolls out (CLI and HTTP), is offered, and is
    published again with the same bytes (a damaged blob's repair), while a new version of
    that name is refused for its length."""
    data = env.settings.data_dir
    reg: Registry = env.client.app.state.registry
    reg.publish("short", "1.0.0", b"old model", format="pickle")
    long_name = "n" * 300
    db = sqlite3.connect(reg.root / "registry.sqlite")  # what an older registry stored
    with db:
        db.execute("UPDATE versions SET name = ? WHERE name = 'short'", (long_name,))
    db.close()
    assert [v.name for v in reg.versions(long_name)] == [long_name]
    code, out, _ = _cli(data, "registry", "list", "--json")
    assert code == 0 and [v["name"] for v in json.loads(out)["versions"]] == [long_name]
    listed = env.client.get("/v1/registry", headers=env.auth("viewer")).json()
    assert [v["name"] for v in listed["versions"]] == [long_name]
    code, out, err = _cli(data, "registry", "rollout", long_name, "1.0.0", "device:pump-1")
    assert code == 0, err
    r = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"), json={
        "name": long_name, "version": "1.0.0", "target": "group:a"})
    assert r.status_code == 200, r.text
    offer = env.client.get("/v1/devices/pump-1/model", headers=env.device_headers())
    assert offer.status_code == 200
    assert reg.publish(long_name, "1.0.0", b"old model", format="pickle").name == long_name
    with pytest.raises(InvalidParameterError, match="at most 128 bytes"):
        reg.publish(long_name, "2.0.0", b"new model", format="pickle")
    assert [v.version for v in reg.versions(long_name)] == ["1.0.0"]
