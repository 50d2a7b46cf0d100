"""Registry fixes from hunt s37: a rollout read which devices its target reaches before its
write transaction (a group change in between had an older version signed to a device running
a newer one); `registry new-key` stopped between its two files left a key refused as
"mismatch"; lone surrogates in a name or version were a 500 and tracebacks; a refused publish
left its blob for good; a fresh registry.sqlite under the same key restarted the release
counter at 1; the rollout schema in OpenAPI was a doctest, with no bounds nor 200 schemas."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgewise.registry as registry_module
from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.registry import KEY_FILE, PUBLIC_KEY_FILE, Registry, verify
from edgewise.security import Security
from tests.server.conftest import Env, build_env

load_commands()


def _cli(*args: object):
    return CliRunner(mix_stderr=False).invoke(app, [str(a) for a in args])


@pytest.fixture
def env(data_dir: Path) -> Iterator[Env]:
    """An app with one device 'pump-1' and a token of each role."""
    yield from build_env(data_dir)


# -- 1. the reach of a rollout is read inside the transaction that signs it --------------------

def _pump7_runs_2(data_dir: Path) -> Registry:
    """pump-7 registered in no group, and offered ewz 2.0.0 (release 1, to device:pump-7);
    ewz 1.0.0 published before it."""
    sec = Security(data_dir)
    sec.add_device("pump-7")
    sec.close()
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"old model", format="pickle")
    reg.publish("ewz", "2.0.0", b"new model", format="pickle")
    reg.rollout("ewz", "2.0.0", "device:pump-7")
    return reg


def test_a_group_change_just_before_the_signing_transaction_is_checked(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a group change committed (by another process's connections) between the start
    of a rollout and its write transaction, where it read the reach before, is seen: the
    plain release of the older 1.0.0 to group:line-a, which pump-7 (running 2.0.0) joined
    meanwhile, is refused (it was signed, and pump-7's agent accepted the downgrade)."""
    reg = _pump7_runs_2(data_dir)
    armed = {"on": True}
    original = Registry._write_tx

    @contextmanager
    def change_groups_first(self: Registry) -> Iterator[None]:
        if armed["on"] and self is reg:
            armed["on"] = False
            other = Security(data_dir)  # `edgewise device groups pump-7 line-a`, elsewhere
            try:
                assert other.set_device_groups("pump-7", ["line-a"]) == ["line-a"]
            finally:
                other.close()
        with original(self):
            yield

    monkeypatch.setattr(Registry, "_write_tx", change_groups_first)
    with pytest.raises(InvalidParameterError) as exc:
        reg.rollout("ewz", "1.0.0", "group:line-a")
    assert not armed["on"], "the hook never ran"
    msg = str(exc.value)
    assert exc.value.field == "kind" and "older than '2.0.0'" in msg, msg
    assert "device 'pump-7'" in msg and "--rollback" in msg, msg
    assert [r.release for r in reg.releases()] == [1]  # nothing signed, no counter spent
    rel = reg.current("pump-7", ["line-a"], formats=["pickle"])
    assert (rel.release, rel.version) == (1, "2.0.0")


