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

from edgewise.errors import InvalidParameterError
from edgewise.federated.model import build_model, predict, rmse, train_local

__all__ = ["personalise"]


def _loss(model: Any, kind: str, X: np.ndarray, y: np.ndarray | None) -> float:
    """Held-back RMSE: in cycles against ``y`` for ``"rul"``, of the reconstruction of
    ``X`` for ``"ae"`` (:func:`_check` made sure a ``"rul"`` one has its ``y``)."""
    if kind == "rul" and y is not None:
        return rmse(model, X, y)
    return float(np.sqrt(np.mean((predict(model, X) - X) ** 2)))


def _width(global_state: Mapping[str, Any]) -> int | None:
    """The number of inputs the model of ``global_state`` takes: the column count of its
    first layer's weight (``None`` where the state has no such weight)."""
    for key, value in global_state.items():
        if key.endswith("weight") and len(getattr(value, "shape", ())) == 2:
            return int(value.shape[1])
    return None


def _check(global_state: Mapping[str, Any], kind: str, X_train: np.ndarray,
           y_train: np.ndarray | None, X_held: np.ndarray, y_held: np.ndarray | None) -> None:
    """Refuse, naming the argument, what would make the RMSEs meaningless: a ``"rul"``
    model without its targets (judged as an autoencoder, its RUL in cycles minus the raw
    inputs, or a numpy broadcast error), rows of another width than the model's inputs,
    targets of another length than their rows, no rows at all, or a NaN or infinite value
    in the rows or targets (each gave a NaN RMSE and kept='global' without a word).

    >>> from edgewise.federated.model import build_model
    >>> g = build_model("rul", 3, seed=0).state_dict()
    >>> X = np.zeros((4, 3), np.float32)
    >>> try:
    ...     _check(g, "rul", X, np.zeros(4), X, None)
    ... except InvalidParameterError as e:
    ...     e.field
    'y_held'
    >>> try:
    ...     _check(g, "rul", X, np.zeros(4), X[:0], np.zeros(0))
    ... except InvalidParameterError as e:
    ...     e.field
    'X_held'
    """
    width = _width(global_state)
    for name, X in (("X_train", X_train), ("X_held", X_held)):
        shape = np.shape(X)
        if len(shape) != 2 or (width is not None and shape[1] != width):
            wanted = "" if width is None else f" of {width} columns, the global model's inputs"
            raise InvalidParameterError(
                f"personalise needs {name} as a 2-D array (rows x features){wanted}; "
                f"got shape {shape}.", field=name, value=shape)
        if shape[0] == 0:
            role = "to fine-tune on" if name == "X_train" else "to judge both models on"
            raise InvalidParameterError(
                f"personalise needs at least one row in {name} ({role}); got 0 rows.",
                field=name, value=shape)
        _finite(name, X)
    if kind != "rul":
        return
    for name, y, X_name, X in (("y_train", y_train, "X_train", X_train),
                               ("y_held", y_held, "X_held", X_held)):
        rows = len(X)
        if y is None:
            raise InvalidParameterError(
                f"personalise(kind='rul') needs {name}, the "
                f"{'training' if name == 'y_train' else 'held-back'} rows' remaining useful "
                f"life (one per row of {X_name}, {rows} rows); got None (only kind='ae' "
                "goes without targets).", field=name, value=None)
        if np.size(y) != rows:
            raise InvalidParameterError(
                f"personalise needs one {name} value per row of {X_name} ({rows} rows); "
                f"got {np.size(y)}.", field=name, value=np.shape(y))
        _finite(name, y)


def _finite(name: str, a: Any) -> None:
    """Refuse ``a`` (argument ``name``) holding a NaN or infinite value, saying how many
    rows and the first one.

    >>> _finite("X_held", np.array([[1.0, np.nan], [0.0, 1.0]]))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: personalise needs finite values in X_held; 1 of 2 rows hold a NaN or Inf (the first is row 0).
    """  # noqa: E501
    bad = ~np.isfinite(np.asarray(a, dtype=np.float64))
    if bad.ndim > 1:
        bad = bad.reshape(len(bad), -1).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InvalidParameterError(
            f"personalise needs finite values in {name}; {len(rows)} of {len(bad)} rows "
            f"hold a NaN or Inf (the first is row {int(rows[0])}).", field=name,
            value=len(rows))


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

    Raises :class:`~edgewise.errors.InvalidParameterError` naming the argument for a
    ``"rul"`` model without ``y_train`` or ``y_held``, targets of another length than their
    rows, ``X_train``/``X_held`` not 2-D with the global model's number of inputs or with
    no rows, a NaN or infinite value in any of them, or a ``global_state`` that is not a
    model of ``kind`` (torch's ``RuntimeError`` before).
    """
    _check(global_state, kind, X_train, y_train, X_held, y_held)
    model = build_model(kind, X_train.shape[1])
    try:
        model.load_state_dict(dict(global_state))
    except RuntimeError as exc:  # torch's page of missing keys and size mismatches
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(getattr(v, "shape", ())) for k, v in global_state.items()}
        raise InvalidParameterError(
            f"personalise(kind={kind!r}) needs global_state of a {kind!r} model of "
            f"{X_train.shape[1]} inputs, arrays {mine}; got {theirs}: a model of another "
            f"kind ('rul' or 'ae') or size ({type(exc).__name__} loading it).",
            field="kind", value=kind) from None
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = _loss(model, kind, X_held, y_held)
    train_local(model, X_train, y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    after = _loss(model, kind, X_held, y_held)
    better = bool(after < before)  # False for NaN: a diverged fine-tune is not kept
    return {"global_rmse": before, "personal_rmse": after,
            "kept": "personal" if better else "global",
            "state_dict": model.state_dict() if better else start}
