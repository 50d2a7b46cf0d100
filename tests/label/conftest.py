"""Fixtures shared by the label tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env


@pytest.fixture
def henv(data_dir: Path) -> Iterator[Env]:
    """A gateway app over ``data_dir`` (:func:`tests.server.conftest.build_env`): its store,
    security, label store and a client."""
    gen = build_env(data_dir)
    yield next(gen)
    gen.close()
