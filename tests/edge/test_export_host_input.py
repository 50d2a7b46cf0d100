"""The generated ``<name>_host_test.c`` programs refuse bad input in one line, exit code 1.

They read stdin with ``scanf("%lf")`` and stopped at the first word that was no number, or
at the end of input in the middle of a row, exiting 0 with nothing said: ``echo 1 | ./g_test``
for a 2-input model printed nothing, ``1 2 3`` dropped the ``3`` and ``1,2`` stopped at the
comma. Each kind of host program (EWZScore, trees float32/int8, compact trees, MLP, RUL,
ContextLikelihood, Mahalanobis) is built with the strict flags and run on such input here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgewise.edge import export
from edgewise.edge.export_c import CFLAGS, CExport


def _ewz() -> CExport:
    from edgewise.detect.zscore import EWZScore

    return export(EWZScore(), format="c", name="ewz")


def _gbr():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    return GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(
        X, X[:, 0] + X[:, 1]), X


def _trees() -> CExport:
    return export(_gbr()[0], format="c", name="g")


def _trees_int8() -> CExport:
    m, X = _gbr()
    return export(m, format="c", dtype="int8", name="gq", calibration=X)


def _compact() -> CExport:
    from edgewise.edge.compress import tree_table
    from edgewise.edge.export_compact import export_trees_compact

    return export_trees_compact(tree_table(_gbr()[0]), name="gc")


def _mlp(dtype: str) -> CExport:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 1)).eval()
    cal = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    if dtype == "int8":
        return export(net, format="c", dtype="int8", name="mq", calibration=cal)
    return export(net, format="c", name="m")


def _rul() -> CExport:
    import pandas as pd

    from edgewise.edge.export_rul import export_rul
    from edgewise.models.rul import RULModel

    rng = np.random.default_rng(0)
    rows = [(u, t, 1.0 + np.exp((t - 60) / 15) + rng.normal(0, 0.05))
            for u in range(8) for t in range(60)]
    df = pd.DataFrame(rows, columns=["unit", "cycle", "temp"])
    model = RULModel(n_estimators=5, calibration_folds=2, window=10, cap=40.0).fit(df)
    return export_rul(model, format="c", name="rul")


def _context_likelihood() -> CExport:
    from edgewise.detect import default_detector

    return export(default_detector(), format="c", name="clh")


def _mahalanobis() -> CExport:
    from edgewise.detect import default_multivariate
    from edgewise.edge.export_detectors import export_mahalanobis_c

    return export_mahalanobis_c(default_multivariate(), name="maha", metrics=["a", "b", "c"])


KINDS = {
    "ewz": _ewz,
    "trees": _trees,
    "trees_int8": _trees_int8,
    "compact": _compact,
    "mlp": lambda: _mlp("float32"),
    "mlp_int8": lambda: _mlp("int8"),
    "rul": _rul,
    "context_likelihood": _context_likelihood,
    "mahalanobis": _mahalanobis,
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def program(request, tmp_path_factory) -> tuple[Path, int]:
    """One kind's host program built with the strict flags, and its row width."""
    c = KINDS[request.param]()
    d = tmp_path_factory.mktemp(request.param)
    c.save(d)
    subprocess.run(["gcc", *CFLAGS, f"{c.name}.c", f"{c.name}_host_test.c", "-lm", "-o", "t"],
                   cwd=d, check=True, capture_output=True)
    return d / "t", c.n_features


def _run(exe: Path, feed: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe)], input=feed, capture_output=True, text=True, timeout=30)


def _rows(width: int, n: int) -> str:
    return "".join(" ".join("0.5" for _ in range(width)) + "\n" for _ in range(n))


def test_whole_rows_and_empty_input_exit_0(program):
    """Check whole rows (spaces, newlines, tabs) give one line each and exit 0, as does
    empty input or input of white space only."""
    exe, width = program
    run = _run(exe, _rows(width, 3).replace(" ", "\t", 1) + "\n  \n")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert len(run.stdout.split()) == 3
    for feed in ("", "  \n\n"):
        run = _run(exe, feed)
        assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


@pytest.mark.parametrize("word", ["1,2", "abc", "1abc", "0.5;"])
def test_a_word_that_is_no_number_is_named_with_its_position(program, word):
    """Check a word that is no number (a CSV row, text, a number with a tail, which
    ``scanf`` read as its number) after one whole row ends in one line naming the word and
    its position, exit code 1, after the whole row's output."""
    exe, width = program
    run = _run(exe, _rows(width, 1) + word + " 0.5\n")
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert run.stderr == (f"error: word {width + 1} on stdin, '{word}', is not a number; give "
                          "numbers separated by spaces or newlines.\n")
    assert len(run.stdout.split()) == 1


def test_a_partial_last_row_names_the_count_and_the_row_width(program):
    """Check input ending mid-row (``1 2 3`` for 2 inputs) ends in one line naming the count
    of numbers and the row width, exit code 1; a one-number program has no partial rows."""
    exe, width = program
    run = _run(exe, _rows(width, 2) + "0.5")
    if width == 1:
        assert run.returncode == 0 and len(run.stdout.split()) == 3, run.stderr
        return
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert run.stderr == (f"error: {2 * width + 1} numbers on stdin are not whole rows of "
                          f"{width} inputs (the last row has 1); give {width} numbers per "
                          "row.\n")
    assert len(run.stdout.split()) == 2


def test_a_word_too_long_to_read_is_refused(program):
    """Check a word longer than the reader's buffer is refused by name, not cut in two."""
    exe, _ = program
    run = _run(exe, "1" * 300 + "\n")
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: word 1 on stdin, '" + "1" * 255 + "...', is longer "
                                 "than 255 characters;"), run.stderr
