"""One reader for the RUL, forecast and groups model files: a damaged body is refused before
it is deserialised; files saved before the RUL checksum still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgewise.models.rul import ModelFileError, RULModel, load_model, read_header
from tests.models.test_rul import fleet

MAGIC = b"EDGEWISE-RUL\n"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rul") / "m.rul"
    RULModel(models=("gbm",), n_estimators=10, cap=60.0).fit(fleet(8)).save(path)
    return path


def _split(data: bytes) -> tuple[bytes, bytes]:
    end = data.index(b"\n", len(MAGIC)) + 1
    return data[:end], data[end:]


def test_a_flipped_bit_in_a_rul_body_is_refused_before_unpickling(saved: Path,
                                                                 tmp_path: Path) -> None:
    """Check 30 single-bit flips spread over the pickled body each raise ModelFileError
    naming the file as damaged (before: most loaded, some as a silently different model,
    some with a LightGBM parse warning or an AttributeError)."""
    head, body = _split(saved.read_bytes())
    assert "body_sha256" in json.loads(head[len(MAGIC):])
    rng = np.random.default_rng(7)
    for i, pos in enumerate(rng.choice(len(body), 30, replace=False)):
        flipped = bytearray(body)
        flipped[pos] ^= 1 << int(rng.integers(8))
        bad = tmp_path / f"flip{i}.rul"
        bad.write_bytes(head + bytes(flipped))
        with pytest.raises(ModelFileError, match=r"flip\d+\.rul' is damaged or truncated \(its "
                           "body does not match its checksum\\); copy it again or retrain"):
            load_model(bad)


def test_a_rul_file_saved_before_the_checksum_still_loads(saved: Path, tmp_path: Path) -> None:
    """Check a file whose header has no body_sha256 (saved by an earlier build) loads and
    predicts as the checked one does."""
    head, body = _split(saved.read_bytes())
    doc = json.loads(head[len(MAGIC):])
    del doc["body_sha256"]
    old = tmp_path / "old.rul"
    old.write_bytes(MAGIC + json.dumps(doc).encode() + b"\n" + body)
    data = fleet(3, seed=5)
    assert load_model(old).predict(data).equals(load_model(saved).predict(data))
    assert read_header(old)["kind"] == "RULModel"
    old.write_bytes(MAGIC + json.dumps(doc).encode() + b"\n" + body[:-40])
    with pytest.raises(ModelFileError, match="is damaged or truncated"):
        load_model(old)


@pytest.mark.parametrize(("content", "words"), [
    (b"unit,cycle\n1,2\n", (r"is not an Edgewise RUL model file \(it does not start with "
     r"EDGEWISE-RUL\)")),
    (MAGIC + b"{not json\n", "has a damaged header"),
    (MAGIC + b"[1, 2]\n", "has a damaged header: not a JSON object"),
    (MAGIC + b'{"format_version": 7}\nbody', ("RUL model file '.*' has format version 7; this "
     "Edgewise reads version 2. Retrain with 'edgewise train rul'.")),
])
def test_foreign_and_damaged_headers_are_named(tmp_path: Path, content: bytes,
                                               words: str) -> None:
    """Check each refusal names the file and what is wrong with it."""
    path = tmp_path / "x.rul"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=words):
        load_model(path)
