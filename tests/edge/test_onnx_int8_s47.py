"""A torch MLP's int8 ONNX graph says how it was calibrated, as the int8 C of a tree
ensemble does: ``calibration_rmse``/``calibration_std``/``calibration_rows`` on the export,
and a warning where the calibration rows cannot stand for real inputs. Calibrated on one
row, or on rows of ones, the graph gave nearly one output whatever the input (RMSE 0.239
against torch where torch's output std is 0.231) with no word and no figure."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from edgewise.edge import export  # noqa: E402


@pytest.fixture(scope="module")
def mlp():
    """A seeded 3-8-1 MLP and 500 real-looking input rows with torch's outputs on them."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    net.eval()
    X = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(X)).numpy().ravel().astype(np.float64)
    return net, X, ref


def test_int8_onnx_calibrated_on_one_row_warns_naming_the_row_and_inputs(mlp) -> None:
    """Check one calibration row warns, saying 1 row and naming every input: its graph
    really is near constant on real rows (the figure the warning is about)."""
    net, X, ref = mlp
    with pytest.warns(UserWarning, match=r"int8 calibration on 1 row: each of its 3 inputs "
                                         r"\(0, 1, 2\) holds one value") as got:
        q = export(net, "onnx", "int8", calibration=X[:1])
    assert "nearly one output whatever the inputs" in str(got[0].message)
    assert q.calibration_rows == 1 and q.calibration_rmse is not None
    with pytest.warns(UserWarning, match=r"499 of the 500 rows hold an input beyond the "
                                         r"range of the calibration rows"):
        p = q.predict(X)
    assert p.std() < 0.2 * ref.std()  # what the warning is for: 0.019 against 0.231
    assert np.sqrt(np.mean((p - ref) ** 2)) > 0.5 * ref.std()


def test_int8_onnx_rows_of_ones_warn_naming_how_many_rows() -> None:
    """Check rows that are all one value (np.ones((4, 3))) warn with the row count and the
    value, and the export still records its figures (0 on those rows: they cannot show it)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 1))
    with pytest.warns(UserWarning, match=r"all 3 inputs \(0, 1, 2\) hold one value in all 4 "
                                         r"calibration rows \(every row 1, 1, 1\)"):
        q = export(net, "onnx", "int8", calibration=np.ones((4, 3)))
    assert (q.calibration_rows, q.calibration_std) == (4, 0.0)


def test_int8_onnx_names_the_one_input_that_never_changed(mlp) -> None:
    """Check rows where one input never changes name that input (and its value), not the
    others."""
    net, X, _ = mlp
    cal = X[:64].copy()
    cal[:, 1] = 0.5
    with pytest.warns(UserWarning, match=r"input 1 \(of 3\) holds one value in all 64 "
                                         r"calibration rows \(every row 0\.5\)"):
        q = export(net, "onnx", "int8", calibration=cal)
    assert q.calibration_rows == 64


def test_int8_onnx_records_its_calibration_figures_without_a_warning(mlp) -> None:
    """Check rows that vary give no warning (warnings are errors here) and the figures of
    the int8 graph against the float one on those rows: the RMSE small next to the std, and
    the rows counted without the one holding a NaN (left out, with its own warning)."""
    net, X, ref = mlp
    q = export(net, "onnx", "int8", calibration=X[:64])
    assert q.calibration_rows == 64
    assert q.calibration_std == pytest.approx(float(np.std(ref[:64])), rel=1e-4)
    p = q.predict(X[:64])
    assert q.calibration_rmse == pytest.approx(
        float(np.sqrt(np.mean((p - ref[:64]) ** 2))), rel=0.05, abs=1e-4)
    assert 0 < q.calibration_rmse < 0.25 * q.calibration_std
    cal = X[:64].copy()
    cal[3, 0] = np.nan
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        q2 = export(net, "onnx", "int8", calibration=cal)
    assert [str(w.message)[:46] for w in got] == ["int8 calibration: 1 of the 64 rows holds a NaN"]
    assert q2.calibration_rows == 63
    assert export(net, "onnx", "float32").calibration_rmse is None
