"""How a batch model is written to and read from disk: one format for the RUL, forecast and
groups files.

A model file is a magic line naming its kind, one JSON header line (readable without
loading the model: version, what it was trained on, the SHA-256 of the body) and the body.
:func:`read_model_file` checks the kind, the version and the checksum before anything
deserialises the body (a flipped bit in a pickle can crash the process or load a silently
different model), and refuses with one error naming the file and what to do. It is written
whole or not at all: to a temporary file beside the target (``.<name>.<pid>.<thread>.<hex>
.tmp``, which no glob of model names picks up), synced, then renamed over it, and the folder
synced (:func:`~edgewise._private.replace_atomically`), so a reader never sees half a model
and a failed save leaves the old file as it was.

>>> import tempfile
>>> f = Path(tempfile.mkdtemp()) / "m.model"
>>> write_model_file(f, b"EDGEWISE-DEMO\\n", {"format_version": 1}, b"body")
123
>>> read_model_file(f, b"EDGEWISE-DEMO\\n", ValueError, what="demo model", version=1,
...                 remedy="fit it again")[1]
b'body'
>>> _ = f.write_bytes(f.read_bytes()[:-1] + b"x")
>>> read_model_file(f, b"EDGEWISE-DEMO\\n", ValueError, what="demo model", version=1,
...                 remedy="fit it again")
Traceback (most recent call last):
...
ValueError: Demo model file '...m.model' is damaged or truncated (its body does not match
its checksum); copy it again or fit it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgewise._private import replace_atomically

__all__ = ["MAX_HEADER_BYTES", "read_model_file", "read_model_header", "write_model_file"]

#: The longest header line (its newline included) a reader accepts: a file whose header
#: line is longer (a damaged newline runs it into the body) is refused after reading this
#: much, never read whole. A RUL header grows about 480 bytes per sensor with 59-character
#: names (sensor, condition and feature names), so this allows some 8,800 such sensors; the
#: forecast and groups headers are a few hundred bytes.
MAX_HEADER_BYTES = 4 * 2**20


def json_number(value: Any) -> Any:
    """``json.dumps``' ``default`` for a model file: a NumPy scalar (a parameter given as
    ``np.int64(5)`` or ``np.float32(0.1)``, which the parameter checks take) as the Python
    number it holds; anything else is refused as ``json`` refuses it.

    >>> json.dumps({"cap": np.float32(0.5), "k": np.int64(3)}, default=json_number)
    '{"cap": 0.5, "k": 3}'
    """
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_model_file(path: str | Path, magic: bytes, header: dict[str, Any],
                     body: bytes) -> int:
    """Write ``magic``, ``header`` with the body's ``body_sha256`` as one JSON line (keys
    sorted) and ``body`` to ``path``, durably and atomically (module doc); the file's mode is
    0666 less the umask, as a plain write would make it. Returns the number of bytes
    written."""
    header = {**header, "body_sha256": hashlib.sha256(body).hexdigest()}
    data = magic + json.dumps(header, sort_keys=True, default=json_number).encode() + b"\n" + body
    replace_atomically(path, data, mode=0o666)
    return len(data)


def _read_header(fh: BinaryIO, path: str | Path, magic: bytes, error: type[Exception],
                 what: str) -> dict[str, Any]:
    if fh.read(len(magic)) != magic:
        raise error(f"File {str(path)!r} is not an Edgewise {what} file (it does not start "
                    f"with {magic.decode(errors='replace').strip()}).")
    line = fh.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise error(f"File {str(path)!r} has a damaged header: its header line has no end "
                    f"within {MAX_HEADER_BYTES >> 20} MiB (an Edgewise {what} file's header "
                    f"is one JSON line of at most {MAX_HEADER_BYTES >> 20} MiB); copy the "
                    "file again or write it anew.")
    try:
        head = json.loads(line)
    except RecursionError:
        raise error(f"File {str(path)!r} has a damaged header: its JSON nests too deeply to "
                    f"read (an Edgewise {what} file's header is one flat JSON object); copy "
                    "the file again or write it anew.") from None
    except ValueError as exc:
        raise error(f"File {str(path)!r} has a damaged header: {exc}.") from None
    if not isinstance(head, dict):
        raise error(f"File {str(path)!r} has a damaged header: not a JSON object.")
    return head


def read_model_header(path: str | Path, magic: bytes, error: type[Exception], *,
                      what: str) -> dict[str, Any]:
    """The JSON header of a model file of kind ``magic``, without reading its body; a file
    of another kind or with a damaged header (not a JSON object, nested too deeply to read, or
    a line longer than :data:`MAX_HEADER_BYTES`, of which no more is read) raises ``error``
    naming it."""
    with open(path, "rb") as fh:
        return _read_header(fh, path, magic, error, what)


def read_model_file(path: str | Path, magic: bytes, error: type[Exception], *, what: str,
                    version: int, remedy: str, unchecked_ok: bool = False,
                    unchecked_remedy: str | None = None) -> tuple[dict[str, Any], bytes]:
    """The header and the checked body of a model file of kind ``magic`` and format
    ``version``; anything else raises ``error`` naming the file, what is wrong and
    ``remedy`` (what to do: "retrain with 'edgewise train rul'").

    The body must match the header's ``body_sha256``. A header without one (a RUL file
    saved before model files carried a checksum) is refused: a damaged body cannot be told
    from a whole one, and unpickling one can abort the process (LightGBM), naming
    ``unchecked_remedy`` (else ``remedy``) as what to do. ``unchecked_ok`` reads such a file
    unchecked, for a caller who trusts it and re-saves it at once.
    """
    name = what[:1].upper() + what[1:]
    with open(path, "rb") as fh:
        head = _read_header(fh, path, magic, error, what)
        found = head.get("format_version")
        if found != version:
            raise error(f"{name} file {str(path)!r} has format version "
                        f"{found!r}; this Edgewise reads version {version}. "
                        f"{remedy[:1].upper()}{remedy[1:]}.")
        body = fh.read()
    expected = head.get("body_sha256")
    if expected is None:
        if unchecked_ok:
            return head, body
        raise error(f"{name} file {str(path)!r} has no checksum (its header has no "
                    "body_sha256: saved before model files carried one, or its header was "
                    "edited), "
                    "so a damaged copy cannot be told from a whole one and reading it could "
                    f"crash the process; {unchecked_remedy or remedy}.")
    if hashlib.sha256(body).hexdigest() != expected:
        raise error(f"{name} file {str(path)!r} is damaged or truncated "
                    f"(its body does not match its checksum); copy it again or {remedy}.")
    return head, body
