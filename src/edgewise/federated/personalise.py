"""Personalisation: each device fine-tunes the global model on its own data.

Transfer learning at the edge: start from the federated global model, train a few more
epochs on the device's own history (small learning rate), and keep whichever of the two
does better on the device's held-back data.

>>> import numpy as np
>>> from edgewise.federated.model import build_model
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)).astype(np.float32); y = (40 * X[:, 0] + 60).astype(np.float32)
>>> g = build_model("rul", 3, seed=0).state_dict()
>>> r = personalise(g, "rul", X[:150], y[:150], X[150:], y[150:], epochs=30, lr=0.01)
>>> r["personal_rmse"] < r["global_rmse"], r["kept"]
(True, 'personal')
>>> bad = personalise(g, "rul", X[:150], y[:150], X[150:], y[150:], epochs=30, lr=50.0)
>>> bad["personal_rmse"] > bad["global_rmse"], bad["kept"]   # fine-tuning diverged
(True, 'global')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgewise.federated.model import build_model, predict, rmse, train_local

__all__ = ["personalise"]


def _loss(model: Any, kind: str, X: np.ndarray, y: np.ndarray | None) -> float:
    if kind == "rul" and y is not None:
        return rmse(model, X, y)
    return float(np.sqrt(np.mean((predict(model, X) - X) ** 2)))


def personalise(
    global_state: Mapping[str, Any],
    kind: str,
    X_train: np.ndarray,
    y_train: np.ndarray | None,
    X_held: np.ndarray,
    y_held: np.ndarray | None,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of the global model on one device; keep whichever of the global and
    the fine-tuned model does better on the held-back data.

    Returns ``{"global_rmse", "personal_rmse", "kept", "state_dict"}``: the held-back RMSE
    of both models (in cycles for ``"rul"``, reconstruction RMSE for ``"ae"``), which was
    kept (``"personal"`` only when its RMSE is lower; ``"global"`` otherwise, also when
    fine-tuning diverged to a non-finite RMSE), and the kept model's state.
    """
    model = build_model(kind, X_train.shape[1])
    model.load_state_dict(dict(global_state))
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = _loss(model, kind, X_held, y_held)
    train_local(model, X_train, y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    after = _loss(model, kind, X_held, y_held)
    better = bool(after < before)  # False for NaN: a diverged fine-tune is not kept
    return {"global_rmse": before, "personal_rmse": after,
            "kept": "personal" if better else "global",
            "state_dict": model.state_dict() if better else start}
