"""A small 1D convolutional network that reads a window of sensor rows (PyTorch, CPU).

Three convolutions over time, pooled (mean and last step), then a dense head that also
sees a vector of side features (the unit's age, window summaries), standardised with
the training mean and spread. It is kept small (a few thousand weights) so that it
trains in seconds on one core and runs on an edge device. Targets are scaled by
``target_scale`` for training only.

>>> rng = np.random.default_rng(0)
>>> seq = rng.normal(size=(256, 10, 3)).astype(np.float32)
>>> y = seq[:, -3:, 0].mean(axis=1) * 10 + 50
>>> net = CNNRegressor(epochs=20, batch_size=32, target_scale=50.0, random_state=0)
>>> net = net.fit(seq, np.zeros((256, 1)), y)
>>> bool(np.sqrt(np.mean((net.predict(seq, np.zeros((256, 1))) - y) ** 2)) < y.std())
True
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.params import Interval, validate_params

__all__ = ["CNNRegressor"]


def _inputs(seq: Any, side: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``seq`` as a 3-D float32 array ``(n, window, n_sensors)`` and ``side`` as a 2-D float
    array with a row per window (a 1-D ``side`` is one column); else an
    :class:`~edgewise.errors.InvalidParameterError` naming the array, its shape and what
    would do.

    >>> _inputs(np.zeros((4, 3, 2)), np.zeros(4), "fit")[1].shape
    (4, 1)
    >>> _inputs(np.zeros((4, 3)), np.zeros(4), "fit")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: CNNRegressor.fit needs seq as a 3-D array (n, window, n_sensors). Got shape (4, 3).
    """  # noqa: E501
    arr = np.asarray(seq, dtype=np.float32)
    if arr.ndim != 3:
        raise InvalidParameterError(
            f"CNNRegressor.{who} needs seq as a 3-D array (n, window, n_sensors). Got shape "
            f"{arr.shape}.", field="seq", value=arr.shape)
    extra = np.asarray(side, dtype=float)
    if extra.ndim == 1:
        extra = extra[:, None]
    if extra.ndim != 2 or len(extra) != len(arr):
        raise InvalidParameterError(
            f"CNNRegressor.{who} needs side as a 2-D array with a row per window ({len(arr)} "
            f"rows). Got shape {extra.shape}.", field="side", value=extra.shape)
    return arr, extra


