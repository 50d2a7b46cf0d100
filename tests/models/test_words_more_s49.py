""""The first ten ... and N more" is written by one helper (``edgewise.models._words``):
its texts, and those of the messages built on it, as they were written by hand before."""

from __future__ import annotations

import pytest

from edgewise.models._words import and_more, first_and_more


def test_and_more_and_first_and_more() -> None:
    assert [and_more(n, 10) for n in (0, 10, 11, 25)] == ["", "", " and 1 more", " and 15 more"]
    assert and_more(6, 5, "device(s)") == " and 1 more device(s)"
    assert and_more(5, 5, "device(s)") == ""
    assert first_and_more([]) == ""
    assert first_and_more(list("abcd"), 3) == "a, b, c and 1 more"
    assert first_and_more(list("abc"), 3) == "a, b, c"
    got = first_and_more([1, 2, 3], 2, each=lambda x: f"<{x}>", noun="x")
    assert got == "<1>, <2> and 1 more x"


def test_rounds_in_words_text() -> None:
    from edgewise.federated.server_app import _rounds_in_words

    assert _rounds_in_words([]) == "[]"
    assert _rounds_in_words(list(range(1, 11))) == "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
    assert _rounds_in_words(list(range(1, 14))) == "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] and 3 more"


def test_skipped_text() -> None:
    from edgewise.cli.rul import _skipped_text

    skipped = [{"device": f"d{i}", "reason": "short"} for i in range(12)]
    assert _skipped_text(skipped[:2]) == "skipped 2 device(s): d0 (short), d1 (short)"
    assert _skipped_text(skipped, shown=3) == (
        "skipped 12 device(s): d0 (short), d1 (short), d2 (short) and 9 more")
    units = [{"unit": 7, "reason": "short"}]
    assert _skipped_text(units) == "skipped 1 unit(s): 7 (short)"


def test_groups_notes_text(capsys: pytest.CaptureFixture[str]) -> None:
    from edgewise.cli.groups import _table
    from edgewise.models.cluster import MAX_MAGNITUDE

    summary = {
        "n_groups": 1, "n_devices": 0, "groups": [], "odd_ones_out": [], "left_out": {},
        "left_out_devices": {f"dev{i}": "too few readings" for i in range(12)},
        "set_aside": {f"p{i}": {"temp": 1} for i in range(7)}, "missing": {},
    }
    _table(summary, None)
    lines = [" ".join(x.split()) for x in capsys.readouterr().out.splitlines()]
    text = " ".join(lines)
    assert "note: device 'dev9' left out (in no group): too few readings" in lines
    assert "dev10" not in text
    assert "note: and 2 more device(s) left out likewise" in lines
    assert (f"note: 7 reading(s) past +-{MAX_MAGNITUDE:g} set aside (no reading comes near it: "
            "a 'no value' sentinel?): p0 temp 1, p1 temp 1, p2 temp 1, p3 temp 1, p4 temp 1 "
            "and 2 more device(s)") in text
