"""How a batch model is written to disk: one format for the RUL, forecast and groups files.

A model file is a magic line naming its kind, one JSON header line (readable without
loading the model: version, what it was trained on, checksums) and the body. It is written
whole or not at all: to a temporary file beside the target (``.<name>.<pid>.<thread>.tmp``,
which no glob of model names picks up), synced, then renamed over it, so a reader never sees
half a model and a failed save leaves the old file as it was.

>>> import tempfile
>>> f = Path(tempfile.mkdtemp()) / "m.model"
>>> write_model_file(f, b"EDGEWISE-DEMO\\n", {"format_version": 1}, b"body")
40
>>> f.read_bytes()
b'EDGEWISE-DEMO\\n{"format_version": 1}\\nbody'
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["write_model_file"]


def write_model_file(path: str | Path, magic: bytes, header: dict[str, Any],
                     body: bytes) -> int:
    """Write ``magic``, ``header`` as one JSON line (keys sorted) and ``body`` to ``path``,
    durably and atomically (module doc); the file's mode is 0666 less the umask, as a plain
    write would make it. Returns the number of bytes written."""
    data = magic + json.dumps(header, sort_keys=True).encode() + b"\n" + body
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(data)
