"""Bench honesty: `bench detect` names what its ratios to River divide.

Before: the table's "replay / River" column (and the JSON's ``replay_vs_river``, quoted in
the README as "259x River") divided our batch replay (``score_many``) by River's
HalfSpaceTrees run one reading at a time, unlabelled, beside "one / River" (the same work,
about 11x); the module said the ratios "compare like with like".
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgewise.bench import detect_speed
from edgewise.cli import app, load_commands

load_commands()

ARGS = ["bench", "detect", "--points", "1500", "--one-points", "150", "--repeats", "1"]


def _invoke(*extra: str):  # type: ignore[no-untyped-def]
    res = CliRunner(mix_stderr=False).invoke(app, [*ARGS, *extra])
    assert res.exit_code == 0, (res.exception, res.stderr)
    return res


def test_the_table_says_which_ratio_is_batch_against_one_at_a_time() -> None:
    """Check the printed table heads each ratio with what it divides, and says under it that
    River has no batch path and which ratio is the same work."""
    from edgewise.cli.bench_detect import COLUMNS

    heads = [" ".join(c.split()) for c in COLUMNS]  # headers wrap over lines in the table
    assert heads[3:] == ["batch replay ÷ River one at a time",
                         "one at a time ÷ River one at a time (same work)"]
    out = _invoke().stdout
    assert "replay / River" not in out and "one / River" not in out
    for head in COLUMNS:
        for part in head.split("\n"):
            assert part in out
    note = " ".join(out.split())
    assert "River has no batch path" in note
    assert "'one at a time ÷ River one at a time' is the same work" in note


def test_the_json_says_what_each_ratio_divides() -> None:
    """Check `--json` carries, beside the figures, what ``replay_vs_river`` and
    ``one_vs_river`` divide: the first batch over one at a time, the second the same work."""
    doc = json.loads(_invoke("--json").stdout)
    ratios = doc["ratios"]
    assert set(ratios) == {"replay_vs_river", "one_vs_river"}
    assert "batch replay" in ratios["replay_vs_river"]
    assert "no batch path" in ratios["replay_vs_river"]
    assert "not the same work" in ratios["replay_vs_river"]
    assert "the same work" in ratios["one_vs_river"]
    row = next(r for r in doc["detectors"] if r["detector"] == "context-likelihood")
    assert row["replay_vs_river"] is not None and row["one_vs_river"] is not None


def test_the_module_no_longer_calls_the_ratios_like_for_like() -> None:
    """Check the bench's docstring says the replay ratio is no like-for-like comparison."""
    doc = " ".join((detect_speed.__doc__ or "").split())
    assert "compare like with like" not in doc
    assert "River has no batch path" in doc
    assert "no like-for-like comparison" in doc
