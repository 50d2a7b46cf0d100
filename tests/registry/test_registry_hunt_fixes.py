"""Registry fixes from a report-only hunt: mistyped --data-dir for pubkey, new-key, publish and
rollout; release expiry shown and warned about; version order by a publish counter, not the
clock; listings with both key files gone; unknown rollout body fields; blank-padded versions;
temporary blobs left by a killed publish; publish with a None field."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import time
import warnings
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

import edgewise.registry as registry_module
from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry
from edgewise.security import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes.models import make_router

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns, once, at import
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

load_commands()
#: read where used, so this file also runs (and fails) on the code before the fix
STALE_TMP_S = getattr(registry_module, "STALE_TMP_S", 15 * 60)


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 10**9))


def _cli(*args: object, env: dict[str, str | None] | None = None):
    return CliRunner(mix_stderr=False).invoke(app, [str(a) for a in args], env=env)


def _client(data_dir: Path) -> tuple[Security, Registry, TestClient]:
    sec, reg = Security(data_dir), Registry(data_dir)
    api = FastAPI()
    install_problem_handlers(api)
    api.include_router(make_router(reg, sec))
    return sec, reg, TestClient(api, raise_server_exceptions=False)


# -- 2. a mistyped --data-dir ------------------------------------------------------------------

@pytest.mark.parametrize("args", [["pubkey"], ["new-key"], ["publish", "ewz", "1.0.0", "MODEL"],
                                  ["rollout", "ewz", "1.0.0", "group:line-a"]],
                         ids=lambda a: a[0])
def test_registry_commands_refuse_a_missing_data_dir(tmp_path: Path, args: list[str]) -> None:
    """Check `registry pubkey|new-key|publish|rollout --data-dir <typo>` exit 2 with the one
    line `registry list` gives and make nothing (pubkey and new-key printed a brand-new
    signing key made in the new directory, as if it were the gateway's)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"m")
    typo = tmp_path / "ewdtaa"
    res = _cli("registry", *[model if a == "MODEL" else a for a in args], "--data-dir", typo)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr == (
        f"error: --data-dir (EDGEWISE_DATA_DIR) {str(typo)!r} does not exist; nothing is "
        "kept there yet (create it with 'edgewise serve' or 'edgewise device add', or pass "
        "the right --data-dir).\n")
    assert res.stdout == "" and not typo.exists()


def test_the_readme_flow_still_works(tmp_path: Path) -> None:
    """Check the README's order (the data dir made by `device add` / `serve`, then pubkey,
    publish, rollout, list) still works end to end on a new data directory."""
    d = tmp_path / "ew"
    model = tmp_path / "ewz.pkl"
    model.write_bytes(b"pickled")
    assert _cli("device", "add", "pump-7", "--data-dir", d).exit_code == 0
    key = _cli("registry", "pubkey", "--data-dir", d)
    assert key.exit_code == 0, key.stderr
    assert _cli("registry", "publish", "ewz", "1.0.0", model, "--data-dir", d).exit_code == 0
    out = _cli("registry", "rollout", "ewz", "1.0.0", "device:pump-7", "--data-dir", d)
    assert out.exit_code == 0, out.stderr
    assert out.stdout.startswith("release 1: ewz 1.0.0 -> device:pump-7 (release), key "
                                 f"{key.stdout.split()[0]}")
    listed = _cli("registry", "list", "--data-dir", d)
    assert "release 1: ewz 1.0.0 -> device:pump-7 (release)  expires " in listed.stdout


def test_the_first_publish_on_a_fresh_install_makes_the_default_data_dir(
        tmp_path: Path) -> None:
    """Check `registry publish` with no --data-dir (and no EDGEWISE_DATA_DIR) on a fresh
    install still makes the default data directory and publishes there."""
    model = tmp_path / "ewz.pkl"
    model.write_bytes(b"pickled")
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "EDGEWISE_DATA_DIR": None}
    res = _cli("registry", "publish", "ewz", "1.0.0", model, env=env)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("published ewz 1.0.0 (7 B")
    assert [v.version for v in Registry(tmp_path / "xdg" / "edgewise").versions()] == ["1.0.0"]


