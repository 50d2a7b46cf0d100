"""``edgewise bench groups``: the NAB truth, a real-data comparison, and its refusals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from edgewise.bench.groups import baseline_raw, nab_fleet
from edgewise.cli import app, load_commands
from edgewise.models.cluster import BehaviourGroups

load_commands()


@pytest.fixture(scope="module")
def aws(shared_data: Path):
    return nab_fleet(shared_data / "nab", "aws")


def test_the_aws_truth_is_what_each_file_name_says(aws) -> None:
    """Check the written-down mapping: 16 named series, 4 kinds, grok_asg_anomaly left out."""
    hist, truth = aws
    assert Counter(truth.values()) == {"cpu": 10, "network_in": 3, "disk_write_bytes": 2,
                                       "request_count": 1}
    assert "realAWSCloudwatch/grok_asg_anomaly" not in hist
    assert all(list(f.columns) == ["value"] and f.index.tz is not None for f in hist.values())


def test_profiles_beat_raw_series_kmeans_on_real_aws_series(aws) -> None:
    """Check that on real NAB series, grouped by what they measure, our profiles with the
    true number of groups agree with the truth better than k-means on z-normalised series
    (0.36 against 0.01 adjusted Rand in benchmarks/results/groups.md)."""
    hist, truth = aws
    labels = [truth[d] for d in hist]
    ours = BehaviourGroups(n_groups=4, min_group_size=1, random_state=0).fit(hist)
    ours_ari = adjusted_rand_score(labels, ours.labels_[list(hist)].tolist())
    raw_ari = adjusted_rand_score(labels, baseline_raw(hist, 4, 0))
    assert ours_ari > 0.3 > raw_ari + 0.2, (ours_ari, raw_ari)


@pytest.mark.parametrize(("args", "message"), [
    (["--nab", "/nonexistent", "--tasks", "aws"], ("error: --nab '/nonexistent' is not a "
     "NAB root: no data/realAWSCloudwatch folder; give the folder holding NAB's data/, e.g. "
     "/work/shared/data/nab")),
    (["--nab", "/nonexistent", "--tasks", "aws,pump"], ("error: --tasks must be "
     "comma-separated tasks from aws, real, pumps, pumps-same. Got 'aws,pump'.")),
])
def test_bad_options_are_one_error_line(args, message) -> None:
    """Check a wrong NAB folder or task name is one 'error:' line, exit 2, before any work."""
    res = CliRunner(mix_stderr=False).invoke(app, ["bench", "groups", *args])
    assert res.exit_code == 2
    assert res.stderr == message + "\n"
