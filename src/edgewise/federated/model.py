"""The small PyTorch models a fleet trains together, and the local training step.

Two kinds share one code path (an MLP trained on mean squared error):

* ``"rul"``: a regressor from C-MAPSS window features to remaining useful life (cycles);
* ``"ae"``: an autoencoder over normalised multivariate readings (the learnable part of
  the multivariate detector); its reconstruction error is the anomaly score.

Parameters travel as Flower ``ArrayRecord`` (a PyTorch ``state_dict``), never as data.

>>> m = build_model("rul", n_features=4, seed=0)
>>> X = np.ones((8, 4), np.float32); y = np.full(8, 50.0, np.float32)
>>> loss = train_local(m, X, y, epochs=100, lr=0.01, seed=0)
>>> abs(float(predict(m, X)[0]) - 50.0) < 5
True
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from edgewise.errors import InvalidParameterError

__all__ = ["KIND_ATTR", "RUL_SCALE", "build_model", "predict", "rmse", "train_local"]

#: RUL targets are scaled by this before training (outputs are scaled back).
RUL_SCALE = 100.0
#: Attribute of a :func:`build_model` model naming its kind (``"rul"`` or ``"ae"``).
KIND_ATTR = "edgewise_kind"


def build_model(kind: str, n_features: int, seed: int = 0, hidden: int = 32) -> nn.Module:
    """A fresh model of ``kind`` (``"rul"`` or ``"ae"``) for ``n_features`` inputs.

    The weights depend on ``seed`` only; the process-wide torch RNG is left as it was (a
    reseed here would make every later draw, DP noise included, replay the same stream).
    The kind is recorded on the model (attribute :data:`KIND_ATTR`), which
    :func:`train_local` and :func:`predict` follow: an ``"ae"`` over one channel ends in one
    output like a ``"rul"`` model, so the layers cannot tell. It is a plain attribute, not a
    buffer: it stays out of the ``state_dict`` that rounds average and the registry and
    checkpoints store, and every load rebuilds the model here before loading that state.

    >>> m = build_model("ae", n_features=1)
    >>> getattr(m, KIND_ATTR), m[-1].out_features
    ('ae', 1)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _layers(kind, n_features, hidden)
    setattr(model, KIND_ATTR, kind)
    return model


