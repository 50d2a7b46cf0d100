"""Defects of the model registry found by the edge/registry bug hunt (H1, M1-M3, L2, L3):
one test each, with real processes for the cross-process races."""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.registry import Registry, key_id_of, load_or_create_key, verify

MODEL = b"model bytes " * 20
_CTX = mp.get_context("spawn")  # fresh interpreters: no state shared with the test process


def _cli(data_dir: Path, *args: str):
    load_commands()
    return CliRunner(mix_stderr=False).invoke(
        app, ["registry", *args, "--data-dir", str(data_dir)])


def _first_rollout(data_dir: str, i: int, barrier) -> tuple[str, str]:
    """In a child process: wait for the others, then roll out (making the first key)."""
    reg = Registry(data_dir)
    barrier.wait()
    try:
        s = reg.rollout("m", "1.0.0", f"device:d{i}")
        return ("ok", s.manifest.key_id)
    except Exception as exc:  # reported to the parent, which fails the test with it
        return ("error", f"{type(exc).__name__}: {exc}")
    finally:
        reg.close()


def _publish_same(data_dir: str, i: int, payload: bytes, barrier) -> str:
    """In a child process: wait for the others, then publish the same bytes as a new version."""
    reg = Registry(data_dir)
    barrier.wait()
    try:
        reg.publish("m", f"1.0.{i}", payload, format="bin")
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        reg.close()


def test_concurrent_first_key_creation_makes_one_key_that_every_process_signs_with(tmp_path):
    """H1: four processes making the first signing key at once each made their own, signed
    with keys on no disk, left signing_key.pub naming another key than signing_key.pem, and
    the losers crashed with FileNotFoundError. Now one key wins and everyone uses it."""
    n = 4
    for trial in range(3):
        d = tmp_path / f"t{trial}"
        Registry(d).publish("m", "1.0.0", MODEL, format="bin")
        with _CTX.Manager() as man:
            barrier = man.Barrier(n)
            with _CTX.Pool(n) as pool:
                res = pool.starmap(_first_rollout, [(str(d), i, barrier) for i in range(n)])
        assert all(r[0] == "ok" for r in res), res
        root = d / "registry"
        pem_key = load_or_create_key(root)
        pub = base64.b64decode((root / "signing_key.pub").read_text())
        assert key_id_of(pub) == pem_key.key_id
        assert {r[1] for r in res} == {pem_key.key_id}
        reg = Registry(d)
        assert reg.key_state == "ok"
        trusted = {key_id_of(pub): pub}  # what an agent enrolled with signing_key.pub trusts
        for rel in reg.releases():
            verify(rel.manifest_bytes, rel.signature, MODEL, trusted_keys=trusted,
                   device_id=rel.target.split(":")[1])
        assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
        reg.close()


def test_concurrent_publishes_of_the_same_bytes_all_record_their_version(tmp_path):
    """M2: processes publishing identical bytes shared '<sha>.tmp': the first rename moved it
    away and the others died with FileNotFoundError, their versions lost."""
    n = 4
    payload = os.urandom(4 * 1024 * 1024)
    for trial in range(3):
        d = tmp_path / f"t{trial}"
        Registry(d).close()
        with _CTX.Manager() as man:
            barrier = man.Barrier(n)
            with _CTX.Pool(n) as pool:
                res = pool.starmap(_publish_same,
                                   [(str(d), i, payload, barrier) for i in range(n)])
        assert res == ["ok"] * n, res
        reg = Registry(d)
        versions = reg.versions("m")
        assert sorted(v.version for v in versions) == [f"1.0.{i}" for i in range(n)]
        assert reg.blob(versions[0].sha256) == payload
        assert os.listdir(d / "registry" / "blobs") == [versions[0].sha256]
        reg.close()


