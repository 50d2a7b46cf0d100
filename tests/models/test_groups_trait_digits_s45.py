"""A trait's two numbers are written with enough digits to differ: a group "higher" than
its fleet read "higher s7: median 554 vs fleet 554" (C-MAPSS units grouped from a store,
group median 554.0 against a fleet's 553.6)."""

from __future__ import annotations

import pytest

from edgewise.models._words import short_number, trait_text


def test_a_trait_never_writes_two_different_values_alike() -> None:
    """Check the group and fleet medians of a level trait are told apart in the text."""
    assert trait_text("level:s7", 554.0, 553.6, True) == "higher s7: median 554 vs fleet 553.6"
    text = trait_text("spread:p", 1402.25, 1402.5, False, "group 1")
    assert text == "p varies less: interquartile range 1402.2 vs group 1 1402.5"


@pytest.mark.parametrize(("value", "typical"), [
    (48.71, 48.7), (12345.0, 12349.0), (2.0123e6, 2.0124e6), (0.012341, 0.012345)])
def test_short_pair_differs_where_the_values_do(value: float, typical: float) -> None:
    """Check values that 3 digits write alike get more digits, and still the short form."""
    from edgewise.models._words import short_pair  # new with this fix

    a, b = short_pair(value, typical)
    assert a != b
    assert short_pair(60.4, 48.7) == (short_number(60.4), short_number(48.7))
