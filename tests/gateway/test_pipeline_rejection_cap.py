"""The MQTT path's rejections (each one a dead-letter publish) are capped as the HTTP answer
is, counted whole on the metrics, and charged to the device's rate limit."""

from __future__ import annotations

import pytest

from edgewise.config import Settings
from edgewise.errors import RateLimitError
from edgewise.gateway.pipeline import IngestResult, Pipeline
from edgewise.store import open_store
from edgewise.telemetry import MAX_LISTED_REJECTIONS


@pytest.fixture
def pipe(tmp_path):
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=0.001,
                                 rate_limit_burst=300.0))
    yield p
    p.close()
    store.close()


def test_mqtt_rejections_are_capped_and_counted_whole(pipe: Pipeline) -> None:
    (res,) = pipe.ingest_many([("pump-1", b"[" + b"0," * 249 + b"0]")], via="mqtt")
    assert isinstance(res, IngestResult)
    assert len(res.rejected) == MAX_LISTED_REJECTIONS  # the dead letters published
    assert res.rejected_counts == {"bad_shape": 250}
    assert pipe.metrics.get("edgewise_readings_rejected_total", reason="bad_shape") == 250


def test_rejected_records_spend_the_devices_tokens(pipe: Pipeline) -> None:
    pipe.ingest_many([("pump-1", b"[" + b"0," * 299 + b"0]")], via="mqtt")  # the burst
    (res,) = pipe.ingest_many([("pump-1", b"[0]")], via="mqtt")
    assert isinstance(res, RateLimitError)
    (other,) = pipe.ingest_many([("pump-2", b"[0]")], via="mqtt")  # others are not affected
    assert isinstance(other, IngestResult)