def test_empty_model_name_or_version_is_refused_and_never_matches_another_model(data_dir):
    """M1: rollout('', v) matched any model's version v and signed its payload under the name
    ''; publish accepted an empty name."""
    reg = Registry(data_dir)
    reg.publish("secret-model", "1.0.0", MODEL, format="bin")
    for name, version in (("", "1.0.0"), ("  ", "1.0.0"), ("secret-model", "")):
        with pytest.raises(InvalidParameterError, match="must be non-empty text"):
            reg.rollout(name, version, "device:pump-1")
        with pytest.raises(InvalidParameterError, match="must be non-empty text"):
            reg.publish(name, version or " ", b"x", format="bin")
    with pytest.raises(KeyError, match=r"Model '' has no published version"):
        reg.version("", "1.0.0")
    assert reg.versions("") == []
    assert reg.releases() == [] and [v.name for v in reg.versions()] == ["secret-model"]
    r = _cli(data_dir, "rollout", "", "1.0.0", "device:pump-1")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "'name'" in r.stderr, r.stderr
    reg.close()


def test_a_wrong_key_restored_from_a_backup_is_refused(data_dir, tmp_path):
    """M3: any Ed25519 PEM put back as signing_key.pem was taken as the lost key: key_state
    'ok', rollouts signed with it, and every enrolled agent refused them as unknown_key."""
    reg = Registry(data_dir)
    reg.publish("m", "1.0.0", MODEL, format="bin")
    reg.publish("m", "1.1.0", MODEL + b"2", format="bin")
    reg.rollout("m", "1.0.0", "device:d1")
    issued, issued_pub = reg.key_id, reg.public_key_bytes
    reg.close()
    root = data_dir / "registry"
    (root / "signing_key.pem").unlink()
    other = load_or_create_key(tmp_path / "other")  # another registry's key: the wrong backup
    shutil.copy(tmp_path / "other" / "signing_key.pem", root / "signing_key.pem")
    reg = Registry(data_dir)
    assert reg.key_state == "mismatch"
    with pytest.raises(SignatureError) as e:
        reg.rollout("m", "1.1.0", "device:d1")
    assert e.value.reason == "key_mismatch"
    msg = str(e.value)
    assert issued in msg and other.key_id in msg and "new-key" in msg and "\n" not in msg
    with pytest.raises(SignatureError, match=other.key_id):
        reg.publish("m", "1.2.0", b"third", format="bin")
    assert reg.public_key_bytes == issued_pub  # what agents trust, never the stray key
    assert len(reg.releases()) == 1
    reg.close()
    for args in (("rollout", "m", "1.1.0", "device:d1"), ("pubkey",)):
        r = _cli(data_dir, *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert issued in r.stderr and other.key_id in r.stderr
    listed = _cli(data_dir, "list", "--json")
    assert json.loads(listed.stdout)["key_state"] == "mismatch"
    assert json.loads(listed.stdout)["key_id"] == issued
    assert "MISMATCH" in _cli(data_dir, "list").stdout
    # the key that was issued, restored, signs again; agents accept it
    (root / "signing_key.pem").unlink()
    r = _cli(data_dir, "new-key")
    assert r.exit_code == 0, r.stderr  # a deliberate switch is still possible


def test_restoring_the_right_key_after_a_mismatch_works(data_dir, tmp_path):
    """M3: the issued key put back is accepted again (the check compares key ids only)."""
    reg = Registry(data_dir)
    reg.publish("m", "1.0.0", MODEL, format="bin")
    reg.rollout("m", "1.0.0", "device:d1")
    kid, pub = reg.key_id, reg.public_key_bytes
    reg.close()
    pem = data_dir / "registry" / "signing_key.pem"
    saved = pem.read_bytes()
    load_or_create_key(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "signing_key.pem", pem)
    assert Registry(data_dir).key_state == "mismatch"
    pem.write_bytes(saved)
    reg = Registry(data_dir)
    assert reg.key_state == "ok"
    s = reg.rollout("m", "1.0.0", "device:d2")
    assert verify(s.manifest_bytes, s.signature, MODEL, trusted_keys={kid: pub},
                  device_id="d2").key_id == kid
    reg.close()


def test_non_finite_or_unnamed_metrics_are_refused(data_dir):
    """L2: --metric auc=nan / =3 were accepted; list --json and the signed manifests then
    carried a bare NaN and an empty key (not strict JSON)."""
    model = data_dir / "m.bin"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(MODEL)
    for bad in ("auc=nan", "auc=inf", "auc=-inf", "=3", " =3"):
        r = _cli(data_dir, "publish", "m", "1.0.0", str(model), "--metric", bad)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (bad, r.stderr)
        assert repr(bad) in r.stderr
    reg = Registry(data_dir)
    for metrics in ({"auc": float("nan")}, {"": 3.0}, {"auc": float("inf")}):
        with pytest.raises(InvalidParameterError):
            reg.publish("m", "1.0.0", MODEL, format="bin", metrics=metrics)
    assert reg.versions() == []
    r = _cli(data_dir, "publish", "m", "1.0.0", str(model), "--metric", "auc=0.8")
    assert r.exit_code == 0, r.stderr
    s = reg.rollout("m", "1.0.0", "device:d1")

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))

    assert strict(s.manifest_bytes)["metadata"]["metrics"] == {"auc": 0.8}
    strict(_cli(data_dir, "list", "--json").stdout)
    reg.close()


