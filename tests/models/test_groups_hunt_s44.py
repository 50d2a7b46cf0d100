"""Choosing the number of groups where the fleet's silhouette nears its ceiling (session 44)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.models.cluster import BehaviourGroups


def _two_kinds(n: int, seed: int) -> dict[str, pd.DataFrame]:
    """``n`` pumps, two days every 15 min: half at 40 °C and 1450 rpm, half at 60 °C and
    2950 rpm (noise sd 1 °C and 10 rpm): two kinds 20 and 150 sd apart."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=2 * 96, freq="15min", tz="UTC")
    return {f"pump-{i:02d}": pd.DataFrame({
        "temp_c": 40 + 20 * (i % 2) + rng.normal(0, 1, len(idx)),
        "speed_rpm": 1450 + 1500 * (i % 2) + rng.normal(0, 10, len(idx))}, index=idx)
        for i in range(n)}


@pytest.mark.parametrize("seed", [0, 1])
def test_eight_pumps_of_two_far_apart_kinds_are_two_groups(seed: int) -> None:
    """Check 8 pumps of two kinds that no reading confuses make two groups: their
    silhouette (0.99) could not beat the best of 8 Gaussian clouds (0.90 among 8 devices)
    by more than chance on a scale that ends at 1, and they were one group, "nothing
    separates it" (all of 6 seeds at 8 pumps, 3 of 6 at 10; 4, 6 and 14 pumps were two)."""
    model = BehaviourGroups().fit(_two_kinds(8, seed))
    labels = model.labels_
    assert labels.nunique() == 2, (model.silhouette_, model.null_silhouette_)
    for kind in (0, 1):
        assert labels.iloc[kind::2].nunique() == 1
    assert not model.odd_.any()


def test_a_long_file_with_two_devices_under_one_id_is_refused(tmp_path: Path) -> None:
    """Check a long file whose device holds two numbers of a metric at many of its times
    (two pumps under one id) is refused as a wide file is: it was averaged without a word
    into one pump at 50 °C and 2200 rpm, a kind neither is, and the 7 devices were then
    one group. One repeated reading is averaged with a note."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    rows = [(("pump-00" if d == "pump-01" else d), t.isoformat(), m, v)
            for d, frame in _two_kinds(8, 0).items()
            for t, r in frame.iloc[::2].iterrows() for m, v in r.items()]
    long = pd.DataFrame(rows, columns=["device_id", "time", "metric", "value"])
    f = tmp_path / "long.csv"
    long.to_csv(f, index=False)
    res = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(f)])
    assert res.exit_code == 2, res.stdout
    assert res.stderr.count("\n") == 1, res.stderr
    assert ("device 'pump-00' has more than one reading of a metric at 96 of its 96 times "
            "(the first: metric 'speed_rpm' at 2024-01-01T00:00:00+00:00)") in res.stderr
    assert res.stdout == ""
    once = long[long["device_id"] != "pump-00"]
    once = pd.concat([once, once.iloc[[0]].assign(value=99.0)])
    once.to_csv(f, index=False)
    res = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(f)])
    assert res.exit_code == 0, res.stderr
    assert res.stderr == (f"note: --csv {str(f)!r}: device 'pump-02' has more than one "
                          "reading of a metric at 1 time(s) (the first: metric 'temp_c' at "
                          "2024-01-01T00:00:00+00:00); their mean is used\n")
