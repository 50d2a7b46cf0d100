"""A Mahalanobis ONNX graph names the metric of each column of its input.

The graph takes ``x``, one row of D metrics, in the order the metrics first arrived in
Python (``det.metrics_``: ``temp`` before ``flow`` here, not sorted), but neither the graph
nor the export said which column is which, nor the score's ``tail_digits``: a device
feeding its metrics in another order got T^2 against the wrong means with no word (the C
export's header lists them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.edge import export


def test_mahalanobis_onnx_graph_names_its_metrics_in_column_order(tmp_path) -> None:
    """Check the saved graph's metadata lists the metrics in x's column order and the
    tail_digits, and that order is the one the graph scores by (swapped columns score
    otherwise)."""
    import onnx

    rng = np.random.default_rng(0)
    det = Mahalanobis(warmup=2, tail_digits=8.0)
    for t, f in zip(rng.normal(20, 1, 200), rng.normal(500, 50, 200), strict=True):
        det.learn_one({"temp": float(t), "flow": float(f)})
    g = export(det, "onnx", name="maha")
    g.save(tmp_path)
    m = onnx.load(str(tmp_path / "maha.onnx"))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["edgewise.metrics"]) == ["temp", "flow"] == list(det.metrics_)
    assert float(meta["edgewise.tail_digits"]) == 8.0
    assert "edgewise.metrics" in m.doc_string
    t2, _, _ = g.run({"x": np.array([[20.0, 500.0], [500.0, 20.0]])})
    assert t2[0] < 1 < t2[1]  # the order matters: in the named order the row is typical