def test_a_nan_metric_stored_by_an_old_registry_is_never_signed_or_listed_as_nan(data_dir):
    """L2: a version published with a NaN metric before the check: list --json prints null
    and a rollout is refused with one line (a manifest is strict JSON)."""
    reg = Registry(data_dir)
    reg.publish("m", "1.0.0", MODEL, format="bin")
    reg._db.execute("UPDATE versions SET metrics = ?", (json.dumps({"auc": float("nan")}),))
    with pytest.raises(InvalidParameterError, match="metric 'auc' = nan"):
        reg.rollout("m", "1.0.0", "device:d1")
    listed = _cli(data_dir, "list", "--json")
    assert listed.exit_code == 0
    body = json.loads(listed.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert body["versions"][0]["metrics"] == {"auc": None}
    reg.close()


def test_downgrade_needs_an_explicit_rollback_order_and_a_rollback_must_go_back(data_dir):
    """L3: "going back to an older model is an explicit, signed rollback order" was not
    enforced: an older version rolled out without --rollback was signed as a plain release
    (and installed), and --rollback on a newer version was signed as a rollback."""
    reg = Registry(data_dir)
    reg.publish("m", "1.0.0", b"old", format="bin")
    reg.publish("m", "1.1.0", b"new", format="bin")
    with pytest.raises(InvalidParameterError, match="has no release of 'm' to go back from"):
        reg.rollback("m", "1.0.0", "device:d1")
    reg.rollout("m", "1.1.0", "device:d1")
    with pytest.raises(InvalidParameterError, match=r"is older than '1\.1\.0'.*--rollback") as e:
        reg.rollout("m", "1.0.0", "device:d1")
    assert e.value.field == "kind"
    with pytest.raises(InvalidParameterError, match=r"not older than '1\.1\.0'"):
        reg.rollback("m", "1.1.0", "device:d1")
    assert [r.release for r in reg.releases()] == [1]
    order = reg.rollback("m", "1.0.0", "device:d1")
    assert (order.manifest.kind, order.manifest.version) == ("rollback", "1.0.0")
    reg.rollback("m", "1.0.0", "device:d1")  # the rollback order re-signed (e.g. expiring)
    reg.rollout("m", "1.0.0", "device:d1")  # the same version again is no downgrade
    reg.rollout("m", "1.1.0", "device:d1")  # forward again
    reg.rollout("m", "1.0.0", "device:d2")  # another target: nothing to go back from
    assert [r.kind for r in reg.releases()] == ["release", "rollback", "rollback", "release",
                                                "release", "release"]
    from edgewise.security import Security

    sec = Security(data_dir)  # the CLI rolls out to registered devices only
    sec.add_device("d1")
    sec.close()
    r = _cli(data_dir, "rollout", "m", "1.0.0", "device:d1")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--rollback" in r.stderr
    r = _cli(data_dir, "rollout", "m", "1.0.0", "device:d1", "--rollback")
    assert r.exit_code == 0 and "(rollback)" in r.stdout, r.stderr
    reg.close()
