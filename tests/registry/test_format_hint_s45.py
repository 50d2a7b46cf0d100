"""The hint of a refused model format: a wrong --format is corrected, not 'passed'."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.cli.registry import model_format


def test_wrong_format_option_is_told_to_be_one_of_them_not_to_be_passed() -> None:
    with pytest.raises(ValueError) as err:
        model_format(Path("build/ewz.pkl"), "xyz")
    text = str(err.value)
    assert "--format 'xyz'" in text
    assert "give --format one of them" in text
    assert "pass --format" not in text


def test_unknown_suffix_without_format_still_asks_for_format() -> None:
    with pytest.raises(ValueError) as err:
        model_format(Path("build/ewz.weird"))
    assert "the suffix '.weird'" in str(err.value)
    assert str(err.value).endswith("pass --format.")
