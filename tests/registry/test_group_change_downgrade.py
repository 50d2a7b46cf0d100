"""Changing a device's groups never hands it an older version without a signed rollback order.

The downgrade guard ran only at rollout time: a device put in a group that still held an
older release (rolled out while the device was not in it) was offered that release, with a
higher counter, and its agent installed it; a device taken out of the group whose newer
version it ran fell back to its own older release, which its agent refused as a rollback on
every check, and the registry then signed that older version to it as a plain release, which
the agent installed. Now ``Security.set_device_groups`` (``edgewise device groups``) refuses
such a change, naming the release and the rollout or rollback order to sign first, and a
device that leaves the last target offering it a model keeps that version as its floor."""

from __future__ import annotations

import base64
import json
import warnings
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry, verify
from edgewise.security import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes.models import make_router

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns, once, at import
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

load_commands()


def _setup(data_dir: Path) -> tuple[Security, Registry, TestClient]:
    sec = Security(data_dir)
    reg = Registry(data_dir)
    api = FastAPI()
    install_problem_handlers(api)
    api.include_router(make_router(reg, sec))
    return sec, reg, TestClient(api, raise_server_exceptions=False)


def _offered(client: TestClient, device: str, secret: str) -> dict[str, object]:
    """The manifest the gateway offers ``device`` now (as its agent asks: pickle, any group)."""
    r = client.get(f"/v1/devices/{device}/model?formats=pickle",
                   headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    return json.loads(base64.b64decode(r.json()["manifest"]))


def _publish(reg: Registry, *versions: str) -> None:
    for v in versions:
        reg.publish("ewz", v, v.encode(), format="pickle")


def test_joining_a_group_that_holds_an_older_version_is_refused(data_dir: Path) -> None:
    """Check pump-8, offered ewz 2.0.0 (release 1, to itself), is refused group line-a, which
    holds 1.0.0 as release 2: the message names the release, both versions and the two ways
    on; its groups stay as they were and it is still offered release 1. (It was put in the
    group and offered release 2, 1.0.0 as kind 'release', which its agent verified.)"""
    sec, reg, client = _setup(data_dir)
    _, secret = sec.add_device("pump-8")
    _publish(reg, "1.0.0", "2.0.0")
    reg.rollout("ewz", "2.0.0", "device:pump-8")
    reg.rollout("ewz", "1.0.0", "group:line-a")
    with pytest.raises(InvalidParameterError) as err:
        sec.set_device_groups("pump-8", ["line-a"])
    assert str(err.value) == (
        "Putting device 'pump-8' in group 'line-a' (from no group) would offer it release 2 "
        "of 'ewz', version '1.0.0' (to 'group:line-a'), older than '2.0.0' that it is offered "
        "now (release 1, to 'device:pump-8'): a device goes back to an older version only by "
        "a signed rollback order. First roll out 'ewz' '2.0.0' (or newer) to 'group:line-a' "
        "(edgewise registry rollout ewz 2.0.0 group:line-a), or sign the rollback for the "
        "device (edgewise registry rollout ewz 1.0.0 device:pump-8 --rollback); then change "
        "its groups.")
    assert err.value.field == "groups" and err.value.value == ["line-a"]
    assert sec.device_groups("pump-8") == []
    offered = _offered(client, "pump-8", secret)
    assert (offered["release"], offered["version"]) == (1, "2.0.0")
    # the first way on: the newer version to the group, then the device joins it
    assert reg.rollout("ewz", "2.0.0", "group:line-a").manifest.release == 3
    assert sec.set_device_groups("pump-8", ["line-a"]) == ["line-a"]
    offered = _offered(client, "pump-8", secret)
    assert (offered["release"], offered["version"], offered["kind"]) == (3, "2.0.0", "release")


def test_leaving_a_group_for_an_older_own_release_is_refused(data_dir: Path) -> None:
    """Check pump-7, running line-a's 2.0.0 (release 2) over its own 1.0.0 (release 1), is
    refused leaving line-a; after the rollback order the message suggests, it leaves and is
    offered that order, which its agent (floor: release 2) verifies as kind 'rollback'. (It
    left, was offered release 1, refused as a rollback forever, and 1.0.0 was then signed to
    it as a plain release that its agent installed.)"""
    sec, reg, client = _setup(data_dir)
    _, secret = sec.add_device("pump-7", groups=["line-a"])
    _publish(reg, "1.0.0", "2.0.0")
    reg.rollout("ewz", "1.0.0", "device:pump-7")
    reg.rollout("ewz", "2.0.0", "group:line-a")
    with pytest.raises(InvalidParameterError) as err:
        sec.set_device_groups("pump-7", [])
    msg = str(err.value)
    assert msg.startswith("Taking device 'pump-7' out of group 'line-a' would offer it release "
                          "1 of 'ewz', version '1.0.0' (to 'device:pump-7'), older than "
                          "'2.0.0' that it is offered now (release 2, to 'group:line-a')")
    assert "(edgewise registry rollout ewz 2.0.0 device:pump-7)" in msg
    assert "(edgewise registry rollout ewz 1.0.0 device:pump-7 --rollback)" in msg
    assert sec.device_groups("pump-7") == ["line-a"]
    # the older version to the device alone is a rollback order, not a plain release
    with pytest.raises(InvalidParameterError, match=r"older than '2\.0\.0'"):
        reg.rollout("ewz", "1.0.0", "device:pump-7")
    order = reg.rollout("ewz", "1.0.0", "device:pump-7", kind="rollback")
    assert sec.set_device_groups("pump-7", []) == []
    offered = _offered(client, "pump-7", secret)
    assert (offered["release"], offered["kind"]) == (3, "rollback")
    m = verify(order.manifest_bytes, order.signature, b"1.0.0",
               trusted_keys={reg.key_id: reg.public_key_bytes}, device_id="pump-7",
               installed_release=2)
    assert (m.version, m.kind) == ("1.0.0", "rollback")


def test_leaving_after_rolling_the_newer_version_to_the_device_is_allowed(
        data_dir: Path) -> None:
    """Check the other way on for pump-7: 2.0.0 to the device itself, then it leaves line-a
    and is offered that release (2.0.0, a higher counter than the one it runs)."""
    sec, reg, client = _setup(data_dir)
    _, secret = sec.add_device("pump-7", groups=["line-a"])
    _publish(reg, "1.0.0", "2.0.0")
    reg.rollout("ewz", "1.0.0", "device:pump-7")
    reg.rollout("ewz", "2.0.0", "group:line-a")
    reg.rollout("ewz", "2.0.0", "device:pump-7")
    assert sec.set_device_groups("pump-7", []) == []
    offered = _offered(client, "pump-7", secret)
    assert (offered["release"], offered["version"]) == (3, "2.0.0")


def test_moving_between_groups_with_the_same_or_a_newer_version_is_allowed(
        data_dir: Path) -> None:
    """Check a move that hands a device no older version goes through: line-b holds the
    2.0.0 that line-a gave it (a lower counter: the agent keeps what it runs), then a group
    with 3.0.0; and a device that was offered nothing joins a group with an old version."""
    sec, reg, _ = _setup(data_dir)
    sec.add_device("pump-7", groups=["line-a"])
    sec.add_device("pump-9")
    _publish(reg, "1.0.0", "2.0.0", "3.0.0")
    reg.rollout("ewz", "2.0.0", "group:line-b")
    reg.rollout("ewz", "2.0.0", "group:line-a")
    reg.rollout("ewz", "3.0.0", "group:line-c")
    reg.rollout("ewz", "1.0.0", "group:line-d")
    assert sec.set_device_groups("pump-7", ["line-b"]) == ["line-b"]
    assert sec.set_device_groups("pump-7", ["line-c"]) == ["line-c"]
    assert sec.set_device_groups("pump-9", ["line-d"]) == ["line-d"]


def test_a_device_keeps_its_version_as_floor_after_leaving_the_last_group_of_a_model(
        data_dir: Path) -> None:
    """Check pump-7, which ran line-a's 2.0.0 and left line-a (no other release of ewz reaches
    it), is still protected: 1.0.0 to it, or to a group it is in, needs --rollback (naming
    the floor), joining a group that holds 1.0.0 is refused, and once the rollback order is
    signed a plain newer release goes through again."""
    sec, reg, _ = _setup(data_dir)
    sec.add_device("pump-7", groups=["line-a", "line-b"])
    _publish(reg, "1.0.0", "1.5.0", "2.0.0")
    reg.rollout("ewz", "2.0.0", "group:line-a")
    reg.rollout("ewz", "1.0.0", "group:line-c")
    assert sec.set_device_groups("pump-7", ["line-b"]) == ["line-b"]
    for target in ("device:pump-7", "group:line-b"):
        with pytest.raises(InvalidParameterError) as err:
            reg.rollout("ewz", "1.0.0", target)
        assert ("older than '2.0.0', which device 'pump-7' was offered (release 1, to "
                "'group:line-a') before it left that target") in str(err.value)
    with pytest.raises(InvalidParameterError, match=r"offered \(release 1, to 'group:line-a'\) "
                       "before it left that target"):
        sec.set_device_groups("pump-7", ["line-b", "line-c"])
    assert reg.rollout("ewz", "1.0.0", "device:pump-7", kind="rollback").manifest.kind == (
        "rollback")
    assert reg.rollout("ewz", "1.5.0", "device:pump-7").manifest.kind == "release"


def test_device_groups_cli_refuses_a_downgrading_change_in_one_line(data_dir: Path) -> None:
    """Check ``edgewise device groups pump-8 --group line-a`` exits 2 with the refusal as one
    line and leaves the device's groups as they were."""
    sec, reg, _ = _setup(data_dir)
    sec.add_device("pump-8")
    _publish(reg, "1.0.0", "2.0.0")
    reg.rollout("ewz", "2.0.0", "device:pump-8")
    reg.rollout("ewz", "1.0.0", "group:line-a")
    res = CliRunner(mix_stderr=False).invoke(
        app, ["device", "groups", "pump-8", "--group", "line-a", "--data-dir", str(data_dir)])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: Putting device 'pump-8' in group 'line-a'")
    assert res.stderr.count("\n") == 1 and "--rollback" in res.stderr
    assert sec.device_groups("pump-8") == []