# -- 3. expiry ---------------------------------------------------------------------------------

def _expired_release(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """ewz 1.0.0 to group:line-a signed two hours ago for one hour (so expired), then 1.0.0
    to device:pump-1 for 30 days."""
    reg.publish("ewz", "1.0.0", b"model", format="pickle")
    real = time.time_ns
    monkeypatch.setattr(registry_module.time, "time_ns", lambda: real() - 2 * 3600 * 10**9)
    reg.rollout("ewz", "1.0.0", "group:line-a", expires_in_s=3600)
    monkeypatch.setattr(registry_module.time, "time_ns", real)
    reg.rollout("ewz", "1.0.0", "device:pump-1")


def test_listings_show_expiry_and_mark_an_expired_release(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check GET /v1/registry and `registry list` (text and --json) give each release its
    expiry (RFC 3339) and whether it expired, and the text names the rollout to re-run
    (there was no expiry anywhere; a device joining the group was offered the expired one)."""
    sec, reg, client = _client(data_dir)
    sec.add_device("pump-1")
    _expired_release(reg, monkeypatch)
    exp = [_rfc3339(r.expires_ns) for r in reg.releases()]
    tok = sec.create_token("viewer", "v")
    body = client.get("/v1/registry", headers={"Authorization": f"Bearer {tok}"}).json()
    assert body["releases"] == [
        {"release": 1, "name": "ewz", "version": "1.0.0", "target": "group:line-a",
         "kind": "release", "expires": exp[0], "expired": True},
        {"release": 2, "name": "ewz", "version": "1.0.0", "target": "device:pump-1",
         "kind": "release", "expires": exp[1], "expired": False}]
    listed = json.loads(_cli("registry", "list", "--json", "--data-dir", data_dir).stdout)
    assert listed["releases"] == body["releases"]
    text = _cli("registry", "list", "--data-dir", data_dir).stdout
    assert (f"release 1: ewz 1.0.0 -> group:line-a (release)  EXPIRED {exp[0]} (devices "
            "refuse it; sign it again: edgewise registry rollout ewz 1.0.0 group:line-a)"
            ) in text
    assert f"release 2: ewz 1.0.0 -> device:pump-1 (release)  expires {exp[1]}\n" in text


def test_gateway_start_warns_of_each_expired_release_still_offered(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Check the gateway's start (Registry.ensure_key, which create_app runs) logs one warning
    per expired release devices are still offered, naming the rollout that signs it again,
    and re-signs nothing."""
    reg = Registry(data_dir)
    _expired_release(reg, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="edgewise.registry"):
        reg.ensure_key()
    warned = [r.getMessage() for r in caplog.records if "expired at" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith("registry: release 1 (ewz 1.0.0 -> group:line-a, release) "
                                "expired at ")
    assert warned[0].endswith("sign it again with: edgewise registry rollout ewz 1.0.0 "
                              "group:line-a")
    assert [r.release for r in reg.releases()] == [1, 2]


# -- 4. version order --------------------------------------------------------------------------

def test_a_clock_stepped_back_does_not_make_a_newer_version_older(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check 2.0.0 published after 1.0.0 while the host's clock is an hour behind is still
    the newer one: listed after it and rolled out as a plain release (it was refused as a
    downgrade and had to be signed as a rollback order)."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"v1", format="pickle")
    reg.rollout("ewz", "1.0.0", "group:line-a")
    real = time.time_ns
    monkeypatch.setattr(registry_module.time, "time_ns", lambda: real() - 3600 * 10**9)
    reg.publish("ewz", "2.0.0", b"v2", format="pickle")
    monkeypatch.setattr(registry_module.time, "time_ns", real)
    assert [(v.version, v.seq) for v in reg.versions("ewz")] == [("1.0.0", 1), ("2.0.0", 2)]
    assert reg.rollout("ewz", "2.0.0", "group:line-a").manifest.kind == "release"
    with pytest.raises(InvalidParameterError, match="roll it out with --rollback"):
        reg.rollout("ewz", "1.0.0", "group:line-a")


_OLD_SCHEMA = """
CREATE TABLE versions (
  name TEXT NOT NULL, version TEXT NOT NULL, format TEXT NOT NULL, sha256 TEXT NOT NULL,
  size INTEGER NOT NULL, trained_on TEXT NOT NULL, metrics TEXT NOT NULL,
  created_ns INTEGER NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE releases (
  release INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, target TEXT NOT NULL,
  kind TEXT NOT NULL, created_ns INTEGER NOT NULL, manifest BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE withdrawn (
  release INTEGER PRIMARY KEY, key_id TEXT NOT NULL, withdrawn_ns INTEGER NOT NULL);
"""


def test_a_registry_from_before_the_publish_counter_keeps_its_order(data_dir: Path) -> None:
    """Check a registry.sqlite made before versions had a publish counter opens with its
    versions numbered in their old order (created_ns, then insertion order for equal times),
    and the next publish comes after all of them."""
    root = data_dir / "registry"
    root.mkdir()
    db = sqlite3.connect(root / "registry.sqlite")
    db.executescript(_OLD_SCHEMA)
    for name, version, created in (("ewz", "1.1.0", 200), ("ewz", "1.0.0", 100),
                                   ("clik", "0.1", 200)):
        db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                   (name, version, "pickle", "0" * 64, 1, "", "{}", created))
    db.commit()
    db.close()
    reg = Registry(data_dir)
    assert [(v.name, v.version, v.seq) for v in reg.versions()] == [
        ("ewz", "1.0.0", 1), ("ewz", "1.1.0", 2), ("clik", "0.1", 3)]
    assert reg.publish("ewz", "1.2.0", b"x", format="pickle").seq == 4
    reg.close()
    assert [v.seq for v in Registry(data_dir).versions("ewz")] == [1, 2, 4]


# -- 5. both key files gone --------------------------------------------------------------------

def test_listings_work_and_say_lost_when_both_key_files_are_gone(data_dir: Path) -> None:
    """Check GET /v1/registry answers 200 and `registry list` exits 0 with the issued key's id
    and state 'lost' when signing_key.pem and signing_key.pub are both gone (500 and exit 1:
    the key id was read from a key file)."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"m", format="pickle")
    kid = reg.rollout("ewz", "1.0.0", "group:line-a").manifest.key_id
    (data_dir / "registry" / "signing_key.pem").unlink()
    (data_dir / "registry" / "signing_key.pub").unlink()
    sec, _, client = _client(data_dir)
    tok = sec.create_token("viewer", "v")
    r = client.get("/v1/registry", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    assert (r.json()["key_id"], r.json()["key_state"]) == (kid, "lost")
    res = _cli("registry", "list", "--data-dir", data_dir)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(f"signing key {kid}: LOST (signing_key.pem is gone")
    listed = json.loads(_cli("registry", "list", "--json", "--data-dir", data_dir).stdout)
    assert (listed["key_id"], listed["key_state"]) == (kid, "lost")
    assert not (data_dir / "registry" / "signing_key.pem").exists()


# -- 6. unknown body fields --------------------------------------------------------------------

def test_a_rollout_body_with_an_unknown_field_is_refused_naming_it(data_dir: Path) -> None:
    """Check POST /v1/registry/rollouts with 'expire_days' (a typo of expires_days) answers 422
    naming the field and signs nothing (it signed a 30-day manifest)."""
    sec, reg, client = _client(data_dir)
    sec.add_device("pump-1")
    reg.publish("ewz", "1.0.0", b"m", format="pickle")
    op = {"Authorization": f"Bearer {sec.create_token('operator', 'op')}"}
    r = client.post("/v1/registry/rollouts", headers=op, json={
        "name": "ewz", "version": "1.0.0", "target": "device:pump-1", "expire_days": 0.05})
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["value"]) == ("expire_days", 0.05)
    assert reg.releases() == []


# -- 7. blank-padded names and versions --------------------------------------------------------

@pytest.mark.parametrize(("name", "version"), [("ewz", "1.0.0 "), ("ewz", "1.0.0\n"),
                                               ("ewz", " 1.0.0"), ("ewz\t", "1.0.0"),
                                               ("ewz", "1.0\x00.0")])
def test_publish_refuses_blanks_at_either_end_and_control_characters(
        data_dir: Path, name: str, version: str) -> None:
    """Check a name or version with a blank at either end or a control character is refused,
    naming the value (they published as versions apart from '1.0.0' that list alike), and
    nothing is stored."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"good", format="pickle")
    with pytest.raises(InvalidParameterError) as err:
        reg.publish(name, version, b"other", format="pickle")
    bad = name if name != "ewz" else version
    assert f"Got {bad!r} instead." in str(err.value)
    assert err.value.field == ("name" if name != "ewz" else "version")
    assert [(v.name, v.version) for v in reg.versions()] == [("ewz", "1.0.0")]


def test_cli_publish_of_a_padded_version_fails_in_one_line(data_dir: Path) -> None:
    """Check `registry publish ewz '1.0.0 '` exits 2 with one line naming the value."""
    model = data_dir / "m.pkl"
    model.write_bytes(b"other")
    res = _cli("registry", "publish", "ewz", "1.0.0 ", model, "--data-dir", data_dir)
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "Got '1.0.0 ' instead." in res.stderr


# -- 8. temporary blobs of a killed publish ----------------------------------------------------

def test_opening_a_registry_removes_stale_temporary_blobs_only(data_dir: Path) -> None:
    """Check a temporary blob file older than STALE_TMP_S (left by a publish killed while
    writing: it stayed for good) is removed when a registry is opened, and a fresh one (a
    publish writing now) is kept, as are the stored blobs."""
    reg = Registry(data_dir)
    mv = reg.publish("ewz", "1.0.0", b"m" * 1000, format="pickle")
    reg.close()
    blobs = data_dir / "registry" / "blobs"
    stale = blobs / f".{mv.sha256}.abc123.tmp"
    fresh = blobs / f".{mv.sha256}.def456.tmp"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"x" * 10)
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    reg = Registry(data_dir)
    assert sorted(p.name for p in blobs.iterdir()) == sorted([mv.sha256, fresh.name])
    assert reg.blob(mv.sha256) == b"m" * 1000


# -- 9. a None field ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "field"), [({"format": "pickle", "trained_on": None},
                                            "trained_on"),
                                           ({"format": None}, "format")])