def _layers(kind: str, n_features: int, hidden: int) -> nn.Module:
    if kind == "rul":
        return nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )
    if kind == "ae":
        bottleneck = max(2, n_features // 2)
        return nn.Sequential(
            nn.Linear(n_features, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, bottleneck),
            nn.Tanh(), nn.Linear(bottleneck, hidden // 2), nn.Tanh(),
            nn.Linear(hidden // 2, n_features),
        )
    raise InvalidParameterError(
        f"The 'kind' parameter of build_model must be one of 'rul', 'ae'. Got {kind!r} instead."
    )


def _kind(model: nn.Module) -> str:
    """The kind :func:`build_model` recorded on ``model``; for a model built otherwise (no
    record) the old guess from the last layer's width: one output is ``"rul"``."""
    kind = getattr(model, KIND_ATTR, None)
    if kind in ("rul", "ae"):
        return str(kind)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return "rul" if last.out_features == 1 else "ae"


def train_local(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray | None = None,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    dp_noise_multiplier: float = 0.0,
    dp_max_grad_norm: float = 1.0,
) -> float:
    """Train ``model`` in place on one device's data; return the mean training loss.

    With ``dp_noise_multiplier > 0`` training is record-level DP-SGD through Opacus
    (per-sample gradients clipped to ``dp_max_grad_norm``, Gaussian noise, Poisson
    sampling with Opacus's rate 1/⌈len(X)/batch_size⌉ and ⌊1/rate⌋ steps an epoch); the ε
    it costs is computed by :func:`edgewise.federated.privacy.dp_sgd_epsilon` from the same
    numbers (:func:`~edgewise.federated.privacy.opacus_sampling`), every one of those
    steps taken, an empty Poisson batch too (noise alone, as Opacus does). The noise and
    the Poisson sample are drawn from generators seeded from the OS's entropy on every call,
    never from ``seed``: noise that anyone knowing the seed could replay and subtract would
    protect nothing, and noise shared between devices would not average out. (Opacus's
    ``secure_mode`` would use a cryptographic generator; it needs ``torchcsprng``.)
    """
    # a NaN noise multiplier failed "> 0" and trained without DP-SGD, silently
    if not 0 <= float(dp_noise_multiplier) < math.inf:
        raise InvalidParameterError(
            "train_local needs dp_noise_multiplier a finite number >= 0 (0: no DP-SGD). Got "
            f"{dp_noise_multiplier!r} instead.")
    kind = _kind(model)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    if kind == "rul":
        if y is None:
            raise InvalidParameterError("train_local needs targets y for a 'rul' model.")
        yt = torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1) / RUL_SCALE
    else:
        yt = Xt
    opt: Any = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    module: nn.Module = model
    if dp_noise_multiplier > 0:
        import secrets

        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader

        def entropy() -> torch.Generator:
            return torch.Generator().manual_seed(secrets.randbits(63))

        loader = DPDataLoader.from_data_loader(
            torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(Xt, yt), batch_size=batch_size
            ),
            generator=entropy(),
        )
        with warnings.catch_warnings():  # "secure RNG off": see the docstring
            warnings.filterwarnings("ignore", category=UserWarning, module="opacus")
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            module, opt, loader = engine.make_private(
                module=model, optimizer=opt, data_loader=loader,
                noise_multiplier=dp_noise_multiplier, max_grad_norm=dp_max_grad_norm,
                poisson_sampling=False, noise_generator=entropy(),
            )
        batches = lambda: iter(loader)  # noqa: E731
    else:
        gen = torch.Generator().manual_seed(seed)  # `seed` drives the shuffle only

        def batches() -> Any:
            perm = torch.randperm(len(Xt), generator=gen)
            for i in range(0, len(Xt), batch_size):
                idx = perm[i : i + batch_size]
                yield Xt[idx], yt[idx]

    module.train()
    total, n = 0.0, 0
    with warnings.catch_warnings():  # Opacus' per-sample hooks on input layers: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for xb, yb in batches():
                if len(xb) == 0 and dp_noise_multiplier <= 0:
                    continue
                opt.zero_grad()
                out = module(xb)
                # a Poisson batch can be empty: DP-SGD still takes the step, noise alone
                # (Opacus's contract, and the step the accountant counts); skipping it left
                # the model exactly unchanged, which noise never does, so an empty batch
                # showed (batch 1 of 3 records: 30% of the steps skipped)
                loss = loss_fn(out, yb) if len(xb) else out.sum() * 0.0
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
                n += len(xb)
    if dp_noise_multiplier > 0:
        model.load_state_dict(module._module.state_dict())  # unwrap GradSampleModule
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """RUL in cycles (``"rul"``) or the reconstruction (``"ae"``) for each row of ``X``."""
    model.eval()
    out = model(torch.as_tensor(X, dtype=torch.float32)).numpy()
    return out.reshape(-1) * RUL_SCALE if _kind(model) == "rul" else out


def rmse(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error of a ``"rul"`` model's predictions, in cycles.

    ``y`` holds one target per row of ``X``, in any shape of that size: a column ``(n, 1)``
    (a DataFrame's ``df[["rul"]].values``) was broadcast against the ``(n,)`` predictions
    into an ``n × n`` table of every prediction against every target (an RMSE of 40.5 for a
    model at 1.5). One of another size raises
    :class:`~edgewise.errors.InvalidParameterError`.

    >>> m = build_model("rul", 3, seed=0)
    >>> rmse(m, np.zeros((2, 3), np.float32), np.zeros(2, np.float32)) >= 0
    True
    >>> rmse(m, np.zeros((2, 3)), np.zeros((2, 1))) == rmse(m, np.zeros((2, 3)), np.zeros(2))
    True
    """
    pred = predict(model, X)
    target = np.asarray(y, dtype=np.float64).reshape(-1)
    if target.shape != pred.shape:
        raise InvalidParameterError(
            f"rmse needs one target per row of X ({len(pred)} rows); got {target.size} "
            f"targets (shape {np.shape(y)}).", field="y", value=np.shape(y))
    return float(np.sqrt(np.mean((pred - target) ** 2)))
