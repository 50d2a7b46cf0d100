"""``Security.set_device_groups`` checks a change against the data directory's registry
through one registry it opens once and keeps (not a whole ``Registry`` opened per change),
and still against the registry as it is now: releases signed meanwhile by another registry
object, a registry made after the first change, or one replaced on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry
from edgewise.security import Security


def _downgrade_setup(data_dir: Path) -> Registry:
    """pump-8 is offered ewz 2.0.0 (to itself); group line-a holds the older 1.0.0."""
    reg = Registry(data_dir)
    for v in ("1.0.0", "2.0.0"):
        reg.publish("ewz", v, v.encode(), format="pickle")
    reg.rollout("ewz", "2.0.0", "device:pump-8")
    reg.rollout("ewz", "1.0.0", "group:line-a")
    return reg


def test_one_registry_is_kept_and_sees_releases_signed_meanwhile(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    sec.add_device("pump-8")
    Registry(tmp_path).close()
    assert sec.set_device_groups("pump-8", ["line-b"]) == ["line-b"]
    kept = sec._registry
    assert kept is not None
    reg = _downgrade_setup(tmp_path)  # by another Registry, after the kept one was opened
    with pytest.raises(InvalidParameterError, match=r"release 2 of 'ewz', version '1\.0\.0'"):
        sec.set_device_groups("pump-8", ["line-a"])
    assert sec.device_groups("pump-8") == ["line-b"]
    reg.rollout("ewz", "2.0.0", "group:line-a")
    assert sec.set_device_groups("pump-8", ["line-a"]) == ["line-a"]
    assert sec._registry is kept  # not opened again per change
    sec.close()
    assert sec._registry is None
    reg.close()


def test_a_registry_made_after_the_first_change_is_checked(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    sec.add_device("pump-8")
    assert sec.set_device_groups("pump-8", ["line-b"]) == ["line-b"]
    assert not (tmp_path / "registry").exists()  # nothing made while there is none
    _downgrade_setup(tmp_path).close()
    with pytest.raises(InvalidParameterError, match=r"version '1\.0\.0'"):
        sec.set_device_groups("pump-8", ["line-a"])
    sec.close()


def test_a_replaced_registry_is_opened_again(tmp_path: Path) -> None:
    """A kept connection to a deleted registry.sqlite would check against the old file."""
    sec = Security(tmp_path)
    sec.add_device("pump-8")
    Registry(tmp_path).close()
    assert sec.set_device_groups("pump-8", ["line-b"]) == ["line-b"]
    shutil.rmtree(tmp_path / "registry")
    assert sec.set_device_groups("pump-8", ["line-c"]) == ["line-c"]  # none: no check
    assert sec._registry is None and not (tmp_path / "registry").exists()
    Registry(tmp_path).close()
    assert sec.set_device_groups("pump-8", ["line-b"]) == ["line-b"]
    shutil.rmtree(tmp_path / "registry")  # deleted and made again between two changes
    _downgrade_setup(tmp_path).close()
    with pytest.raises(InvalidParameterError, match=r"version '1\.0\.0'"):
        sec.set_device_groups("pump-8", ["line-a"])
    assert sec.device_groups("pump-8") == ["line-b"]
    sec.close()
