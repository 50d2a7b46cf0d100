"""Explanations sum to what they explain: TreeSHAP for RUL, exact splits for linear/PCA scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from edgewise.errors import InvalidParameterError
from edgewise.explain.linear import (
    linear_contributions,
    pca_contributions,
    quadratic_contributions,
)
from edgewise.explain.rul import by_sensor, rul_explanations
from edgewise.models.rul import RULModel
from tests.models.test_rul import fleet, truncate


def test_rul_contributions_sum_to_the_prediction() -> None:
    """Check base + contributions == prediction for every unit, and 'temp' drives it."""
    model = RULModel(cap=60.0, n_estimators=80).fit(fleet(30))
    test, _ = truncate(fleet(10, seed=3))
    ex = rul_explanations(model, test)
    pred = model.predict(test)
    for unit, e in ex.items():
        assert e.check()
        assert e.value == pytest.approx(pred[unit], abs=1e-6)  # inside (0, cap): no clipping
        folded = by_sensor(e)
        assert folded.check()
    pushes = np.mean([[abs(by_sensor(e).contributions[s]) for s in ("temp", "noise")]
                      for e in ex.values()], axis=0)
    assert pushes[0] > 3 * pushes[1]


def test_rul_explanations_need_the_boosted_member() -> None:
    """Check that a CNN-only model is refused with the reason."""
    model = RULModel(models=("cnn",), cap=60.0, cnn_epochs=1, window=5).fit(fleet(6))
    with pytest.raises(InvalidParameterError, match="needs a RULModel with the 'gbm' member"):
        rul_explanations(model, fleet(2))


def test_rul_explanations_of_a_frame_with_no_units_are_empty() -> None:
    """Check a frame with no rows (every unit left out as unscorable) explains nothing, as
    predict returns an empty series (before: LightGBM's "Found array with 0 sample(s)")."""
    model = RULModel(cap=60.0, n_estimators=20).fit(fleet(8))
    empty = fleet(2).iloc[:0]
    assert len(model.predict(empty)) == 0
    assert rul_explanations(model, empty) == {}


def test_linear_split_matches_a_fitted_ridge() -> None:
    """Check the linear split against sklearn's own prediction."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X @ [1.0, -2.0, 0.0, 3.0] + 5
    reg = Ridge(alpha=0.1).fit(X, y)
    e = linear_contributions(reg.coef_, reg.intercept_, X[0], X.mean(axis=0))
    assert e.check()
    assert e.value == pytest.approx(reg.predict(X[:1])[0])
    assert e.base == pytest.approx(reg.predict(X.mean(axis=0, keepdims=True))[0])


def test_pca_reconstruction_error_split_names_the_broken_sensor() -> None:
    """Check the PCA error split sums exactly and blames the sensor that broke correlation."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 1))
    X = np.hstack([z, z, z, z, z, z]) + rng.normal(0, 0.05, (500, 6))
    pca = PCA(n_components=1).fit(X)
    x = X[0].copy()
    x[1] += 3.0
    e = pca_contributions(x, pca.mean_, pca.components_, names=list("abcdef"))
    recon = pca.inverse_transform(pca.transform(x[None]))[0]
    assert e.value == pytest.approx(float(((x - recon) ** 2).sum()))
    assert e.check() and e.top(1)[0][0] == "b"


def test_quadratic_split_sums_to_mahalanobis() -> None:
    """Check d_i (M d)_i sums to the squared Mahalanobis distance."""
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal([0, 0, 0], [[1, .5, 0], [.5, 1, 0], [0, 0, 2]], 1000)
    prec = np.linalg.inv(np.cov(X.T))
    d = X[3] - X.mean(axis=0)
    e = quadratic_contributions(X[3], X.mean(axis=0), prec)
    assert e.check() and e.value == pytest.approx(d @ prec @ d)
    with pytest.raises(InvalidParameterError, match="must be 3x3"):
        quadratic_contributions(X[3], X.mean(axis=0), np.eye(2))


@pytest.mark.parametrize("bad", [0.0, np.nan, -1.0])
def test_pca_split_refuses_a_scale_that_is_not_positive_naming_the_feature(bad) -> None:
    """Check a scale of 0 (a constant feature's standard deviation), NaN or below 0 is
    refused naming the feature and the value: 0 made every contribution and the value NaN,
    the features that moved too, with no word of why."""
    comps = np.array([[1.0, 0.0, 0.0]])
    with pytest.raises(InvalidParameterError, match=rf"Got {bad!r} for 'rpm'\.") as err:
        pca_contributions([1.0, 2.0, 3.0], np.zeros(3), comps, scale=[1.0, bad, 2.0],
                          names=["flow", "rpm", "temp"])
    assert err.value.field == "scale"
    e = pca_contributions([1.0, 2.0, 3.0], np.zeros(3), comps, scale=[1.0, 1.0, 2.0])
    assert e.check() and e.contributions == {"x0": 0.0, "x1": 4.0, "x2": 2.25}
