"""A whole RUL model file that cannot load because LightGBM is not installed says so, and
how to install it, instead of calling the file damaged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgewise.models.rul import ModelFileError, RULModel, load_model
from tests.models.test_rul_domain_checks import _histories


def test_a_missing_lightgbm_is_named_not_called_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that loading a good model file with lightgbm hidden (as after pip uninstall)
    names the package and 'edgewise[rul]' and says the file is intact (it said 'damaged or
    truncated; copy it again or retrain', and the RUL route listed it as bad_model so)."""
    path = tmp_path / "rul.ewm"
    RULModel(window=10, n_estimators=5, calibration_folds=2).fit(_histories(4)).save(path)
    for name in [m for m in sys.modules if m == "lightgbm" or m.startswith("lightgbm.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import of it: ModuleNotFoundError
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value) == (
        f"Model file {str(path)!r} is intact but needs the 'lightgbm' package to load, "
        "which is not installed: pip install 'edgewise[rul]'.")
    monkeypatch.undo()
    assert isinstance(load_model(path), RULModel)


def test_the_route_does_not_call_an_intact_file_damaged() -> None:
    """Check the RUL route's answer when the only model file needs a package not installed
    tells to install it, not to 'remove the damaged file' (the file is intact)."""
    from edgewise.server.routes.rul import _bad_model

    missing = {"model": "rul-v1.ewm", "detail": "Model file 'rul-v1.ewm' is intact but needs "
               "the 'lightgbm' package to load, which is not installed: pip install "
               "'edgewise[rul]'."}
    damaged = {"model": "rul-v2.ewm", "detail": "Model file 'rul-v2.ewm' is damaged."}
    text = _bad_model("pump-1", [missing])["detail"]
    assert "Install the package named" in text and "damaged" not in text, text
    assert "remove the damaged file" in _bad_model("pump-1", [damaged, missing])["detail"]
