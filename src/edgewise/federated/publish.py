"""Keep each federated global model as a versioned file with its metadata.

The signed model registry (``edgewise.registry``, Ed25519) is built on another branch;
until it lands, :func:`publish_global_model` writes
``<data_dir>/models/<name>/v<N>.npz`` (the parameters) and ``v<N>.json`` (ε, δ, privacy
unit, strategy, rounds, fleet size, normaliser, SHA-256 of the parameters file). The
registry will take the same arguments and add the signature.

>>> import tempfile, torch
>>> d = Path(tempfile.mkdtemp())
>>> p = publish_global_model({"w": torch.zeros(2)}, d, "demo", {"rounds": 2})
>>> p.name, json.loads(p.with_suffix(".json").read_text())["version"]
('v1.npz', 1)
>>> publish_global_model({"w": torch.ones(2)}, d, "demo", {}).name
'v2.npz'
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import InvalidParameterError

__all__ = ["load_global_model", "publish_global_model"]


def publish_global_model(
    state_dict: Mapping[str, Any],
    data_dir: str | Path,
    name: str,
    metadata: Mapping[str, Any],
) -> Path:
    """Write the next version of model ``name``; return the parameters file's path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise InvalidParameterError(
            f"The 'name' parameter of publish_global_model must be 1-64 letters, digits, "
            f"'.', '_' or '-'. Got {name!r} instead."
        )
    folder = Path(data_dir) / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    versions = [int(p.stem[1:]) for p in folder.glob("v*.npz") if p.stem[1:].isdigit()]
    version = max(versions, default=0) + 1
    path = folder / f"v{version}.npz"
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
              for k, v in state_dict.items()}
    np.savez(path, **arrays)
    meta = dict(metadata)
    meta.update({
        "name": name, "version": version, "created_utc": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source": "federated",
    })
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    return path


def load_global_model(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a published model back: (state_dict of torch tensors, metadata)."""
    import torch

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if hashlib.sha256(path.read_bytes()).hexdigest() != meta["sha256"]:
        raise InvalidParameterError(f"Model file {path} does not match its recorded SHA-256.")
    with np.load(path) as z:
        return {k: torch.as_tensor(z[k]) for k in z.files}, meta
