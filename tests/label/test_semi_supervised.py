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


def _two_clouds() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(0, 0.3, (50, 2)), rng.normal(3, 0.3, (50, 2))])


def test_integer_labels_come_back_as_integers() -> None:
    """Check 0/1 labels are given back as 0/1 (they became '0'/'1': ``predict(X) == 1``
    found nothing and ``score`` against the true labels raised)."""
    X = _two_clouds()
    y = np.full(100, -1)
    y[:5], y[50:55] = 0, 1
    clf = FaultClassifier(random_state=0).fit(X, y)
    truth = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert clf.classes_.tolist() == [0, 1] and clf.classes_.dtype.kind == "i"
    assert int((clf.predict(X) == 1).sum()) == 50
    assert clf.score(X, truth) == 1.0


def test_nan_and_none_are_unlabelled_not_a_class() -> None:
    """Check NaN (an empty cell of a pandas column) and None mark unlabelled rows, as -1
    does (NaN became a class 'nan' that half the windows were predicted as)."""
    X = _two_clouds()
    y = np.array(["normal"] * 3 + [np.nan] * 47 + ["leak"] * 3 + [None] * 47, dtype=object)
    clf = FaultClassifier(random_state=0).fit(X, y)
    assert clf.classes_.tolist() == ["leak", "normal"]
    assert set(clf.predict(X).tolist()) == {"leak", "normal"}
    floats = np.where(np.arange(100) % 50 < 3, np.arange(100) // 50, np.nan)  # 0.0, 1.0, NaN
    clf = FaultClassifier(random_state=0).fit(X, floats)
    assert clf.classes_.tolist() == [0.0, 1.0] and clf.score(X, np.arange(100) // 50) == 1.0


def test_minus_one_and_nan_written_as_text_are_unlabelled_not_a_class() -> None:
    """Check -1 and NaN that numpy turned into the text "-1" and "nan" (an array that also
    holds text labels), or a file's label column read as text, mark unlabelled rows:
    "-1" became a class that every window was predicted as."""
    import io

    import pandas as pd

    X = _two_clouds()
    y = np.array(["normal"] * 3 + [-1] * 47 + ["leak"] * 3 + [-1] * 46 + [np.nan])
    assert y[3] == "-1" and y[-1] == "nan"  # numpy wrote them as text
    clf = FaultClassifier(random_state=0).fit(X, y)
    assert clf.classes_.tolist() == ["leak", "normal"]
    assert clf.predict(X).tolist() == ["normal"] * 50 + ["leak"] * 50
    text = "label\n" + "normal\n" * 3 + "-1\n" * 47 + "leak\n" * 3 + " -1.0 \n" * 47
    col = pd.read_csv(io.StringIO(text), dtype=str)["label"].to_numpy()
    assert FaultClassifier(random_state=0).fit(X, col).classes_.tolist() == ["leak", "normal"]
    with pytest.raises(InvalidParameterError, match="None of the 3 rows is labelled"):
        FaultClassifier().fit(X[:3], np.array(["-1", "nan", ""]))


@pytest.mark.parametrize("method", ["label_spreading", "self_training"])
@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_features_near_1e200_or_1e_minus_200_classify_as_ordinary_ones(scale: float,
                                                                        method: str) -> None:
    """Check the classes do not depend on the features' scale: the variance of features
    near 1e-200 underflowed to 0 (the column left unscaled: every window one point, all
    predicted 'normal'), and near 1e200 it overflowed (sklearn's "Input X contains NaN")."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 0.3, (50, 2)) for c in ([0, 0], [3, 0], [0, 3])])
    y = np.full(150, -1, dtype=object)
    y[[0, 50, 100]] = ["normal", "cavitation", "seal_leak"]
    want = FaultClassifier(method=method, random_state=0).fit(X, y).predict(X)
    clf = FaultClassifier(method=method, random_state=0).fit(X * scale, y)
    assert clf.predict(X * scale).tolist() == want.tolist()
    assert clf.predict(X[[60, 110]] * scale).tolist() == ["cavitation", "seal_leak"]


def test_random_state_takes_a_numpy_integer() -> None:
    """A seed drawn from a numpy array (np.int64) was refused as "must be an instance of
    int or None"; any whole number is a seed, text still is not."""
    X = [[0.0], [0.1], [3.0], [3.1]]
    clf = FaultClassifier(random_state=np.int64(3)).fit(X, [0, -1, 1, -1])
    assert clf.predict([[0.05], [3.05]]).tolist() == [0, 1]
    with pytest.raises(InvalidParameterError, match=r"'random_state'.*Got 'x'"):
        FaultClassifier(random_state="x").fit(X, [0, -1, 1, -1])  # type: ignore[arg-type]


@pytest.mark.parametrize("per_cluster", [2, 4, 8])
def test_few_windows_keep_their_clusters_classes(per_cluster: int) -> None:
    """Label spreading over a few windows (a device's alarms) linked each window to nearly
    every other (10 neighbours of at most 16), spreading the labels evenly: every window,
    and every window predicted, took one class, whatever cluster it lay in."""
    X = np.r_[np.linspace(0, 0.2, per_cluster), np.linspace(3, 3.2, per_cluster)][:, None]
    y = np.full(len(X), -1, dtype=object)
    y[[0, per_cluster]] = ["cavitation", "seal_leak"]
    clf = FaultClassifier().fit(X, y)
    assert clf.transduction_.tolist() == ["cavitation"] * per_cluster + ["seal_leak"] * per_cluster
    assert clf.predict([[0.1], [3.1]]).tolist() == ["cavitation", "seal_leak"]


def test_train_with_labels_classifies_unlabelled_alarms_by_their_look(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A device with seven alarms, three spikes up and four dips, one of each labelled:
    every unlabelled dip was classed "spike" (the classifier's graph over seven alarm
    windows joined each to all others)."""
    from edgewise.label.store import LabelStore
    from edgewise.label.workflow import predict_with_labels, train_with_labels

    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, 5000)
    ts = (1_700_000_000 + 60 * np.arange(5000)) * 10**9
    ups, dips = [800, 1800, 2800], [1300, 2300, 3300, 4300]
    for a in ups:
        v[a:a + 5] += 6
    for a in dips:
        v[a:a + 20] -= 4
    hist = (ts, v[:, None], ["t"])
    store = LabelStore(tmp_path)
    store.add("p", int(ts[ups[0]]), int(ts[ups[0] + 5]), "spike")
    store.add("p", int(ts[dips[0]]), int(ts[dips[0] + 20]), "dip")
    out = train_with_labels(hist, "p", store, tmp_path, window=50)
    faults = {int((w["start_ns"] - ts[0]) // (60 * 10**9)): w["fault"]
              for w in predict_with_labels(hist, out["path"]) if w["alarm"]}
    assert faults == {**{a: "spike" for a in ups}, **{a: "dip" for a in dips}}
