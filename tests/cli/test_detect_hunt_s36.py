"""Hunt s36 on `edgewise detect FILE`: OUT made whole or not at all, the threshold shown as
used, a BOM before a CP1252 byte, and FILE.CSV.GZ's default output name."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.bench.csv import detect_table
from edgewise.cli.detect import scored_name
from tests.in_process import edgewise_here


def sample(path: Path, n: int = 600, k: float = 3.2) -> Path:
    """Two correlated metrics; the first 400 rows (training) hold six breaks of size ``k``."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(n)
    b = a + 0.3 * rng.standard_normal(n)
    b[100:400:50] += k
    pd.DataFrame({"a": a, "b": b}).to_csv(path, index=False)
    return path


def test_a_failed_write_leaves_the_earlier_output_whole(tmp_path: Path, monkeypatch):
    """Check a write that fails part way (a file-size limit: EFBIG) leaves the earlier
    OUT as it was and no temporary file, where OUT was left cut off."""
    src = sample(tmp_path / "p.csv")
    out = tmp_path / "p_scored.csv"
    assert edgewise_here("detect", str(src)).returncode == 0
    good = out.read_bytes()
    real = pd.DataFrame.to_csv

    def cut_off(self, path_or_buf=None, **kw):  # type: ignore[no-untyped-def]
        text = real(self, None, **{k: v for k, v in kw.items() if k != "compression"})
        if isinstance(path_or_buf, (str, Path)):
            Path(path_or_buf).write_text(text[:100])
        else:
            path_or_buf.write(text[:100].encode())
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(pd.DataFrame, "to_csv", cut_off)
    p = edgewise_here("detect", str(src))
    assert p.returncode == 2
    assert out.read_bytes() == good
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.csv", "p_scored.csv"]
    assert p.stderr.strip() == (f"error: --out {str(out)!r} cannot be written: File too large "
                                "(the file already there is left as it was)")


def test_a_gzipped_out_is_still_gzip_and_the_mode_of_the_old_file_is_kept(tmp_path: Path):
    """Check --out x.csv.gz is written gzipped (as pandas infers it from the name) through
    the temporary file, and an OUT replaced keeps its permissions."""
    src = sample(tmp_path / "p.csv")
    out = tmp_path / "x.csv.gz"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert edgewise_here("detect", str(src), "--out", str(out)).returncode == 0
    assert list(pd.read_csv(out).columns)[-3:] == ["anomaly_score", "is_anomaly", "top_column"]
    assert out.stat().st_mode & 0o777 == 0o640


def test_the_run_line_shows_the_threshold_as_used(tmp_path: Path):
    """Check a threshold raised from the training rows is printed as used (it was printed
    with 3 decimals: 0.919 for 0.91898...)."""
    src = sample(tmp_path / "p.csv", k=3.6)  # training scores past 0.9 (predictive T² tail)
    res = detect_table(pd.read_csv(src), detector="mahalanobis", train_rows=400)
    assert 0.9 < res.threshold < 1
    p = edgewise_here("detect", str(src), "--detector", "mahalanobis", "--train-rows", "400")
    assert p.returncode == 0, p.stderr
    assert f", threshold {res.threshold!r}: " in p.stdout.splitlines()[0]


def test_a_bom_before_a_cp1252_byte_still_names_the_time_column(tmp_path: Path):
    """Check a UTF-8-with-BOM file holding one CP1252 byte finds its 'time' column (it was
    read as 'ï»¿time', so an unsorted file passed unchecked) and writes it back unglued."""
    rows = [f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00Z,{20 + (i % 7) / 10},ok" for i in range(60)]
    src = tmp_path / "bom.csv"
    src.write_bytes(("time,temp,note\n" + "\n".join(rows) + "\n").encode("utf-8-sig")
                    .replace(b",ok\n", b",ok\xb0\n", 1))
    p = edgewise_here("detect", str(src), "--time-column", "time", "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "bom_scored.csv").read_bytes().startswith(b"time,temp,note,")
    rows[5], rows[6] = rows[6], rows[5]
    src.write_bytes(("time,temp,note\n" + "\n".join(rows) + "\n").encode("utf-8-sig")
                    .replace(b",ok\n", b",ok\xb0\n", 1))
    p = edgewise_here("detect", str(src), "--detector", "ewzscore")
    assert p.returncode == 2 and "Time column 'time' must be sorted" in p.stderr


def test_the_default_output_of_an_upper_case_gz_file(tmp_path: Path):
    """Check X.CSV.GZ is read gunzipped and scored into X_scored.csv (not X.CSV_scored.csv)."""
    import gzip

    assert scored_name(Path("d/PUMP.CSV.GZ")) == Path("d/PUMP_scored.csv")
    src = tmp_path / "PUMP.CSV.GZ"
    src.write_bytes(gzip.compress(sample(tmp_path / "p.csv").read_bytes()))
    p = edgewise_here("detect", str(src))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "PUMP_scored.csv").is_file()