def _finite(values: np.ndarray, name: str) -> None:
    """Refuse a non-finite value in a training array, naming the first (one NaN target
    made every weight, and so every prediction, NaN)."""
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if len(bad):
        at = int(bad[0])
        raise InvalidParameterError(
            f"CNNRegressor.fit needs finite values; {name} row {at} is not ({len(bad)} of "
            f"{len(values)} rows with a NaN or inf). Drop those rows first.", field=name,
            value=at)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside, and back to what they were after (the
    setting is process-wide: a fit must not leave the rest of the process on its count).

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with _torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build(n_sensors: int, n_side: int, channels: int, hidden: int, dropout: float = 0.0):
    import torch
    from torch import nn

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv1d(n_sensors, channels, 5, padding=2),
                nn.ReLU(),
                nn.Conv1d(channels, channels, 5, padding=2),
                nn.ReLU(),
                nn.Conv1d(channels, channels, 3, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(2 * channels + n_side, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, 1),
            )

        def forward(self, seq: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
            h = self.conv(seq.transpose(1, 2))  # batch, channels, time
            pooled = torch.cat([h.mean(dim=2), h[:, :, -1], side], dim=1)
            return self.head(pooled).squeeze(1)

    return _Net()


class CNNRegressor:
    """1D-CNN regression from ``(n, window, n_sensors)`` windows plus ``(n, k)`` side features.

    Parameters
    ----------
    channels, hidden
        Width of the convolutions and of the dense layer.
    epochs, batch_size, learning_rate, weight_decay
        AdamW with a one-cycle schedule over ``epochs`` passes.
    dropout
        Dropout before each dense layer (histories are few; the net memorises them).
    noise
        Standard deviation of Gaussian noise added to the windows while training.
    target_scale
        Targets are divided by this while training (e.g. the RUL cap).
    n_threads
        Torch CPU threads while fitting and predicting.
    random_state
        Seed of weights and batch order.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "channels": Interval(int, 1, None),
        "hidden": Interval(int, 1, None),
        "epochs": Interval(int, 1, None),
        "batch_size": Interval(int, 1, None),
        "learning_rate": Interval(float, 0.0, None, closed="neither"),
        "weight_decay": Interval(float, 0.0, None),
        "dropout": Interval(float, 0.0, 1.0, closed="left"),
        "noise": Interval(float, 0.0, None),
        "target_scale": Interval(float, 0.0, None, closed="neither"),
        "n_threads": Interval(int, 1, None),
        "random_state": [int, None],
    }

    def __init__(
        self,
        channels: int = 24,
        hidden: int = 32,
        epochs: int = 15,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-2,
        dropout: float = 0.2,
        noise: float = 0.0,
        target_scale: float = 100.0,
        n_threads: int = 1,
        random_state: int | None = 0,
    ) -> None:
        self.channels = channels
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.noise = noise
        self.target_scale = target_scale
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, seq: np.ndarray, side: np.ndarray, y: np.ndarray) -> CNNRegressor:
        """Train on windows ``seq``, side features ``side`` and targets ``y`` (on
        ``n_threads`` torch threads; the process's count, and its torch random state, are
        restored after)."""
        validate_params(self._parameter_constraints, vars(self), self)
        import torch

        # the seed is set on torch's process-wide generator (weights, dropout): forked, so
        # a fit does not leave the rest of the process on seed ``random_state`` (every
        # later torch.rand drew the same numbers after each fit)
        with _torch_threads(self.n_threads), torch.random.fork_rng(devices=[]):
            return self._fit(seq, side, y)

    def _fit(self, seq: np.ndarray, side: np.ndarray, y: np.ndarray) -> CNNRegressor:
        import torch

        seq, side = _inputs(seq, side, "fit")
        y = np.asarray(y, dtype=float)
        if y.shape != (len(seq),) or not len(seq):
            raise InvalidParameterError(
                f"CNNRegressor.fit needs y as a 1-D array with a target per window, at least "
                f"one ({len(seq)} windows). Got shape {y.shape}.", field="y", value=y.shape)
        for name, values in (("y", y), ("seq", seq), ("side", side)):
            _finite(values, name)
        seed = 0 if self.random_state is None else self.random_state
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        n, window, n_sensors = seq.shape
        self.side_mean_ = side.mean(axis=0)
        sd = side.std(axis=0)
        self.side_scale_ = np.where(sd > 0, sd, 1.0)
        self.window_, self.n_sensors_, self.n_side_ = window, n_sensors, side.shape[1]
        self.net_ = _build(n_sensors, self.n_side_, self.channels, self.hidden, self.dropout)
        xs = torch.as_tensor(seq)
        xa = self._side(side)
        yt = torch.as_tensor(y.astype(np.float32) / self.target_scale)
        opt = torch.optim.AdamW(
            self.net_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        steps = self.epochs * ((n + self.batch_size - 1) // self.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.learning_rate, total_steps=steps)
        self.net_.train()
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                xb = xs[idx]
                if self.noise > 0:
                    xb = xb + self.noise * torch.randn(xb.shape, generator=gen)
                loss = torch.nn.functional.mse_loss(self.net_(xb, xa[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.net_.eval()
        return self

    def _side(self, side: np.ndarray):
        import torch

        side = np.asarray(side, dtype=float).reshape(len(side), -1)
        return torch.as_tensor(((side - self.side_mean_) / self.side_scale_).astype(np.float32))

    def predict(self, seq: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Predicted targets for windows ``seq`` with side features ``side``."""
        import torch

        if not hasattr(self, "net_"):
            raise NotFittedError("This CNNRegressor is not fitted yet; call fit(seq, age, y).")
        seq, side = _inputs(seq, side, "predict")
        want = (self.window_, self.n_sensors_)
        if seq.shape[1:] != want:
            raise InvalidParameterError(
                f"CNNRegressor.predict needs windows of {self.window_} rows of "
                f"{self.n_sensors_} sensors, as in training: shape (n, {self.window_}, "
                f"{self.n_sensors_}). Got shape {seq.shape}.", field="seq", value=seq.shape)
        if side.shape[1] != self.n_side_:
            raise InvalidParameterError(
                f"CNNRegressor.predict needs {self.n_side_} side column(s), as in training. "
                f"Got shape {side.shape}.", field="side", value=side.shape)
        with _torch_threads(self.n_threads), torch.no_grad():
            xs = torch.as_tensor(seq)
            xa = self._side(side)
            out = [
                self.net_(xs[i : i + 4096], xa[i : i + 4096]).numpy()
                for i in range(0, len(xs), 4096)
            ]
        return np.concatenate(out).astype(float) * self.target_scale if out else np.zeros(0)

    @property
    def n_weights_(self) -> int:
        """Number of trainable weights."""
        return sum(p.numel() for p in self.net_.parameters())

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if "net_" in state:
            import torch

            buf = io.BytesIO()
            torch.save(state.pop("net_").state_dict(), buf)
            state["_net_bytes"] = buf.getvalue()
        return state

    def __setstate__(self, state: dict) -> None:
        raw = state.pop("_net_bytes", None)
        self.__dict__.update(state)
        if raw is not None:
            import torch

            self.net_ = _build(
                self.n_sensors_, self.n_side_, self.channels, self.hidden, self.dropout
            )
            self.net_.load_state_dict(torch.load(io.BytesIO(raw), weights_only=True))
            self.net_.eval()
