"""``personalise(kind="rul", ...)`` without ``y_train`` or ``y_held`` fell back to the
autoencoder's loss (the RUL in cycles minus the raw inputs): a numpy broadcast ValueError,
or, with as many held-back rows as features, no error at all and a ``kept`` decision made
on meaningless RMSEs. It now refuses, naming the missing argument, as it refuses rows of
another width than the global model's inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.errors import InvalidParameterError
from edgewise.federated.model import build_model
from edgewise.federated.personalise import personalise

torch.set_num_threads(1)

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 3)).astype(np.float32)
y = (40 * X[:, 0] + 60).astype(np.float32)
STATE = build_model("rul", 3, seed=0).state_dict()


@pytest.mark.parametrize(("held", "missing"), [
    ((X[:40], None, X[40:], y[40:]), "y_train"),
    ((X[:40], None, X[40:], None), "y_train"),
    ((X[:40], y[:40], X[40:], None), "y_held"),
    ((X[:40], y[:40], X[40:43], None), "y_held"),  # 3 rows, 3 features: no error before
])
def test_a_rul_model_without_targets_is_refused_naming_them(held, missing):
    """Check a missing y_train or y_held is named, never judged as an autoencoder."""
    with pytest.raises(InvalidParameterError, match=rf"needs {missing}\b") as exc:
        personalise(STATE, "rul", *held, epochs=1, lr=0.01)
    assert exc.value.field == missing


def test_held_back_rows_of_another_width_are_refused():
    """Check X_held of 4 columns for a model of 3 inputs is named with both widths."""
    X4 = rng.normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(InvalidParameterError, match=r"X_held .* of 3 columns.*\(20, 4\)") as e:
        personalise(STATE, "rul", X[:40], y[:40], X4, y[:20], epochs=1, lr=0.01)
    assert e.value.field == "X_held"


def test_targets_of_another_length_are_refused():
    """Check a y_held of 1 value for 20 rows (numpy broadcast it silently) is named."""
    with pytest.raises(InvalidParameterError, match=r"one y_held value per row") as e:
        personalise(STATE, "rul", X[:40], y[:40], X[40:], y[:1], epochs=1, lr=0.01)
    assert e.value.field == "y_held"


def test_an_autoencoder_still_goes_without_targets():
    """Check kind='ae' needs no y and still returns both RMSEs."""
    state = build_model("ae", 3, seed=0).state_dict()
    out = personalise(state, "ae", X[:40], None, X[40:], None, epochs=1, lr=0.01)
    assert np.isfinite(out["global_rmse"]) and out["kept"] in ("global", "personal")


@pytest.mark.parametrize(("args", "field"), [
    ((X[:40], y[:40], X[:0], y[:0]), "X_held"),  # no held-back rows: NaN RMSEs before
    ((X[:0], y[:0], X[40:], y[40:]), "X_train"),  # nothing to fine-tune on
    ((X[:40], y[:40], np.where(np.arange(20)[:, None] == 3, np.nan, X[40:]), y[40:]),
     "X_held"),
    ((np.where(np.arange(40)[:, None] == 3, np.inf, X[:40]), y[:40], X[40:], y[40:]),
     "X_train"),
    ((X[:40], y[:40], X[40:], np.where(np.arange(20) == 5, np.nan, y[40:])), "y_held"),
])
def test_empty_or_non_finite_rows_are_refused_naming_them(args, field):
    """An empty or NaN held-back set gave global and personal RMSE NaN and kept='global'
    without a word; each is refused naming the argument."""
    with pytest.raises(InvalidParameterError, match=field) as info:
        personalise(STATE, "rul", *args, epochs=1, lr=0.01)
    assert info.value.field == field
