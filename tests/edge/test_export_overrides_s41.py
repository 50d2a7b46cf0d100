"""Export refuses what it would export with the wrong maths: a detector subclass overriding
its scoring, and a forest whose member trees override predict."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from edgewise.detect import get_detector
from edgewise.edge import export
from edgewise.errors import ExportError


def _trained(detector):
    for v in np.sin(np.arange(400) / 10):
        detector.learn_one({"x": float(v)})
    return detector


@pytest.mark.parametrize("name", ["context-likelihood", "ewzscore", "mahalanobis"])
def test_a_detector_subclass_overriding_its_scoring_is_refused(name: str) -> None:
    """Check that a subclass doubling ``score_one`` is refused, naming the method (it was
    exported as its base and scored half of what the Python detector did), while a
    subclass that only sets defaults in ``__init__`` or adds a helper still exports."""
    base = type(get_detector(name))

    class Doubled(base):  # type: ignore[misc, valid-type]
        def score_one(self, x):
            return min(1.0, 2 * super().score_one(x))

    class Plain(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kw):
            super().__init__(**kw)

        def describe(self) -> str:
            return "mine"

    with pytest.raises(ExportError, match=rf"Doubled: it overrides score_one of its base "
                                          rf"{base.__name__} \(Doubled.score_one\)"):
        export(_trained(Doubled()), format="c", name="det")
    assert export(_trained(Plain()), format="c", name="det") is not None


def test_a_forest_of_trees_overriding_predict_is_refused() -> None:
    """Check that a random forest whose members square their prediction (its ``estimator``
    a DecisionTreeRegressor subclass) is refused, naming the member class (the C averaged
    the plain trees, off by about 21 on targets near 5)."""

    class Squared(DecisionTreeRegressor):
        def predict(self, X, check_input=True):
            return super().predict(X, check_input) ** 2

    X = np.random.default_rng(0).normal(size=(200, 3))
    y = X[:, 0] + 5
    forest = RandomForestRegressor(n_estimators=5, random_state=0)
    forest.estimator = Squared()
    forest.fit(X, y)
    with pytest.raises(ExportError, match=r"Squared: it overrides predict .* members of a "
                                          r"RandomForestRegressor"):
        export(forest, format="c", name="rf")
    plain = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y)
    assert np.allclose(export(plain, format="c", name="rf").predict(X), plain.predict(X),
                       atol=1e-4)
