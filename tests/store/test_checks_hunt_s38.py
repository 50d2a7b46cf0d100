"""The store checks' documented recipe (telemetry hunt s38): ``check_store(lambda: (lambda:
DuckDBStore(fresh_path())))`` made a fresh path at every call, so a correct store failed
each reopen check; and a reopen that lost readings failed with a bare "AssertionError: 0"."""

from __future__ import annotations

import itertools
import pathlib
import re

import pytest

import edgewise.checks
from edgewise.checks import (
    check_store_failed_append_leaves_nothing,
    check_store_reopen_keeps_everything,
)
from edgewise.store.duckdb import DuckDBStore


def test_the_documented_recipe_reopens_the_same_store(tmp_path: pathlib.Path) -> None:
    """Check the module docstring's ``check_store(...)`` line, run as written (its factory
    of factories) on the reopen check: the old one gave a new empty file at the reopen."""
    doc = edgewise.checks.__doc__ or ""
    (arg,) = re.findall(r"^\s*check_store\((.*)\)\s*$", doc, re.M)
    n = itertools.count()
    paths = (tmp_path / f"store-{i}.duckdb" for i in n)
    names = {"DuckDBStore": DuckDBStore, "paths": paths,
             "fresh_path": lambda: tmp_path / f"fresh-{next(n)}.duckdb"}
    make_factory = eval(arg, names)  # the docstring's own text
    check_store_reopen_keeps_everything(make_factory())


def test_readings_lost_at_reopen_are_named(tmp_path: pathlib.Path) -> None:
    """Check the failed-append check's reopen said only ``AssertionError: 0``."""
    n = itertools.count()
    with pytest.raises(AssertionError, match=r"readings lost across reopen: 0 of 40"):
        check_store_failed_append_leaves_nothing(
            lambda: DuckDBStore(tmp_path / f"s{next(n)}.duckdb"))
