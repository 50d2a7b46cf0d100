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
