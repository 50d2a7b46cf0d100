"""One reader for the RUL, forecast and groups model files: a damaged body is refused before
it is deserialised; RUL files saved before the checksum are refused unless loaded
``unchecked`` (to re-save them with one)."""

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


def _unchecked(saved: Path, path: Path, cut: int = 0) -> Path:
    """``saved`` as a format-2 file from before the checksum (no body_sha256), its body
    less its last ``cut`` bytes."""
    head, body = _split(saved.read_bytes())
    doc = json.loads(head[len(MAGIC):])
    del doc["body_sha256"]
    path.write_bytes(MAGIC + json.dumps(doc).encode() + b"\n" + body[:len(body) - cut])
    return path


def test_a_rul_file_without_a_checksum_is_refused_naming_what_to_do(
        saved: Path, tmp_path: Path) -> None:
    """Check a format-2 file saved before the checksum (no body_sha256) is refused before
    unpickling, naming the file and saying to retrain or re-save it (before: it was unpickled
    unchecked, and a damaged body made LightGBM abort the whole process, 5 of 120 one-byte
    changes: the CLI exited 134 and the server's RUL route died)."""
    old = _unchecked(saved, tmp_path / "old.rul")
    with pytest.raises(ModelFileError) as caught:
        load_model(old)
    msg = str(caught.value)
    assert f"RUL model file {str(old)!r} has no checksum" in msg
    assert "retrain with 'edgewise train rul'" in msg
    assert "load_model(path, unchecked=True).save(path)" in msg
    assert read_header(old)["kind"] == "RULModel"  # the header still reads


def test_a_trusted_rul_file_without_a_checksum_loads_unchecked_and_resaves_with_one(
        saved: Path, tmp_path: Path) -> None:
    """Check ``unchecked=True`` loads a whole file without a checksum, predicting as the
    checked one does, and that saving it again writes a checksum (so it then loads as any);
    a cut one is still refused as damaged."""
    old = _unchecked(saved, tmp_path / "old.rul")
    data = fleet(3, seed=5)
    model = load_model(old, unchecked=True)
    assert model.predict(data).equals(load_model(saved).predict(data))
    model.save(old)
    assert "body_sha256" in read_header(old)
    assert load_model(old).predict(data).equals(load_model(saved).predict(data))
    cut = _unchecked(saved, tmp_path / "cut.rul", cut=40)
    with pytest.raises(ModelFileError, match="is damaged or truncated"):
        load_model(cut, unchecked=True)


def test_a_body_that_raises_memoryerror_while_unpickled_is_one_clear_error(
        tmp_path: Path) -> None:
    """Check a body whose checksum matches but whose pickle claims 2**62 bytes (MemoryError
    while unpickled) raises ModelFileError naming the file, and ``predict rul`` prints one
    line (before: the MemoryError escaped load_model and the CLI printed a traceback)."""
    from edgewise.models.model_file import write_model_file
    from tests.in_process import edgewise_here as edgewise

    bad = tmp_path / "huge.rul"
    write_model_file(bad, MAGIC, {"format_version": 2},
                     b"\x80\x05\x8e" + (2**62).to_bytes(8, "little"))
    with pytest.raises(ModelFileError, match=r"huge\.rul' is damaged or truncated "
                       r"\(MemoryError"):
        load_model(bad)
    fleet(2, seed=3).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(bad), "--data", str(tmp_path / "n.csv"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is damaged or truncated (MemoryError" in done.stderr


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
