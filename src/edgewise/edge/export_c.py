"""Dependency-free C99 for devices: no malloc, fixed-size state, sizes stated in the header.

Each generator returns a :class:`CExport`: the sources as text, the RAM and flash (model
tables) they need, and a way to build and run them on the host through ``ctypes`` so parity
with Python can be tested. Builds use ``gcc -std=c99 -pedantic -Wall -Wextra -Werror``.

>>> from edgewise.detect.zscore import EWZScore
>>> c = export_ewzscore(EWZScore(), name="ewz")
>>> c.ram_bytes, sorted(c.files)
(24, ['ewz.c', 'ewz.h', 'ewz_host_test.c'])
"""

from __future__ import annotations

import ctypes
import keyword
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.compress import (
    QuantizedTrees,
    TreeTable,
    center_leaves_float32,
    check_trees,
    float32_thresholds,
)
from edgewise.errors import ExportError

__all__ = [
    "CFLAGS",
    "CExport",
    "build_shared",
    "check_c_name",
    "check_not_foreign",
    "export_ewzscore",
    "export_mlp",
    "export_trees",
    "undefined_symbols",
    "write_files",
    "written_by_edgewise",
]

CFLAGS = ("-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2")

#: C of the generated ``<name>_host_test.c`` programs: includes and ``host_next``, which reads
#: the next white-space separated word of stdin. It returns 1 with the number in ``*v``, or 0
#: at the end of input; a word that is no number ends the program with exit code 1 and one
#: line on stderr naming the word and its position (``scanf("%lf")`` stopped there silently).
_HOST_READER = r"""#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#define HOST_WORD_MAX 255

static int host_next(double *v, unsigned long *words) {
    char w[HOST_WORD_MAX + 1];
    char *end;
    size_t len = 0;
    int c, cut = 0;
    do c = getchar(); while (c != EOF && isspace(c));
    if (c == EOF) {
        if (ferror(stdin)) {
            fprintf(stderr, "error: reading stdin failed after word %lu.\n", *words);
            exit(1);
        }
        return 0;
    }
    ++*words;
    for (; c != EOF && !isspace(c); c = getchar()) {
        if (len < HOST_WORD_MAX) w[len++] = (char)c; else cut = 1;
    }
    w[len] = '\0';
    if (cut) {
        fprintf(stderr, "error: word %lu on stdin, '%s...', is longer than %d characters; "
                "give numbers separated by spaces or newlines.\n", *words, w, HOST_WORD_MAX);
        exit(1);
    }
    *v = strtod(w, &end);
    if (end == w || *end != '\0') {
        fprintf(stderr, "error: word %lu on stdin, '%s', is not a number; "
                "give numbers separated by spaces or newlines.\n", *words, w);
        exit(1);
    }
    return 1;
}

"""


def _host_rows(n_macro: str, fill: str) -> str:
    """C of one row read into the host program's ``x`` (``fill``: the C storing ``v`` as
    ``x[i]``): at the end of input, a clean exit at the start of a row, or exit code 1 and
    one line on stderr naming the count of numbers and the row width mid-row."""
    return f"""        for (i = 0; i < {n_macro}; ++i) {{
            if (!host_next(&v, &words)) {{
                if (i == 0) return 0;
                fprintf(stderr, "error: %lu numbers on stdin are not whole rows of %d inputs "
                        "(the last row has %d); give %d numbers per row.\\n",
                        words, {n_macro}, i, {n_macro});
                return 1;
            }}
            {fill}
        }}
"""


_C_RESERVED = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "main",
}
#: edgewise.detect.zscore's limit: an EWZScore update taking the mean or variance beyond
#: float's range is not learned (kept here so exporting does not import the detectors)
_F32_LIMIT = 2.0**128 - 2.0**103
ALLOCATORS = ("malloc", "calloc", "realloc", "free", "aligned_alloc", "posix_memalign")


def check_c_name(name: str) -> str:
    """Return ``name`` if it is a usable C identifier prefix, else raise :class:`ExportError`.

    The header's guard and macros are the name in capitals (``rul`` gives ``RUL_N_FEATURES``),
    so two exports whose names differ only in case (``rul`` and ``RUL``) cannot be built into
    one program, and their files are one file on a case-insensitive file system: give names
    that differ in more than case (:meth:`CExport.save` refuses to write one beside the other).

    >>> check_c_name("int")
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: C name 'int' is a reserved word (C's). Use another, e.g. 'int_model'.
    """  # noqa: E501
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", name):
        raise ExportError(f"C name {name!r} must be a C identifier: a letter or '_' then letters, "
                          "digits or '_', at most 41 characters.")
    # a Python keyword ('def', 'lambda') is refused too: it was told it "must be a C
    # identifier", which it is
    if name in _C_RESERVED or keyword.iskeyword(name):
        whose = "C" if name in _C_RESERVED else "Python"
        raise ExportError(f"C name {name!r} is a reserved word ({whose}'s). Use another, e.g. "
                          f"'{name}_model'.")
    return name


#: text that marks a file an export writes: the C sources' first comment, the README and the
#: ONNX host check of ``edgewise export``
GENERATED_MARKS = ("generated by Edgewise", "Generated by Edgewise",
                   "Generated by `edgewise export`", '"""Host check for the ONNX graph')
