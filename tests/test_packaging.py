"""Tests of the packaging metadata that a fresh install depends on."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_dev_extra_holds_every_package_of_all() -> None:
    """Check that 'dev' lists every package of 'all' (spelled out, not edgewise[all])."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras["all"]) <= set(extras["dev"])
    for name in ("postgres", "torch", "onnx", "federated", "rul"):
        assert set(extras[name]) <= set(extras["all"]), name
    assert not any(r.startswith("edgewise") for r in extras["all"] + extras["dev"])


def test_the_declared_licence_ships_and_every_package_data_pattern_matches() -> None:
    """Check the Apache-2.0 text is in the repository (pyproject declares it; setuptools puts
    LICENSE in the wheel) and that no package-data pattern names files that do not exist."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    package = REPO / "src" / "edgewise"
    for pattern in meta["tool"]["setuptools"]["package-data"]["edgewise"]:
        assert any(p.is_file() for p in package.glob(pattern)), pattern
