"""Going back is an explicit rollback order for every device a release reaches: a rollout
is compared with what each device of its target can already receive (its own target and the
groups the credentials put it in), not only with the last release to the same target."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry
from edgewise.security import Security


def _fleet(data_dir: Path) -> Registry:
    """pump-7 in line-a and line-b, pump-8 in line-a, pump-9 in line-c alone; ewz 1.1.0 then
    1.2.0 released to line-a."""
    sec = Security(data_dir)
    sec.add_device("pump-7", groups=["line-a", "line-b"])
    sec.add_device("pump-8", groups=["line-a"])
    sec.add_device("pump-9", groups=["line-c"])
    sec.close()
    reg = Registry(data_dir)
    reg.publish("ewz", "1.1.0", b"old", format="pickle")
    reg.rollout("ewz", "1.1.0", "group:line-a")
    reg.publish("ewz", "1.2.0", b"new", format="pickle")
    reg.rollout("ewz", "1.2.0", "group:line-a")
    return reg


@pytest.mark.parametrize("target", ["device:pump-7", "group:line-b"])
def test_an_older_version_for_a_device_of_a_newer_group_release_needs_rollback(
        data_dir: Path, target: str) -> None:
    """Check 1.1.0 to pump-7 (or to line-b, which pump-7 is in) after 1.2.0 to line-a is
    refused without --rollback, naming the target, the version, 1.2.0 and line-a (it was
    signed as a plain release, and pump-7 installed the older model)."""
    reg = _fleet(data_dir)
    with pytest.raises(InvalidParameterError) as err:
        reg.rollout("ewz", "1.1.0", target)
    msg = str(err.value)
    assert (f"Version '1.1.0' of 'ewz' for {target!r} is older than '1.2.0', already "
            "released to 'group:line-a', which reaches device 'pump-7' too") in msg
    assert "--rollback" in msg and err.value.field == "kind"
    assert len(reg.releases()) == 2
    order = reg.rollout("ewz", "1.1.0", target, kind="rollback")
    assert (order.manifest.kind, order.manifest.target) == ("rollback", target)
    cur = reg.current("pump-7", ["line-a", "line-b"])
    assert (cur.version, cur.kind) == ("1.1.0", "rollback")
    reg.close()


def test_a_group_release_older_than_a_member_device_has_needs_rollback(data_dir: Path) -> None:
    """Check 1.1.0 to line-a is refused while pump-8, in line-a, has 1.3.0 as a device
    release: it would install the older group release."""
    reg = _fleet(data_dir)
    reg.publish("ewz", "1.3.0", b"newer", format="pickle")
    reg.rollout("ewz", "1.3.0", "device:pump-8")
    with pytest.raises(InvalidParameterError,
                       match=r"for 'group:line-a' is older than '1\.3\.0', already released to "
                             r"'device:pump-8', which reaches device 'pump-8' too.*--rollback"):
        reg.rollout("ewz", "1.2.0", "group:line-a")
    reg.close()


def test_rollouts_to_disjoint_targets_stay_independent(data_dir: Path) -> None:
    """Check a target that shares no device with line-a takes the older version as a plain
    release, and a rollback order there is refused as nothing to go back from."""
    reg = _fleet(data_dir)
    with pytest.raises(InvalidParameterError, match="has no release of 'ewz' to go back from"):
        reg.rollout("ewz", "1.1.0", "group:line-c", kind="rollback")
    assert reg.rollout("ewz", "1.1.0", "group:line-c").manifest.kind == "release"
    assert reg.rollout("ewz", "1.1.0", "device:pump-9").manifest.kind == "release"
    assert reg.rollout("ewz", "1.1.0", "device:pump-unknown").manifest.kind == "release"
    # a rollback order needs a version older than something the devices have
    with pytest.raises(InvalidParameterError, match=r"not older than '1\.2\.0'"):
        reg.rollout("ewz", "1.2.0", "device:pump-7", kind="rollback")
    reg.close()


def test_the_readme_commands(data_dir: Path, tmp_path: Path) -> None:
    """Check the reproduction through the command line: ``device add pump-7 --group
    line-a``, 1.1.0 then 1.2.0 to line-a; 1.1.0 to device:pump-7 fails in one line that says
    to add --rollback, and passes with it."""
    load_commands()
    runner = CliRunner(mix_stderr=False)
    model = tmp_path / "ewz.pkl"
    model.write_bytes(b"model")

    def cli(*args: str):
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)])

    assert cli("device", "add", "pump-7", "--group", "line-a").exit_code == 0
    for v in ("1.1.0", "1.2.0"):
        model.write_bytes(v.encode())
        done = cli("registry", "publish", "ewz", v, str(model))
        assert done.exit_code == 0, done.stderr
        done = cli("registry", "rollout", "ewz", v, "group:line-a")
        assert done.exit_code == 0, done.stderr
    done = cli("registry", "rollout", "ewz", "1.1.0", "device:pump-7")
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'device:pump-7'" in done.stderr and "'group:line-a'" in done.stderr
    assert "'1.2.0'" in done.stderr and "--rollback" in done.stderr
    done = cli("registry", "rollout", "ewz", "1.1.0", "device:pump-7", "--rollback")
    assert done.exit_code == 0 and "(rollback)" in done.stdout, done.stderr