#: ``metadata_props`` key of a graph Edgewise wrote whose ``producer_name`` is not "edgewise"
#: (a torch module's, an int8 one's)
GENERATED_KEY = "edgewise.generated_by"


def written_by_edgewise(path: str | Path) -> bool:
    """Whether ``path`` is a file an Edgewise export wrote, which an export may rewrite: a
    C source or text file carrying one of :data:`GENERATED_MARKS` near its start (or a host
    test of an earlier version, ``/* <its name>: reads ...``), a RULModel's
    ``<name>_inputs.json``, or an ONNX graph whose producer is "edgewise" or that carries
    :data:`GENERATED_KEY`. A link, a folder or anything else is not.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "model.h").write_text("/* my firmware's model.h */")
    >>> written_by_edgewise(d / "model.h"), written_by_edgewise(d / "none.h")
    (False, False)
    """
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    try:
        if p.suffix == ".onnx":
            import onnx

            m = onnx.load_model_from_string(p.read_bytes())
            return m.producer_name == "edgewise" or any(
                e.key == GENERATED_KEY for e in m.metadata_props)
        if p.suffix == ".json":
            import json

            if p.stat().st_size > (1 << 24):
                return False
            spec = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(spec, dict) and spec.get("model") == "RULModel" and \
                "features" in spec and "normalisation" in spec
        with p.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except Exception:  # unreadable, or not what an export writes
        return False
    return any(m in head for m in GENERATED_MARKS) or head.startswith(f"/* {p.name}: reads ")


def check_not_foreign(out_dir: str | Path, names: list[str] | dict[str, Any]) -> None:
    """:class:`ExportError` where ``out_dir`` holds one of the files ``names`` that an
    Edgewise export did not write (:func:`written_by_edgewise`): it is not overwritten, and
    nothing is written (``--out .`` overwrote a firmware's own ``model.h``)."""
    d = Path(out_dir)
    for fname in names:
        p = d / fname
        if (p.exists() or p.is_symlink()) and not written_by_edgewise(p):
            what = (" (a link)" if p.is_symlink() else " (a folder)" if p.is_dir() else "")
            raise ExportError(
                f"{str(d)!r} holds a {fname}{what} that edgewise export did not write; it is "
                "not overwritten, and nothing was written. Export into another folder, or "
                "move it away.")


