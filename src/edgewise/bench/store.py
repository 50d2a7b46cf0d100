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

from edgewise.store import open_store
from edgewise.telemetry import Reading

__all__ = ["make_batch", "run_store_bench"]

T0 = 1_700_000_000 * 10**9
METRICS = ("temp_c", "rpm", "vib_x", "vib_y", "vib_z", "current_a", "pressure_bar", "flow_lpm")


def make_batch(k: int, size: int, devices: int) -> list[Reading]:
    """Batch ``k``: ``size`` readings, 8 metrics per message, spread over ``devices``."""
    per_device = max(size // (devices * len(METRICS)), 1)
    out = []
    for d in range(devices):
        for i in range(per_device):
            n = k * per_device + i
            for j, m in enumerate(METRICS):
                out.append(Reading(f"pump-{d:03d}", m, T0 + n * 10**9, float(n % 97) + j, n + 1))
    return out


def _stats(times: list[float], n: int) -> dict[str, float]:
    med = statistics.median(times)
    return {"readings": n, "median_ms": round(med * 1000, 2),
            "max_ms": round(max(times) * 1000, 2), "readings_per_s": round(n / med)}


def run_store_bench(
    url: str = "", *, batch: int = 10_000, batches: int = 20, devices: int = 20
) -> dict[str, Any]:
    """Append ``batches`` fresh batches of ``batch`` readings, re-append them, then query.

    ``url`` empty means a DuckDB file in a temporary folder. A ``postgresql://`` URL
    without ``?schema=`` gets a fresh schema that is dropped afterwards.
    """
    tmp = None
    drop_schema = None
    if not url:
        tmp = tempfile.TemporaryDirectory()
        url = f"duckdb://{Path(tmp.name) / 'bench.duckdb'}"
    elif url.startswith("postgres") and "schema=" not in url:
        drop_schema = f"ew_bench_{uuid.uuid4().hex[:10]}"
        url = f"{url}{'&' if '?' in url else '?'}schema={drop_schema}"
    store = open_store(url)
    try:
        data = [make_batch(k, batch, devices) for k in range(batches)]
        n = len(data[0])
        append = []
        for b in data:
            t = time.perf_counter()
            r = store.append(b)
            append.append(time.perf_counter() - t)
            assert r.stored == n, r
        dup = []
        for b in data[-5:]:
            t = time.perf_counter()
            r = store.append(b)
            dup.append(time.perf_counter() - t)
            assert r.duplicates == n, r
        total = store.count_readings()
        q, qs = [], []
        rows = 0
        for d in range(min(devices, 5)):
            t = time.perf_counter()
            rows = len(store.query(f"pump-{d:03d}", "temp_c"))
            q.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.query(f"pump-{d:03d}", step_ns=60 * 10**9)
            qs.append(time.perf_counter() - t)
        return {
            "store": url.split("?")[0] if drop_schema else url,
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
        store.close()
        if drop_schema:
            import psycopg

            base = url.split("?")[0]
            with psycopg.connect(base, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{drop_schema}" CASCADE')
        if tmp is not None:
            tmp.cleanup()
