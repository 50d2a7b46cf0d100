"""Store throughput: appends of fresh and re-delivered batches, and queries, per backend.

>>> r = run_store_bench("duckdb://:memory:", batch=800, batches=3, devices=2)
>>> r["append"]["readings"] == 800 and r["append"]["readings_per_s"] > 0
True
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from edgewise.config import shown_url
from edgewise.store import duckdb_file, open_store
from edgewise.telemetry import Reading

__all__ = ["check_store_options", "make_batch", "run_store_bench"]

T0 = 1_700_000_000 * 10**9
METRICS = ("temp_c", "rpm", "vib_x", "vib_y", "vib_z", "current_a", "pressure_bar", "flow_lpm")


def make_batch(k: int, size: int, devices: int, prefix: str = "bench") -> list[Reading]:
    """Batch ``k``: ``size`` readings (rounded down to whole messages per device, at least
    one), 8 metrics per message, spread over ``devices`` named ``{prefix}-000`` …"""
    per_device = max(size // (devices * len(METRICS)), 1)
    out = []
    for d in range(devices):
        for i in range(per_device):
            n = k * per_device + i
            for j, m in enumerate(METRICS):
                out.append(Reading(f"{prefix}-{d:03d}", m, T0 + n * 10**9, float(n % 97) + j,
                                   n + 1))
    return out


def check_store_options(url: str, batch: int, batches: int, devices: int) -> None:
    """Raise :class:`~edgewise.errors.ConfigError` naming the first bad option; a DuckDB
    file must not exist yet (the bench makes it for the run and removes it after, so it
    never writes into a store that holds data).

    >>> check_store_options("", batch=100, batches=3, devices=20)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --batch must be at least --devices x 8 = 160 (one 8-metric message per device). Got 100 instead.
    """  # noqa: E501
    from edgewise.errors import ConfigError

    for name, value in (("--devices", devices), ("--batches", batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1. Got {value!r} instead.")
    need = devices * len(METRICS)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < need:
        raise ConfigError(f"--batch must be at least --devices x {len(METRICS)} = {need} (one "
                          f"{len(METRICS)}-metric message per device). Got {batch!r} instead.")
    path = duckdb_file(url)
    if path is not None and (path.exists() or Path(f"{path}.wal").exists()):
        raise ConfigError(
            f"--store {shown_url(url)!r} names an existing DuckDB file; the bench writes and "
            f"deletes test readings, so give a path that does not exist yet (made for the "
            f"run, removed after) or leave --store out.")


def _is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL store, its scheme read as :func:`open_store`
    reads it (in any case: ``PostgreSQL://`` too).

    >>> _is_postgres("PostgreSQL://ew@db/ew"), _is_postgres("duckdb:///x.duckdb")
    (True, False)
    """
    scheme = url.partition("://")[0].lower()
    return scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+")


def _stats(times: list[float], n: int) -> dict[str, float]:
    med = statistics.median(times)
    return {"readings": n, "median_ms": round(med * 1000, 2),
            "max_ms": round(max(times) * 1000, 2), "readings_per_s": round(n / med)}


def run_store_bench(
    url: str = "", *, batch: int = 10_000, batches: int = 20, devices: int = 20
) -> dict[str, Any]:
    """Append ``batches`` fresh batches of ``batch`` readings, re-append them, then query.

    ``url`` empty means a DuckDB file in a temporary folder; a ``duckdb:///PATH`` must not
    exist yet and is removed afterwards, with the folders made for it. A ``postgresql://``
    URL (the scheme in any case) without ``?schema=`` gets a fresh schema that is dropped
    afterwards; with one, the bench's devices (ids of their own, ``bench-<random>-NNN``)
    are deleted afterwards and nothing else is touched: no ``VACUUM FULL`` (:meth:`purge`),
    which would lock every table of a store the bench did not make. The URL is reported and
    named in errors as :func:`~edgewise.config.shown_url` shows it (no password).
    """
    from edgewise.errors import StoreError

    check_store_options(url, batch, batches, devices)
    tmp = None
    drop_schema = None
    remove_file = duckdb_file(url)
    # the folders the store will make for the file (deepest first): removed with it, so a
    # mistyped --store leaves no empty folders behind
    made = [] if remove_file is None else [a for a in remove_file.parents if not a.exists()]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    shown = shown_url(url)
    conninfo = None
    if not url:
        tmp = tempfile.TemporaryDirectory()
        url = f"duckdb://{Path(tmp.name) / 'bench.duckdb'}"
        shown = url
    elif _is_postgres(url):
        from edgewise.store.postgres import _split_url

        conninfo, schema, _ = _split_url(url)  # the schema as the store will read it
        if schema is None:
            drop_schema = f"ew_bench_{uuid.uuid4().hex[:10]}"
            url = f"{url}{'&' if '?' in url else '?'}schema={drop_schema}"
    store = open_store(url)
    try:
        data = [make_batch(k, batch, devices, prefix) for k in range(batches)]
        n = len(data[0])
        append = []
        for b in data:
            t = time.perf_counter()
            r = store.append(b)
            append.append(time.perf_counter() - t)
            if r.stored != n:
                raise StoreError(f"Store {shown!r} stored {r.stored} of {n} fresh "
                                 f"bench readings ({r.duplicates} duplicates); the figures "
                                 f"would not be of fresh appends.")
        dup = []
        for b in data[-5:]:
            t = time.perf_counter()
            r = store.append(b)
            dup.append(time.perf_counter() - t)
            if r.duplicates != n:
                raise StoreError(f"Store {shown!r} took {r.duplicates} of {n} "
                                 f"re-delivered bench readings as duplicates; expected all.")
        total = store.count_readings()
        q, qs = [], []
        rows = 0
        for d in range(min(devices, 5)):
            t = time.perf_counter()
            rows = len(store.query(f"{prefix}-{d:03d}", "temp_c"))
            q.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.query(f"{prefix}-{d:03d}", step_ns=60 * 10**9)
            qs.append(time.perf_counter() - t)
        return {
            "store": shown,
            "batch": n,
            "batches": batches,
            "stored_total": total,
            "append": _stats(append, n),
            "append_duplicates": _stats(dup, n),
            "query_one_metric": {"rows": rows, "median_ms": round(statistics.median(q) * 1000, 2),
                                 "rows_per_s": round(rows / statistics.median(q))},
            "query_downsampled_all_metrics_ms": round(statistics.median(qs) * 1000, 2),
        }
    finally:
        try:
            if tmp is None and remove_file is None and not drop_schema:  # not the bench's
                for d in range(devices):  # its own devices only; never a purge (VACUUM FULL)
                    store.delete_device(f"{prefix}-{d:03d}", purge=False)
        finally:
            store.close()
        if remove_file is not None:
            for f in (remove_file, Path(f"{remove_file}.wal")):
                f.unlink(missing_ok=True)
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:  # something else was put there meanwhile: it stays
                    break
        if drop_schema:
            import psycopg

            with psycopg.connect(conninfo, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{drop_schema}" CASCADE')
        if tmp is not None:
            tmp.cleanup()
