"""Tests of the public surface: ``edgewise.__all__`` is sorted, complete and importable."""

from __future__ import annotations

import edgewise
import edgewise.errors


def test_all_is_sorted_and_importable() -> None:
    """Check that every name in __all__ exists and the list is sorted."""
    names = [n for n in edgewise.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in edgewise.__all__:
        assert hasattr(edgewise, name), name


def test_every_public_exception_is_exported() -> None:
    """Check that each exception in edgewise.errors is exported at the top level."""
    for name in edgewise.errors.__all__:
        assert name in edgewise.__all__, name
        assert issubclass(getattr(edgewise, name), edgewise.EdgewiseError)
