from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.linear_model import LogisticRegression

from edgewise.bench.active import pump_fleet
from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.label.semi_supervised import FaultClassifier


def _few_labels(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full(len(y), -1, dtype=object)
    for c in np.unique(y):
        idx = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        out[idx] = y[idx]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_label_spreading_follows_the_shape_of_the_data(seed: int) -> None:
    X, y = make_moons(400, noise=0.05, random_state=seed)
    names = np.array(["normal", "cavitation"], dtype=object)[y]
    few = _few_labels(names, 3, seed)
    clf = FaultClassifier(random_state=0).fit(X, few)
    unl = few == -1
    acc = (clf.transduction_[unl] == names[unl]).mean()
    sup = LogisticRegression().fit(X[~unl], names[~unl].astype(str))
    acc_sup = (sup.predict(X[unl]) == names[unl]).mean()
    assert acc >= 0.97
    assert acc > acc_sup + 0.05   # the unlabelled windows are what makes the difference


def test_fault_types_on_simulated_pumps() -> None:
    ds = pump_fleet(n_pumps=12, seed=3)
    faulty = ds.fault != "normal"
    X, y = ds.windows.features[faulty], ds.fault[faulty]
    few = _few_labels(y, 3, 0)
    unl = few == -1
    for method in ("label_spreading", "self_training"):
        clf = FaultClassifier(method=method, random_state=0).fit(X, few)
        acc = (clf.predict(X[unl]) == y[unl]).mean()
        chance = max((y[unl] == c).mean() for c in np.unique(y))
        assert acc > chance + 0.1, (method, acc, chance)
        assert set(clf.classes_) == set(np.unique(y))
        assert np.allclose(clf.predict_proba(X[:5]).sum(axis=1), 1.0)


def test_conventions() -> None:
    with pytest.raises(NotFittedError):
        FaultClassifier().predict([[0.0]])
    with pytest.raises(InvalidParameterError, match="'method' parameter"):
        FaultClassifier(method="magic").fit([[0.0], [1.0]], ["a", -1])
    with pytest.raises(InvalidParameterError, match="at least one labelled"):
        FaultClassifier().fit([[0.0], [1.0]], [-1, None])
    clf = FaultClassifier(n_neighbors=3)
    assert clf.get_params()["n_neighbors"] == 3
    one = FaultClassifier().fit([[0.0], [1.0], [2.0]], ["normal", -1, -1])
    assert one.predict([[5.0]]).tolist() == ["normal"]
