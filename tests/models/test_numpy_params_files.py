"""Parameters given as NumPy numbers (``np.int64(3)``, ``np.float32(0.1)``), which the
parameter checks take, are written to model files as the numbers they hold.

Before, the checks refused them; once they were taken, the JSON header or body of a model
file refused them at ``save()`` ("Object of type float32 is not JSON serializable"), after
the fit had run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.models.cluster import BehaviourGroups, load_groups
from edgewise.models.forecast import Forecaster, load_forecaster, read_forecast_header
from edgewise.models.model_file import json_number
from tests.models.test_cluster import constructed_fleet
from tests.models.test_forecast import FAST, hourly


def test_a_forecaster_with_numpy_parameters_saves_and_loads(tmp_path: Path) -> None:
    ts, y = hourly(days=10)
    f = Forecaster(horizon=np.int64(6), alpha=np.float32(0.25), **FAST).fit(ts, y)
    path = tmp_path / "f.ewf"
    f.save(path)
    header = read_forecast_header(path)
    assert header["alpha"] == 0.25 and type(header["alpha"]) is float
    pd.testing.assert_frame_equal(load_forecaster(path).predict(), f.predict())


def test_groups_with_numpy_parameters_save_and_load(tmp_path: Path) -> None:
    hist, _ = constructed_fleet()
    g = BehaviourGroups(max_groups=np.int64(4), min_coverage=np.float32(0.5),
                        random_state=np.int64(0)).fit(hist)
    path = tmp_path / "g.ewg"
    g.save(path)
    back = load_groups(path)
    assert back.labels_.equals(g.labels_)
    assert back.max_groups == 4 and type(back.max_groups) is int


def test_json_number_refuses_what_json_refuses() -> None:
    try:
        json.dumps({"x": object()}, default=json_number)
    except TypeError as exc:
        assert "object is not JSON serializable" in str(exc)
    else:
        raise AssertionError("an object was written")