def test_a_group_change_waiting_on_a_rollout_neither_deadlocks_nor_slips_through(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a group change that holds the credentials' write lock and waits for the
    registry's while a rollout reads the groups inside its transaction: the rollout does not
    wait for that lock (it took seconds, and the group change failed as 'database is
    locked'), signs against the groups before the change, and the change is then checked
    against that release and refused."""
    reg = _pump7_runs_2(data_dir)
    entered = threading.Event()
    original_change = Registry.group_change
    original_reach = Registry._reach
    outcome: dict[str, object] = {}

    @contextmanager
    def spy(self: Registry, *args: object, **kw: object) -> Iterator[None]:
        entered.set()  # the credentials' write lock is held here
        with original_change(self, *args, **kw):
            yield

    def change_meanwhile() -> None:
        other = Security(data_dir)
        try:
            outcome["groups"] = other.set_device_groups("pump-7", ["line-a"])
        except Exception as e:  # the test looks at which
            outcome["error"] = e
        finally:
            other.close()

    def reach(self: Registry, target: str) -> dict[str, list[str]]:
        if self is reg and "thread" not in outcome:
            thread = threading.Thread(target=change_meanwhile)
            outcome["thread"] = thread
            thread.start()
            assert entered.wait(10)
            time.sleep(0.2)  # now waiting for the registry's write lock
        return original_reach(self, target)

    monkeypatch.setattr(Registry, "group_change", spy)
    monkeypatch.setattr(Registry, "_reach", reach)
    start = time.monotonic()
    signed = reg.rollout("ewz", "1.0.0", "group:line-a")
    took = time.monotonic() - start
    thread = outcome["thread"]
    assert isinstance(thread, threading.Thread)
    thread.join(60)
    assert took < 5, took
    assert signed.manifest.release == 2
    error = outcome.get("error")
    assert isinstance(error, InvalidParameterError), outcome
    assert "release 2 of 'ewz', version '1.0.0'" in str(error), error
    sec = Security(data_dir)
    try:
        assert sec.device_groups("pump-7") == []
    finally:
        sec.close()


def test_reach_reads_the_groups_of_every_device_from_the_credentials(data_dir: Path) -> None:
    """Check the reach read from security.sqlite (a read-only connection) names each device
    with its groups, one in none included, and none while the file does not exist."""
    reg = Registry(data_dir)
    assert reg._reach("group:a") == {"group:a": []}
    sec = Security(data_dir)
    sec.add_device("p7", groups=["a", "b"])
    sec.add_device("p8")
    sec.close()
    assert reg._groups_of_devices() == {"p7": {"a", "b"}, "p8": set()}
    assert reg._reach("group:b") == {"group:b": [], "device:p7": ["p7"], "group:a": ["p7"]}
    assert reg._reach("device:p8") == {"device:p8": []}


# -- 5. new-key stopped between its two files -----------------------------------------------

def _lost_key_registry(data_dir: Path) -> Registry:
    reg = Registry(data_dir)
    reg.publish("m", "1", b"x", format="pickle")
    reg.rollout("m", "1", "group:a")
    os.remove(reg.root / KEY_FILE)
    assert reg.key_state == "lost"
    return reg


@pytest.mark.parametrize("killed_in", ["_write_public_file", "create_private_once"])
def test_new_key_stopped_between_its_files_can_be_run_again(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, killed_in: str) -> None:
    """Check `registry new-key` killed while writing signing_key.pub or signing_key.pem
    leaves the key 'lost' (new-key runs again and its key signs), never 'mismatch': a new
    .pem without its .pub was refused to sign, and new-key refused as a key that is there."""
    reg = _lost_key_registry(data_dir)

    def killed(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt(f"killed in {killed_in}")

    monkeypatch.setattr(registry_module, killed_in, killed)
    with pytest.raises(KeyboardInterrupt):
        reg.new_key()
    monkeypatch.undo()
    reg.close()
    reg = Registry(data_dir)
    assert reg.key_state == "lost"
    r = _cli("registry", "new-key", "--data-dir", data_dir)
    assert r.exit_code == 0, r.stderr
    reg = Registry(data_dir)
    assert reg.key_state == "ok"
    signed = reg.rollout("m", "1", "group:a")
    assert signed.manifest.key_id == r.stdout.split()[0] == reg.issued_key_id


def test_new_key_writes_both_halves_of_one_key(data_dir: Path) -> None:
    """Check a new-key that runs to the end leaves the .pem and the .pub of the same key, the
    lost key's .pub kept beside them; and on a registry that never had a key it is the
    first key, as before."""
    reg = _lost_key_registry(data_dir)
    old = reg.issued_key_id
    key = reg.new_key()
    assert reg.key_state == "ok" and reg.issued_key_id == key.key_id != old
    assert (reg.root / f"signing_key.{old}.pub").exists()
    fresh = Registry(data_dir / "other")
    first = fresh.new_key()
    assert fresh.key_state == "ok" and fresh.issued_key_id == first.key_id
    assert (fresh.root / PUBLIC_KEY_FILE).exists()
    with pytest.raises(SignatureError) as exc:
        fresh.new_key()
    assert exc.value.reason == "key_exists"


# -- 6. text UTF-8 cannot encode --------------------------------------------------------------

def test_lone_surrogates_are_refused_over_rest_with_422(env: Env) -> None:
    """Check a name or version with a lone surrogate is a 422 naming the field (a 500)."""
    env.client.app.state.registry.publish("m", "1.0.0", b"x", format="pickle")
    headers = {**env.auth("operator"), "Content-Type": "application/json"}
    for field, body in (
            ("name", '{"name": "m\\ud800", "version": "1.0.0", "target": "group:a"}'),
            ("version", '{"name": "m", "version": "1\\udc00", "target": "group:a"}')):
        r = env.client.post("/v1/registry/rollouts", content=body.encode(), headers=headers)
        assert r.status_code == 422, r.text
        p = r.json()
        assert p["field"] == field and "UTF-8" in p["detail"], p


def test_cli_args_that_are_not_utf8_are_one_line_and_exit_2(data_dir: Path,
                                                           tmp_path: Path) -> None:
    """Check `registry rollout`, `publish` and `list --name` given bytes that are not UTF-8
    (Python's surrogates) refuse in one line with exit 2 (UnicodeEncodeError tracebacks)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    assert _cli("registry", "publish", "ewz", "1.0.0", model,
                "--data-dir", data_dir).exit_code == 0
    for args in (("rollout", "ewz\udcff", "1.0.0", "group:a"),
                 ("rollout", "ewz", "1.0.0\udcff", "group:a"),
                 ("publish", "ewz\udcff", "1.0.0", model),
                 ("list", "--name", "ewz\udcff")):
        r = _cli("registry", *args, "--data-dir", data_dir)
        assert r.exit_code == 2, (args, r.exception)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "UTF-8" in lines[0], (args, r.stderr)
    reg = Registry(data_dir)
    assert reg.releases() == [] and [v.version for v in reg.versions()] == ["1.0.0"]
    with pytest.raises(InvalidParameterError):
        reg.versions("ewz\udcff")
    with pytest.raises(KeyError):
        reg.version("ewz", "1.0.0\udcff")


# -- 7. a refused publish leaves no blob ------------------------------------------------------

def test_a_refused_publish_writes_no_blob(data_dir: Path) -> None:
    """Check publishing a version again with other bytes is refused before their blob is
    written (five refusals left five blobs of 5 MB); the same bytes with other metadata are
    still refused as before, their (shared) blob checked and repaired."""
    reg = Registry(data_dir)
    mv = reg.publish("ewz", "1.0.0", b"A" * 1000, format="pickle")
    for i in range(3):
        with pytest.raises(InvalidParameterError, match="already published; versions are"):
            reg.publish("ewz", "1.0.0", bytes([i]) * 10_000, format="pickle")
    blobs = reg.root / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == [mv.sha256]
    (blobs / mv.sha256).write_bytes(b"A" * 10)  # damaged on disk
    with pytest.raises(InvalidParameterError, match="the same bytes: their stored blob"):
        reg.publish("ewz", "1.0.0", b"A" * 1000, format="pickle", trained_on="NAB")
    assert reg.blob(mv.sha256) == b"A" * 1000


# -- 8. release counters survive a registry.sqlite set aside ----------------------------------

def test_a_fresh_database_under_the_same_key_continues_the_release_counter(
        data_dir: Path) -> None:
    """Check a damaged registry.sqlite moved aside (as the error advises) and a fresh one made
    goes on signing above the counters signed before (it signed release 1 again, which every
    agent that ran release 5 refused as 'rollback')."""
    reg = Registry(data_dir)
    reg.publish("ewz", "1.0.0", b"m1", format="pickle")
    for _ in range(5):
        last = reg.rollout("ewz", "1.0.0", "group:line-a")
    floor = last.manifest.release
    reg.close()
    db = data_dir / "registry" / "registry.sqlite"
    os.rename(db, db.with_name("registry.sqlite.aside"))
    reg = Registry(data_dir)
    assert reg.key_state == "ok"
    reg.publish("ewz", "2.0.0", b"m2", format="pickle")
    signed = reg.rollout("ewz", "2.0.0", "group:line-a")
    assert signed.manifest.release == floor + 1
    m = verify(signed.manifest_bytes, signed.signature, b"m2",
               trusted_keys={reg.key_id: reg.public_key_bytes}, device_id="pump-7",
               groups=["line-a"], installed_release=floor)
    assert m.version == "2.0.0"


def test_the_counter_mark_never_lowers_and_a_damaged_one_is_ignored(data_dir: Path) -> None:
    """Check the kept counter is the highest signed (a group release with a kept rollback
    order counts both), and one that holds no number leaves the database's counter."""
    reg = Registry(data_dir, device_groups=lambda: {"p8": ["a"]})
    for v in ("1", "2", "3"):
        reg.publish("m", v, v.encode(), format="pickle")
    reg.rollout("m", "2", "group:a")
    reg.rollout("m", "1", "device:p8", kind="rollback")
    s = reg.rollout("m", "3", "group:a", keep_rollbacks=True)
    assert [s.manifest.release, *(k.manifest.release for k in s.kept)] == [3, 4]
    mark = reg.root / registry_module.COUNTER_FILE
    assert mark.read_text() == "4\n"
    mark.write_text("garbage")
    assert reg.rollout("m", "3", "group:b").manifest.release == 5
    assert mark.read_text() == "5\n"
    mark.write_text("40\n")
    assert reg.rollout("m", "3", "group:b").manifest.release == 41


# -- 10. the rollout schema in OpenAPI ---------------------------------------------------------

def test_openapi_documents_the_rollout_body_and_both_200_answers(env: Env) -> None:
    """Check RolloutRequest's description is no doctest, expires_days has its bounds and a
    description, target its pattern, and the 200 answers of the device's model and of a
    rollout have a schema naming the fields the bodies carry."""
    spec = env.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    body = schemas["RolloutRequest"]
    assert ">>>" not in body["description"] and "Traceback" not in body["description"]
    days = body["properties"]["expires_days"]
    assert days["minimum"] == pytest.approx(1 / 24) and days["maximum"] == 3650
    assert days["description"]
    assert body["properties"]["target"]["pattern"].startswith("^(device|group):")
    assert all(p.get("description") for p in body["properties"].values())

    def fields(path: str, method: str) -> set[str]:
        ref = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"][
            "schema"]["$ref"]
        return set(schemas[ref.rsplit("/", 1)[1]]["properties"])

    reg = env.client.app.state.registry
    reg.publish("m", "1.0.0", b"x", format="pickle")
    r = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"),
                        json={"name": "m", "version": "1.0.0", "target": f"device:{env.device}"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == fields("/v1/registry/rollouts", "post")
    assert r.json()["kept"] == []
    r = env.client.get(f"/v1/devices/{env.device}/model", headers=env.device_headers())
    assert r.status_code == 200, r.text
    assert set(r.json()) == fields("/v1/devices/{device_id}/model", "get")