def test_publish_with_a_none_field_is_refused_naming_it(data_dir: Path, kw: dict[str, object],
                                                        field: str) -> None:
    """Check publish(trained_on=None) or format=None is refused naming that field and leaves
    no blob (it answered a KeyError about a missing version, as 'already published')."""
    reg = Registry(data_dir)
    with pytest.raises(InvalidParameterError) as err:
        reg.publish("ewz", "1.0.0", b"model", **kw)  # type: ignore[arg-type]
    assert err.value.field == field and "Got None instead." in str(err.value)
    assert list((data_dir / "registry" / "blobs").iterdir()) == []
    assert reg.versions() == []
    reg.publish("ewz", "1.0.0", b"model", format="pickle")
    with pytest.raises(InvalidParameterError, match="is already published"):
        reg.publish("ewz", "1.0.0", b"other", format="pickle")


def test_envelope_of_the_fixed_listing_is_base64_json(data_dir: Path) -> None:
    """Check the manifest a device gets is still canonical JSON with the expiry the listing
    shows (the listing reads it from the signed manifest)."""
    sec, reg, client = _client(data_dir)
    _, secret = sec.add_device("pump-1")
    reg.publish("ewz", "1.0.0", b"m", format="pickle")
    reg.rollout("ewz", "1.0.0", "device:pump-1")
    env = client.get("/v1/devices/pump-1/model",
                     headers={"Authorization": f"Bearer {secret}"}).json()
    m = json.loads(base64.b64decode(env["manifest"]))
    assert _rfc3339(m["expires_ns"]) == reg.releases()[0].listing()["expires"]