def write_files(out_dir: str | Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write ``files`` (file name to text or bytes) into ``out_dir`` (made if missing) as one
    set; return their paths, in order.

    Nothing is written where one of them is there and was not written by an export
    (:func:`check_not_foreign`). Each goes to a temporary file of its own beside it
    (:func:`edgewise._private.write_beside`), and only when all are written whole are they
    renamed into place, as ``RULModel.save`` does: an export that fails part way (a full
    disk, a folder where a file goes) leaves the previous set whole, not new files beside
    old ones."""
    import os

    from edgewise._private import sync_folder, write_beside

    d = Path(out_dir)
    check_not_foreign(d, files)
    d.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[Path, Path]] = []
    try:
        for fname, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            temps.append((write_beside(d / fname, raw, mode=0o666), d / fname))
        for tmp, dest in temps:
            os.replace(tmp, dest)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    sync_folder(d)
    return [dest for _, dest in temps]


def _f(v: float) -> str:
    with np.errstate(over="ignore"):
        v32 = np.float32(v)
    if np.isinf(v32):  # an infinite split threshold (HistGradientBoosting's NaN-only splits)
        return "INFINITY" if v32 > 0 else "(-INFINITY)"
    s = f"{float(v32):.9g}"
    if "e" not in s and "." not in s and "n" not in s:
        s += ".0"
    return s + "f"


def _d(v: float) -> str:
    """A C double literal that gives ``v`` exactly; NaN and +-inf as ``<math.h>``'s macros
    (``nan.0`` and ``inf.0``, what ``repr`` made of them, do not compile).

    >>> [_d(v) for v in (2.0, 0.1, 1e-300, float("nan"), float("-inf"))]
    ['2.0', '0.1', '1e-300', 'NAN', '(-INFINITY)']
    """
    v = float(v)
    if v != v:
        return "NAN"
    if v in (np.inf, -np.inf):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    r = repr(v)
    return r if ("e" in r or "." in r) else r + ".0"


def _array(ctype: str, name: str, values: Any, fmt: Any = str, per_line: int = 12) -> str:
    vals = [fmt(v) for v in values]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)] or ["0"]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{max(len(vals), 1)}] = {{\n    {body}\n}};\n"


def build_shared(files: dict[str, str], workdir: str | Path, lib: str = "model") -> Path:
    """Write ``files`` and compile every ``.c`` except host test programs into a shared library.

    Raises :class:`ExportError` with the compiler output when gcc fails.
    """
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (d / fname).write_text(text)
    srcs = [str(d / f) for f in files if f.endswith(".c") and not f.endswith("_host_test.c")]
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ExportError("Building C on the host needs gcc on PATH.")
    out = d / f"lib{lib}.so"
    objs = []
    for src in srcs:
        obj = src[:-2] + ".o"
        _run([gcc, *CFLAGS, "-fPIC", "-c", src, "-o", obj])
        objs.append(obj)
    _run([gcc, "-shared", "-o", str(out), *objs, "-lm"])
    return out


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ExportError(f"Command {' '.join(cmd)!r} failed:\n{r.stderr.strip()}")


def undefined_symbols(obj: str | Path) -> set[str]:
    """External symbols an object file needs (``nm -u``), e.g. to prove no allocator is called."""
    r = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in r.stdout.splitlines() if line.strip()}


@dataclass
class CExport:
    """Generated C sources and what they need on the target.

    Attributes
    ----------
    name
        Prefix of every C symbol.
    kind
        ``"detector"`` (``<name>_step(state, value)``) or ``"regressor"`` (``<name>_predict(x)``).
    files
        File name to source text: ``<name>.h``, ``<name>.c`` and ``<name>_host_test.c``.
    ram_bytes
        Bytes of mutable state (detectors) or working buffers (regressors), from the header.
    flash_bytes
        Bytes of constant model tables (code size comes on top; see :meth:`code_bytes`).
    calibration_rmse, calibration_std
        int8 tree ensembles: how far the quantised predictions are from the float model's on
        the calibration rows (RMSE), and the float predictions' std there; else ``None``.
    feature_names
        The names of the inputs ``x[0..n_features-1]``, in order, where the model names them
        (a RULModel's window features: :mod:`edgewise.edge.export_rul`); else ``None``.
    """

    name: str
    kind: str
    files: dict[str, str]
    ram_bytes: int
    flash_bytes: int
    n_features: int = 1
    dtype: str = "float32"
    calibration_rmse: float | None = None
    calibration_std: float | None = None
    feature_names: list[str] | None = None
    _lib: Any = field(default=None, repr=False)
    _dir: Any = field(default=None, repr=False)

    def save(self, out_dir: str | Path, extra: dict[str, str] | None = None) -> list[Path]:
        """Write the sources (and ``extra`` files, name to text: the CLI's README) into
        ``out_dir`` as one set (:func:`write_files`); return their paths.

        :class:`ExportError`, with nothing written, where ``out_dir`` holds one of these files
        that an export did not write (the user's own ``model.h``), or an export whose name
        differs from this one only in case (``RUL.h`` beside ``rul.h``): the two share the
        header guard and macros (``RUL_*``), and are one file on a case-insensitive file
        system."""
        d = Path(out_dir)
        mine = {f.lower(): f for f in self.files}
        if d.is_dir():
            for p in d.iterdir():
                if p.name.lower() in mine and p.name != mine[p.name.lower()]:
                    raise ExportError(
                        f"{str(d)!r} holds {p.name!r}, whose name differs from "
                        f"{mine[p.name.lower()]!r} only in case: C names must differ in more "
                        f"than case (both use the macros {self.name.upper()}_* and the guard "
                        f"{_guard(self.name)}); export as another name or into another folder.")
        return write_files(d, {**self.files, **(extra or {})})

    def build(self, workdir: str | Path | None = None) -> ctypes.CDLL:
        """Compile with gcc (strict flags) and load with ctypes; cached."""
        if self._lib is None:
            if workdir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="edgewise-c-")
                workdir = self._dir.name
            path = build_shared(self.files, workdir, lib=self.name)
            self._lib = ctypes.CDLL(str(path))
            self._objdir = Path(workdir)
        return self._lib

    def object_file(self) -> Path:
        """The compiled object of the model (after :meth:`build`)."""
        self.build()
        return self._objdir / f"{self.name}.o"

    def code_bytes(self) -> int:
        """Text + rodata of the compiled object on this host (``size``), i.e. flash incl. code."""
        r = subprocess.run(["size", str(self.object_file())], capture_output=True, text=True,
                           check=True)
        text, data, _bss = (int(v) for v in r.stdout.splitlines()[1].split()[:3])
        return text + data

    def score_many(self, values: np.ndarray) -> np.ndarray:
        """Run a detector over a stream (score then learn each value) from a fresh init.

        ``values``: one value per reading (shape ``(n,)``) for a single-stream detector, rows
        of ``n_features`` metrics (shape ``(n, n_features)``) for a multi-metric one
        (``kind="mdetector"``); any other shape raises :class:`ExportError` (the C read
        ``n * n_features`` values from a 1-D array of ``n``: past its end, a crash).
        """
        if self.kind not in ("detector", "mdetector"):  # mdetector: rows of n_features
            raise ExportError(f"{self.name} is a {self.kind}; use predict().")
        io = np.float64 if self.dtype == "float64" else np.float32  # the C's value type
        with np.errstate(over="ignore"):  # beyond float's range: inf, as the device reads it
            v = np.ascontiguousarray(values, dtype=io)
        if self.kind == "mdetector" and (v.ndim != 2 or v.shape[1] != self.n_features):
            raise ExportError(f"{self.name} scores rows of {self.n_features} metrics: values "
                              f"must have shape (rows, {self.n_features}). Got shape {v.shape} "
                              "instead.")
        if self.kind == "detector" and v.ndim != 1:
            raise ExportError(f"{self.name} scores one stream: values must have shape (n,), "
                              f"one value per reading. Got shape {v.shape} instead.")
        lib = self.build()
        out = np.empty(len(v), dtype=io)
        state = ctypes.create_string_buffer(self.ram_bytes)
        getattr(lib, f"{self.name}_init")(state)
        fn = getattr(lib, f"{self.name}_run")
        fn(state, v.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
           ctypes.c_uint32(len(v)))
        return out.astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Run a regressor on each row of ``X`` (float32 inputs)."""
        if self.kind != "regressor":
            raise ExportError(f"{self.name} is a {self.kind}; use score_many().")
        lib = self.build()
        with np.errstate(over="ignore"):  # beyond float's range: inf, as the device reads it
            Xc = np.ascontiguousarray(X, dtype=np.float32)
        if Xc.ndim != 2 or Xc.shape[1] != self.n_features:
            raise ExportError(f"{self.name} takes {self.n_features} features per row. "
                              f"Got shape {Xc.shape} instead.")
        out = np.empty(len(Xc), dtype=np.float32)
        getattr(lib, f"{self.name}_predict_many")(
            Xc.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_uint32(len(Xc)))
        return out.astype(np.float64)


def _guard(name: str) -> str:
    return f"EDGEWISE_{name.upper()}_H"


# -- streaming detector: EWZScore --------------------------------------------------------------


def export_ewzscore(det: Any, name: str = "ewz", dtype: str = "float32") -> CExport:
    """C for an :class:`~edgewise.detect.zscore.EWZScore` with its learned state as the start.

    Readings and scores are ``float`` (what a device reads); the state (mean, variance) and
    the arithmetic are ``double``, as in Python. A float32 mean loses every update smaller
    than half its last place: at 101325 Pa +- 0.1 Pa (or 20 +- 2e-5) it stuck, scores
    differed from Python's by up to 0.34 and alarms disagreed. Double costs 24 bytes of state
    instead of 12, and soft-float code on an MCU without a double FPU, as the default
    detector's C (all double) already does.

    >>> from edgewise.detect.zscore import EWZScore
    >>> c = export_ewzscore(EWZScore(), name="baro")
    >>> c.ram_bytes, "double mean;" in c.files["baro.h"]
    (24, True)
    """
    check_c_name(name)
    n = name
    N = n.upper()
    ram = 24  # two doubles and a uint32, padded to the doubles' alignment (8 bytes)
    h = f"""/* {n}.h: exponentially weighted z-score detector, generated by Edgewise.
 *
 * RAM:   {N}_RAM_BYTES (= {ram}) bytes of state per stream, no heap, no malloc.
 * FLASH: parameters are compile-time constants; code only (see README for the measured size).
 * Use:   {n}_state_t s; {n}_init(&s); for each reading v: score = {n}_step(&s, v);
 *        score in [0, 1]; >= {N}_THRESHOLD means anomaly.
 *        The mean and variance are doubles, as in Python: in float a mean of 101325 loses
 *        every update below 0.004, and scores then differ from Python's.
 *        NaN and inf readings (a double beyond float's range arrives as inf) score 0 and
 *        are not learned; a reading whose update would take the mean or variance beyond
 *        float's range scores (1 if far out) but is not learned, as in Python.
 */
#ifndef {_guard(n)}
#define {_guard(n)}
#include <stdint.h>

#define {N}_RAM_BYTES {ram}
#define {N}_THRESHOLD 0.9f

typedef struct {{
    double mean;  /* exponentially weighted mean */
    double var;   /* exponentially weighted variance */
    uint32_t n;   /* readings learned */
}} {n}_state_t;

void {n}_init({n}_state_t *s);
float {n}_score(const {n}_state_t *s, float v);
void {n}_learn({n}_state_t *s, float v);
float {n}_step({n}_state_t *s, float v);
void {n}_run({n}_state_t *s, const float *v, float *out, uint32_t count);

#endif
"""
    c = f"""/* {n}.c: generated by Edgewise from {type(det).__name__}(alpha={det.alpha!r},
 * z0={det.z0!r}, warmup={det.warmup!r}); initial state learned from {det.n_} readings. */
#include <math.h>
#include "{n}.h"

#define ALPHA {_d(det.alpha)}
#define Z0 {_d(det.z0)}
#define WARMUP {int(det.warmup)}u
#define SD_MIN 1e-300                   /* Python's _SD_MIN */
#define F32_LIMIT {_d(_F32_LIMIT)}  /* Python's _F32_LIMIT: float's range */

/* {N}_RAM_BYTES is sizeof({n}_state_t) where doubles align to 8 bytes (less where they align
 * to 4); a compile error here if this compiler needs more */
typedef char {n}_ram_bytes_check[sizeof({n}_state_t) <= {N}_RAM_BYTES ? 1 : -1];

void {n}_init({n}_state_t *s) {{
    s->n = {int(min(det.n_, 2**32 - 1))}u;
    s->mean = {_d(det.mean_)};
    s->var = {_d(det.var_)};
}}

float {n}_score(const {n}_state_t *s, float v) {{
    double sd, z;
    if (v - v != 0.0f || s->n < WARMUP) return 0.0f;  /* NaN or inf: missing */
    sd = sqrt(s->var) + 1e-9 * fabs(s->mean) + SD_MIN;
    z = fabs((double)v - s->mean) / sd;
    return z <= Z0 ? 0.0f : (float)(1.0 - exp(-(z - Z0)));
}}

void {n}_learn({n}_state_t *s, float v) {{
    double a, d, mean, var;
    uint32_t n = s->n < 0xFFFFFFFFu ? s->n + 1u : s->n;
    if (v - v != 0.0f) return;  /* NaN or inf: missing */
    if (n == 1u) {{ s->n = n; s->mean = v; return; }}
    a = 1.0 / (double)n;
    if (a < ALPHA) a = ALPHA;
    d = (double)v - s->mean;
    mean = s->mean + a * d;
    var = (1.0 - a) * (s->var + a * d * d);
    if (!(fabs(mean) < F32_LIMIT && var < F32_LIMIT)) return;  /* would overflow float */
    s->n = n;
    s->mean = mean;
    s->var = var;
}}

float {n}_step({n}_state_t *s, float v) {{
    float score = {n}_score(s, v);
    {n}_learn(s, v);
    return score;
}}

void {n}_run({n}_state_t *s, const float *v, float *out, uint32_t count) {{
    uint32_t i;
    for (i = 0; i < count; ++i) out[i] = {n}_step(s, v[i]);
}}
"""
    host = f"""/* {n}_host_test.c: reads one number per line on stdin, prints its score.
 * Generated by Edgewise.
 * Build: gcc -std=c99 -pedantic -Wall -Wextra -Werror -O2 {n}.c {n}_host_test.c -lm -o {n}_test
 * A word that is no number, or input ending mid-row, ends it: one line on stderr, exit 1. */
{_HOST_READER}#include "{n}.h"

int main(void) {{
    {n}_state_t s;
    double v;
    unsigned long words = 0;
    {n}_init(&s);
    while (host_next(&v, &words)) printf("%.7g\\n", (double){n}_step(&s, (float)v));
    return 0;
}}
"""
    return CExport(n, "detector", {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": host},
                   ram_bytes=ram, flash_bytes=0, n_features=1, dtype=dtype)


# -- regressors: tree ensembles ----------------------------------------------------------------


def _regressor_header(n: str, what: str, nf: int, ram: int, flash: int, extra: str = "") -> str:
    return f"""/* {n}.h: {what}, generated by Edgewise.
 *
 * RAM:   {n.upper()}_RAM_BYTES (= {ram}) bytes of working buffers (static), no heap, no malloc.
 * FLASH: {n.upper()}_FLASH_BYTES (= {flash}) bytes of constant tables, plus code.
 * Use:   float y = {n}_predict(x);  with x holding {n.upper()}_N_FEATURES (= {nf}) floats.
 */
#ifndef {_guard(n)}
#define {_guard(n)}
#include <stdint.h>

#define {n.upper()}_N_FEATURES {nf}
#define {n.upper()}_RAM_BYTES {ram}
#define {n.upper()}_FLASH_BYTES {flash}
{extra}
float {n}_predict(const float *x);
void {n}_predict_many(const float *X, float *out, uint32_t rows);

#endif
"""


def _regressor_host(n: str) -> str:
    rows = _host_rows(f"{n.upper()}_N_FEATURES", "x[i] = (float)v;")
    return f"""/* {n}_host_test.c: reads rows of {n.upper()}_N_FEATURES numbers on stdin,
 * prints one prediction per row.
 * Generated by Edgewise.
 * Build: gcc -std=c99 -pedantic -Wall -Wextra -Werror -O2 {n}.c {n}_host_test.c -lm -o {n}_test
 * A word that is no number, or input ending mid-row, ends it: one line on stderr, exit 1. */
{_HOST_READER}#include "{n}.h"

int main(void) {{
    float x[{n.upper()}_N_FEATURES];
    double v;
    unsigned long words = 0;
    int i;
    for (;;) {{
{rows}        printf("%.7g\\n", (double){n}_predict(x));
    }}
}}
"""


def _many(n: str) -> str:
    return f"""
void {n}_predict_many(const float *X, float *out, uint32_t rows) {{
    uint32_t r;
    for (r = 0; r < rows; ++r) out[r] = {n}_predict(X + (uint32_t){n.upper()}_N_FEATURES * r);
}}
"""


def _zero_band(n: str, zm: np.ndarray | None) -> tuple[str, str, int]:
    """LightGBM's ``zero_as_missing`` features (``zm``), where ``|v| <= 1e-35f`` is missing:
    their table, the C test to append to ``v != v`` (``@F@``: the feature), its flash bytes."""
    if zm is None or not np.any(zm):
        return "", "", 0
    return (_array("uint8_t", f"{n}_zero_missing", np.asarray(zm, dtype=np.int64)),
            f" || ({n}_zero_missing[@F@] && v >= -1e-35f && v <= 1e-35f)", len(zm))


def export_trees(table: TreeTable | QuantizedTrees, name: str = "model") -> CExport:
    """C for a tree ensemble: array tables walked by one loop (float32, or uint8 codes if quantised).

    A missing input (NaN, or zero on a LightGBM ``zero_as_missing`` feature) takes each
    split's missing side (``missing_left``), as the model does; in int8 too, where it is
    none of the 256 codes.
    """  # noqa: E501
    check_c_name(name)
    check_trees(table)
    n = name
    quant = isinstance(table, QuantizedTrees)
    # float32: each tree's leaves centred on 0 and the base added last, so the sum keeps the
    # leaves' precision on a large offset (compress.center_leaves_float32)
    t = table.table if quant else center_leaves_float32(float32_thresholds(table))
    nn, nt, nf = t.n_nodes, t.n_trees, t.n_features
    if nn > 32767 or nf > (127 if quant else 16383):
        raise ExportError(f"Tree ensemble too large for C tables: {nn} nodes (max 32767), "
                          f"{nf} features (max {127 if quant else 16383}). Prune it first.")
    leaf = t.feature < 0
    zm_table, zm_test, zm_flash = _zero_band(n, table.zero_missing)
    if quant:
        # A threshold below the calibration range (code < 0) is never reached by a code 0..255:
        # the node always goes right for a value. Its right child is stored negated (the
        # feature stays, for a missing input); clipping it to 0 instead sent every input in
        # the lowest bin left. One above the range clips to 255, which every code is <=
        # (always left), as it should. Feature byte: 0xFF leaf, else the feature | 0x80 when
        # a missing input goes left.
        never = ~leaf & (t.threshold < 0)
        feat = np.where(leaf, 0xFF, t.feature | np.where(t.missing_left, 0x80, 0))
        slot = np.where(leaf, t.value, np.where(never, -t.right, t.right)).astype(np.int64)
        thr = np.where(leaf | never, 0, np.clip(t.threshold, 0, 255)).astype(np.int64)
        if never.any():
            cmp = (f"{n}_right_or_leaf[i] >= 0 && q[f] <= {n}_thr[i]"
                   "  /* right < 0: always right */")
            right = f"({n}_right_or_leaf[i] < 0 ? -{n}_right_or_leaf[i] : {n}_right_or_leaf[i])"
        else:
            cmp, right = f"q[f] <= {n}_thr[i]", f"{n}_right_or_leaf[i]"
        flash = nn * 4 + nt * 2 + nf * 8 + zm_flash
        # the base as a float32 and its rest, added to the leaves' small sum before the
        # base: the float base alone was off by up to half a float32 step (y = 101325.1 + x:
        # C 0.0073 from QuantizedTrees.predict, which says it predicts as the C does)
        with np.errstate(over="ignore"):
            base32 = float(np.float32(t.base))
        rest = t.base - base32 if np.isfinite(base32) else 0.0
        tables = (_array("uint8_t", f"{n}_feature", feat)
                  + _array("uint8_t", f"{n}_thr", thr)
                  + _array("int16_t", f"{n}_right_or_leaf", slot)
                  + _array("uint16_t", f"{n}_roots", t.roots)
                  + _array("float", f"{n}_lo", table.lo, _f)
                  + _array("float", f"{n}_step", table.step, _f)
                  + zm_table)
        body = f"""
/* x missing at f (NaN{", or zero where that is missing" if zm_test else ""}) */
static int missing(const float *x, int f) {{
    float v = x[f];
    return v != v{zm_test.replace("@F@", "f")};
}}

/* codes q; x: the inputs, for their missing ones (0: none missing) */
static float walk(const uint8_t *q, const float *x) {{
    int32_t acc = 0;
    uint16_t tr;
    for (tr = 0; tr < {nt}u; ++tr) {{
        int32_t i = {n}_roots[tr];
        while ({n}_feature[i] != 0xFFu) {{
            int f = {n}_feature[i] & 0x7F;
            int left = x && missing(x, f) ? ({n}_feature[i] & 0x80u) != 0
                                          : {cmp};
            i = left ? i + 1 : {right};
        }}
        acc += {n}_right_or_leaf[i];
    }}
    return {_f(base32)} + ({_f(rest)} + {_f(table.leaf_scale)} * (float)acc);
}}

float {n}_predict_q(const uint8_t *q) {{
    return walk(q, 0);
}}

float {n}_predict(const float *x) {{
    uint8_t q[{nf}];
    int j;
    for (j = 0; j < {nf}; ++j) {{  /* NaN: code 0, unread (the walk takes its missing side) */
        float c = floorf((x[j] - {n}_lo[j]) / {n}_step[j]);
        q[j] = (uint8_t)(c >= 255.0f ? 255.0f : (c >= 0.0f ? c : 0.0f));
    }}
    return walk(q, x);
}}
"""
        extra = (f"/* int8: features coded 0..255 (q = floor((x - lo) / step)); leaves int16 x "
                 f"{float(table.leaf_scale):.6g}. {n}_predict takes a missing input's side at "
                 f"each split; {n}_predict_q has none. */\n"
                 f"float {n}_predict_q(const uint8_t *q);\n")
        ram = nf
        what = f"{nt} trees, {nn} nodes, uint8 features / int16 leaves"
    else:
        feat = np.where(leaf, -1, t.feature | np.where(t.missing_left, 0x4000, 0))
        slot = np.where(leaf, t.value, t.threshold)
        flash = nn * 8 + nt * 2 + zm_flash
        tables = (_array("int16_t", f"{n}_feature", feat)
                  + _array("uint16_t", f"{n}_right", np.where(leaf, 0, t.right))
                  + _array("float", f"{n}_thr_or_leaf", slot, _f, 8)
                  + _array("uint16_t", f"{n}_roots", t.roots)
                  + zm_table)
        if zm_test:
            decide = (f"int miss = v != v{zm_test.replace('@F@', 'f & 0x3FFF')};\n"
                      f"            if (miss ? (f & 0x4000) != 0 : v <= {n}_thr_or_leaf[i])")
        else:
            decide = f"if (v <= {n}_thr_or_leaf[i] || (v != v && (f & 0x4000)))"
        body = f"""
float {n}_predict(const float *x) {{
    float acc = 0.0f;  /* each tree's leaves are centred on 0: the base is added last */
    uint16_t tr;
    for (tr = 0; tr < {nt}u; ++tr) {{
        uint16_t i = {n}_roots[tr];
        while ({n}_feature[i] >= 0) {{
            int16_t f = {n}_feature[i];
            float v = x[f & 0x3FFF];
            {decide} i = (uint16_t)(i + 1u);
            else i = {n}_right[i];
        }}
        acc += {n}_thr_or_leaf[i];
    }}
    return {_f(t.base)} + acc;
}}
"""
        extra = ""
        ram = 0
        what = f"{nt} trees, {nn} nodes, float32"
    c = (f"/* {n}.c: {what}. Generated by Edgewise. */\n#include <math.h>\n#include \"{n}.h\"\n\n"
         + tables + body + _many(n))
    h = _regressor_header(n, f"tree ensemble ({what})", nf, ram, flash, extra)
    files = {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": _regressor_host(n)}
    return CExport(n, "regressor", files,
                   ram_bytes=ram, flash_bytes=flash, n_features=nf,
                   dtype="int8" if quant else "float32",
                   calibration_rmse=table.calibration_rmse if quant else None,
                   calibration_std=table.calibration_std if quant else None)


# -- regressors: small MLP ---------------------------------------------------------------------


def mlp_layers(model: Any) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Read a torch ``Sequential`` of Linear and ReLU/Tanh into (W, b, activation) triples.

    A subclass that defines its own ``forward`` (or a module with forward hooks) is an
    :class:`ExportError`: the C computes the layers in order and nothing else (a subclass
    whose forward scaled the output by 125 was off by 87.5 in C).

    >>> import torch
    >>> [(w.shape, act) for w, b, act in mlp_layers(torch.nn.Sequential(
    ...     torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)))]
    [((4, 3), 'relu'), ((1, 4), 'none')]
    """
    from edgewise.edge.compress import check_not_overridden

    check_not_overridden(
        model, "Sequential", ("forward", "__call__", "_call_impl"),
        hint="Export to ONNX instead (format='onnx' traces forward), or export a plain "
             "torch.nn.Sequential of its layers and apply the rest on the device.")
    hooked = [type(m).__name__ for m in model.modules()
              if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)]
    if hooked:
        raise ExportError(
            f"Cannot export {type(model).__name__} to C: forward hooks on {hooked[:4]} may "
            "change what it computes, and the C computes its layers only. Remove the hooks "
            "(handle.remove()) or export to ONNX (format='onnx').")
    layers: list[tuple[np.ndarray, np.ndarray, str]] = []
    prev = ""  # the kind of the last layer read (Dropout, Identity, Flatten aside)
    for k, mod in enumerate(model):
        kind = type(mod).__name__
        if kind == "Linear":
            w = mod.weight.detach().cpu().numpy().astype(np.float64)
            b = (mod.bias.detach().cpu().numpy().astype(np.float64) if mod.bias is not None
                 else np.zeros(w.shape[0]))
            _check_finite_float32(w, f"layer {k} (Linear) weight")
            _check_finite_float32(b, f"layer {k} (Linear) bias")
            layers.append((w, b, "none"))
        elif kind in ("ReLU", "Tanh") and layers and layers[-1][2] == "none":
            w, b, _ = layers[-1]
            layers[-1] = (w, b, kind.lower())
        elif kind in ("Dropout", "Identity", "Flatten"):
            continue
        elif kind in ("ReLU", "Tanh"):  # first, or after another activation
            after = f"follows {prev}" if prev else "comes first"
            raise ExportError(
                f"Cannot export this Sequential to C: its layer {k}, {kind}, {after}; a ReLU "
                "or Tanh must follow a Linear (one activation per Linear). Supported: Linear, "
                "each optionally followed by ReLU or Tanh, and Dropout, Identity, Flatten.")
        else:
            raise ExportError(f"Cannot export a Sequential containing {kind} to C. Supported: "
                              "Linear, ReLU, Tanh, Dropout, Identity, Flatten.")
        prev = kind
    if not layers or layers[-1][0].shape[0] != 1:
        raise ExportError("C export of an MLP needs a Sequential ending in Linear(…, 1).")
    return layers


def _check_finite_float32(values: np.ndarray, what: str) -> None:
    """:class:`ExportError` naming the first entry of ``values`` that is not a finite float32.

    A NaN weight (a diverged training) made C that did not compile, and int8 C that
    predicted numbers (-0.58) where torch gives NaN; an infinite one, or one beyond float's
    range, turned the int8 row's scale infinite and every prediction NaN.

    >>> _check_finite_float32(np.array([[0.5, np.nan]]), "layer 0 (Linear) weight")
    Traceback (most recent call last):
    ...
    edgewise.errors.ExportError: Cannot export to C: layer 0 (Linear) weight [0, 1] is nan; every weight and bias must be a finite float32 (|v| <= 3.4028235e+38). Retrain or repair the model (a NaN weight: training diverged).
    """  # noqa: E501
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(values.astype(np.float32))
    if bad.any():
        at = np.argwhere(bad)[0]
        raise ExportError(
            f"Cannot export to C: {what} [{', '.join(str(int(i)) for i in at)}] is "
            f"{float(values[tuple(at)])!r}; every weight and bias must be a finite float32 "
            f"(|v| <= {float(np.finfo(np.float32).max):.8g}). Retrain or repair the model (a "
            "NaN weight: training diverged).")


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``w ≈ scale[:, None] * q``."""
    scale = np.abs(w).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale


def mlp_reference(layers: list[tuple[np.ndarray, np.ndarray, str]], X: np.ndarray,
                  int8: bool) -> np.ndarray:
    """What the generated C computes, in numpy float32 (int8: per-row dequantised weights,
    ``scale * q`` in float32, each weight scaled before it meets an input as in the C: summing
    ``q * x`` first took a large finite input, 1e38, beyond float's range, to NaN)."""
    h = np.asarray(X, np.float32)
    for w, b, act in layers:
        if int8:
            q, s = quantize_rows(w)
            wq = s.astype(np.float32)[:, None] * q.astype(np.float32)
            h = h @ wq.T + b.astype(np.float32)
        else:
            h = h @ w.astype(np.float32).T + b.astype(np.float32)
        if act == "relu":
            h = np.maximum(h, 0)
        elif act == "tanh":
            h = np.tanh(h)
    return h[:, 0].astype(np.float64)


def export_mlp(model: Any, name: str = "model", dtype: str = "float32") -> CExport:
    """C for a small torch MLP: dense layers over two static buffers (int8: per-row weight scales)."""  # noqa: E501
    check_c_name(name)
    n = name
    layers = mlp_layers(model)
    int8 = dtype == "int8"
    nf = layers[0][0].shape[1]
    width = max(max(w.shape[0] for w, _, _ in layers), nf)
    tables, calls, flash = [], [], 0
    for k, (w, b, act) in enumerate(layers):
        out_n, in_n = w.shape
        if int8:
            q, s = quantize_rows(w)
            tables.append(_array("int8_t", f"{n}_w{k}", q.ravel(), str, 16))
            tables.append(_array("float", f"{n}_s{k}", s, _f, 8))
            flash += q.size + 4 * s.size
        else:
            tables.append(_array("float", f"{n}_w{k}", w.ravel(), _f, 8))
            flash += 4 * w.size
        tables.append(_array("float", f"{n}_b{k}", b, _f, 8))
        flash += 4 * b.size
        src = "x" if k == 0 else f"buf[{(k - 1) % 2}]"
        dst = f"buf[{k % 2}]"
        # int8: each weight times its row's scale before it meets an input, as a float
        # weight does (q * x summed first overflowed float for a large finite x: NaN)
        weight = (f"({n}_s{k}[o] * (float){n}_w{k}[o * {in_n} + i])" if int8
                  else f"{n}_w{k}[o * {in_n} + i]")
        # NaN stays NaN through ReLU, as in torch (acc > 0 ? acc : 0 made it a plausible 0)
        actc = {"relu": "acc = acc < 0.0f ? 0.0f : acc;", "tanh": "acc = tanhf(acc);",
                "none": ""}[act]
        calls.append(f"""    for (o = 0; o < {out_n}; ++o) {{
        float acc = 0.0f;
        for (i = 0; i < {in_n}; ++i) acc += {weight} * {src}[i];
        acc = acc + {n}_b{k}[o];
        {actc}
        {dst}[o] = acc;
    }}""")
    last = f"buf[{(len(layers) - 1) % 2}][0]"
    ram = 2 * width * 4
    c = (f"/* {n}.c: MLP {[w.shape[1] for w, _, _ in layers] + [1]}, {dtype}. Generated by "
         f"Edgewise. */\n#include <math.h>\n#include \"{n}.h\"\n\n" + "".join(tables)
         + f"\nstatic float buf[2][{width}];\n\nfloat {n}_predict(const float *x) {{\n"
         "    int o, i;\n" + "\n".join(calls) + f"\n    return {last};\n}}\n" + _many(n))
    h = _regressor_header(n, f"MLP regressor ({dtype} weights)", nf, ram, flash)
    files = {f"{n}.h": h, f"{n}.c": c, f"{n}_host_test.c": _regressor_host(n)}
    return CExport(n, "regressor", files,
                   ram_bytes=ram, flash_bytes=flash, n_features=nf, dtype=dtype)
