"""Group rollouts reach the devices an admin put in the group, and only those: the README's
flow (device add --group, registry publish, rollout group:NAME, agent --group) end to end on
the real app, the real CLI and the real agent code."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app as cli_app
from edgewise.cli import load_commands
from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot
from tests.server.conftest import Env

load_commands()


def _cli(data_dir: Path, *args: str) -> dict | str:
    res = CliRunner(mix_stderr=False).invoke(cli_app, [*args, "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stdout + res.stderr
    return json.loads(res.stdout) if "--json" in args else res.stdout


def test_group_rollout_reaches_members_and_only_members(env: Env, tmp_path: Path) -> None:
    """Check that `registry rollout ... group:line-a` reaches a device added with
    `--group line-a` (it used to get 204: the gateway put every device in 'all' only), that a
    device outside the group gets nothing, and that `device groups` moves a device in."""
    data = env.settings.data_dir
    member = _cli(data, "device", "add", "pump-7", "--group", "line-a", "--json")
    other = _cli(data, "device", "add", "pump-8", "--json")
    assert member["groups"] == ["line-a"] and other["groups"] == []
    model = tmp_path / "ewz.pkl"
    model.write_bytes(pickle.dumps(EWZScore(z0=4.5)))
    _cli(data, "registry", "publish", "ewz", "1.1.1", str(model), "--format", "pickle")
    _cli(data, "registry", "rollout", "ewz", "1.1.1", "group:line-a")
    reg = env.client.app.state.registry
    keys = {reg.key_id: reg.public_key_bytes}

    def agent(dev: dict, name: str) -> Agent:
        return Agent("http://testserver", dev["id"], dev["secret"], tmp_path / name,
                     trusted_keys=keys, groups=("line-a",))

    a = agent(member, "a7")
    assert a.check_update(env.client) == "installed"
    assert a.release == 1 and a.template.z0 == 4.5
    assert ModelSlot(tmp_path / "a7" / "models").current().manifest.target == "group:line-a"
    # a device that only claims the group (its agent says --group line-a) gets nothing
    b = agent(other, "a8")
    assert b.check_update(env.client) == "none"
    r = env.client.get("/v1/devices/pump-8/model", headers=env.device_headers(
        "pump-8", other["secret"]))
    assert r.status_code == 204
    # until an admin puts it in the group
    assert _cli(data, "device", "groups", "pump-8", "--group", "line-a", "--json") == {
        "id": "pump-8", "groups": ["line-a"]}
    assert b.check_update(env.client) == "installed"
    listed = _cli(data, "device", "list", "--json")
    assert {d["id"]: d["groups"] for d in listed}["pump-7"] == ["line-a"]


def test_device_groups_cli_refuses_unknown_devices_and_bad_names(env: Env) -> None:
    """Check `device groups` on an unregistered device and a bad group name fail with one line."""
    runner = CliRunner(mix_stderr=False)
    data = str(env.settings.data_dir)
    res = runner.invoke(cli_app, ["device", "groups", "nosuch", "--group", "a", "--data-dir", data])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "Device 'nosuch' is not registered" in res.stderr
    res = runner.invoke(cli_app, ["device", "add", "pump-9", "--group", "a/b", "--data-dir", data])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "Group name 'a/b' is not valid" in res.stderr
    assert not env.security.has_device("pump-9")


def test_a_device_is_offered_the_newest_release_it_can_run(env: Env, tmp_path: Path) -> None:
    """Check a newer C export released to the device's group, or a pickle released to a
    group its agent was not started with, no longer hides the device's own pickle release:
    the real agent says what it runs (formats, groups) and is offered the newest release it
    can install (it was offered only the newest of all and refused it for good, as
    unsupported_format or wrong_device); an agent that says nothing is offered what it was
    before; and a release older than the installed one is still refused (rollback)."""
    data = env.settings.data_dir
    dev = _cli(data, "device", "add", "pump-7", "--group", "line-a", "--group", "line-b",
               "--json")
    model, c_file = tmp_path / "ewz.pkl", tmp_path / "clik.c"
    model.write_bytes(pickle.dumps(EWZScore(z0=4.5)))
    c_file.write_text("/* firmware model for the MCUs of line-a */\n")
    _cli(data, "registry", "publish", "ewz", "1.1.0", str(model))
    _cli(data, "registry", "publish", "clik", "1.0.0", str(c_file), "--format", "c")
    _cli(data, "registry", "rollout", "ewz", "1.1.0", "device:pump-7")   # release 1
    _cli(data, "registry", "rollout", "clik", "1.0.0", "group:line-a")   # release 2
    reg = env.client.app.state.registry
    keys = {reg.key_id: reg.public_key_bytes}

    def agent(*groups: str) -> Agent:
        return Agent("http://testserver", "pump-7", dev["secret"], tmp_path / "a",
                     trusted_keys=keys, groups=groups)

    a = agent("line-a")
    assert a.check_update(env.client) == "installed" and a.release == 1
    _cli(data, "registry", "rollout", "ewz", "1.1.0", "group:line-b")    # release 3
    assert a.check_update(env.client) == "current" and a.release == 1

    def offered(query: str = "") -> int | None:
        r = env.client.get(f"/v1/devices/pump-7/model{query}",
                           headers=env.device_headers("pump-7", dev["secret"]))
        if r.status_code == 204:
            return None
        return json.loads(base64.b64decode(r.json()["manifest"]))["release"]

    assert offered() == 3                                     # an agent that says nothing
    assert offered("?formats=c") == 2
    assert offered("?formats=pickle&groups=line-a") == 1
    assert offered("?formats=pickle&groups=line-a,line-b,line-z") == 3
    assert offered("?groups=") == 1                           # its own releases only
    assert offered("?formats=onnx") is None
    b = agent("line-a", "line-b")                             # started with line-b too
    assert b.check_update(env.client) == "installed" and b.release == 3
    c = agent("line-a")                                       # and without it again
    # release 3 is line-b's, so not run; release 1, its own, is the same model (name,
    # version, sha256): run, and offered again it is current, not a rollback
    assert c.check_update(env.client) == "current"
    assert (c.release, c.running_release) == (3, 1), (c.release, c.running_release)
