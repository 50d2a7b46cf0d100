"""Model files with a damaged header: one nested too deeply for ``json`` (a RecursionError
escaped every loader and the RUL route's folder scan) and one whose header newline is lost
(the whole file was read into memory as the header, on every RUL route scan)."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.models import cluster, forecast, rul
from edgewise.models.model_file import MAX_HEADER_BYTES, read_model_header, write_model_file
from edgewise.server.routes.rul import model_files
from tests.server.conftest import Env, build_env
from tests.server.test_rul_api import _small_model, _unit

NESTED = b"[" * 200_000


@pytest.fixture
def env(data_dir: Path) -> Iterator[Env]:
    """A real app (DuckDB store, Security, Pipeline) with device 'pump-1'."""
    yield from build_env(data_dir)

LOADERS: list[tuple[str, bytes, Callable[[Path], Any], type[Exception]]] = [
    ("rul read_header", rul._MAGIC, rul.read_header, rul.ModelFileError),
    ("rul load_model", rul._MAGIC, rul.load_model, rul.ModelFileError),
    ("forecast read_forecast_header", forecast._MAGIC, forecast.read_forecast_header,
     forecast.ForecastFileError),
    ("forecast load_forecaster", forecast._MAGIC, forecast.load_forecaster,
     forecast.ForecastFileError),
    ("groups load_groups", cluster._MAGIC, cluster.load_groups, cluster.GroupsFileError),
]


@pytest.mark.parametrize(("name", "magic", "load", "error"), LOADERS,
                         ids=[x[0] for x in LOADERS])
def test_a_deeply_nested_header_is_refused_naming_the_file(
        tmp_path: Path, name: str, magic: bytes, load: Callable[[Path], Any],
        error: type[Exception]) -> None:
    """Check a header of 200,000 nested ``[`` raises the loader's own error naming the file
    and saying the header nests too deeply (before: RecursionError, naming nothing)."""
    path = tmp_path / "nested.model"
    path.write_bytes(magic + NESTED + b"\n" + b"body")
    with pytest.raises(error) as caught:
        load(path)
    msg = str(caught.value)
    assert repr(str(path)) in msg and "damaged header" in msg and "nests too deeply" in msg


def test_a_deeply_nested_groups_body_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Check a groups file whose (checksummed) JSON body nests too deeply raises
    GroupsFileError naming the file (before: RecursionError from ``json.loads(body)``)."""
    path = tmp_path / "groups.model"
    write_model_file(path, cluster._MAGIC, {"format_version": cluster.FORMAT_VERSION}, NESTED)
    with pytest.raises(cluster.GroupsFileError) as caught:
        cluster.load_groups(path)
    assert repr(str(path)) in str(caught.value) and "RecursionError" in str(caught.value)


@pytest.mark.parametrize("load", [rul.read_header, rul.load_model],
                         ids=["read_header", "load_model"])
def test_a_header_without_its_newline_is_refused_without_reading_the_file(
        tmp_path: Path, load: Callable[[Path], Any]) -> None:
    """Check a 50 MB RUL file whose header newline is lost is refused naming the file and
    the cap, with a peak of Python allocations far below the file's size (before: the whole
    file was read as the header line, then decoded: a peak above 50 MB)."""
    path = tmp_path / "rul-cut.ewm"
    with open(path, "wb") as fh:
        fh.write(rul._MAGIC + json.dumps({"format_version": 2}).encode() + b"\x0b")
        chunk = b"\x01" * 2**20
        for _ in range(50):
            fh.write(chunk)
    del chunk
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(rul.ModelFileError) as caught:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_HEADER_BYTES < 50 * 2**20, peak  # ~2x the cap (readline joins)
    msg = str(caught.value)
    assert repr(str(path)) in msg and f"{MAX_HEADER_BYTES >> 20} MiB" in msg


def test_a_long_real_header_still_reads(tmp_path: Path) -> None:
    """Check a header of 3 MiB (far longer than any model writes: ~480 bytes per RUL sensor)
    still reads whole; one a byte past the cap is refused."""
    path = tmp_path / "big.model"
    pad = "x" * (3 * 2**20)
    write_model_file(path, rul._MAGIC, {"format_version": 2, "pad": pad}, b"body")
    assert read_model_header(path, rul._MAGIC, ValueError, what="RUL model")["pad"] == pad
    over = MAX_HEADER_BYTES - len(b'{"pad": ""}\n') + 1
    path.write_bytes(rul._MAGIC + json.dumps({"pad": "x" * over}).encode() + b"\n")
    with pytest.raises(ValueError, match="no end within"):
        read_model_header(path, rul._MAGIC, ValueError, what="RUL model")


def test_the_rul_route_passes_over_damaged_headers_and_serves_the_good_model(env: Env) -> None:
    """Check newer ``rul*`` files with a too deeply nested header and with a lost header
    newline are passed over by the RUL route, which still answers from the good older model
    (before: the nested one's RecursionError broke the route for every request)."""
    _small_model(env)
    models = env.settings.data_dir / "models"
    (models / "rul-v2.ewm").write_bytes(rul._MAGIC + NESTED + b"\n" + b"body")
    (models / "rul-v3.ewm").write_bytes(rul._MAGIC + b"{" + b"\x01" * (MAX_HEADER_BYTES + 10))
    assert rul.read_header(models / "rul-v1.ewm")["format_version"] == rul.FORMAT_VERSION
    # every rul* file is a candidate (a damaged header is passed over, listed in skipped)
    assert {p.name for p in model_files(env.settings.data_dir)} == {
        "rul-v1.ewm", "rul-v2.ewm", "rul-v3.ewm"}

    upto = 60
    x = _unit(np.random.default_rng(1), 120)[:upto]
    t0 = int(time.time()) - upto
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in
                          enumerate(["temp_c", "vib_mm_s", "current_a"])}}
             for i in range(upto)]
    assert env.send(batch).status_code == 200
    for _ in range(2):  # every request, not only the first
        r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "rul-v1.ewm" and body["reason"] is None, body
        assert body["rul"] is not None


def test_the_rul_route_passes_over_a_newer_file_without_a_checksum(env: Env) -> None:
    """Check a newer ``rul*`` file saved before the checksum (format 2, no body_sha256) is
    passed over for the older checked model, listed in ``skipped`` saying it has no checksum
    (before: it was unpickled unchecked, so a damaged one made LightGBM abort the server)."""
    _small_model(env)
    models = env.settings.data_dir / "models"
    data = (models / "rul-v1.ewm").read_bytes()
    end = data.index(b"\n", len(rul._MAGIC)) + 1
    head = json.loads(data[len(rul._MAGIC):end])
    del head["body_sha256"]
    (models / "rul-v2.ewm").write_bytes(rul._MAGIC + json.dumps(head).encode() + b"\n"
                                        + data[end:])
    upto = 60
    x = _unit(np.random.default_rng(1), 120)[:upto]
    t0 = int(time.time()) - upto
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in
                          enumerate(["temp_c", "vib_mm_s", "current_a"])}}
             for i in range(upto)]
    assert env.send(batch).status_code == 200
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "rul-v1.ewm" and body["rul"] is not None, body
    assert [s["model"] for s in body["skipped"]] == ["rul-v2.ewm"], body
    assert "has no checksum" in body["skipped"][0]["detail"]
