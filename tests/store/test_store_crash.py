"""Store crash loop: a writer killed with SIGKILL at random moments loses no committed batch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.errors import StoreCorruptError
from edgewise.store.duckdb import DuckDBStore, repair
from tests.store._crash_writer import T0

REPO = Path(__file__).resolve().parents[2]
BATCH = 400


# A writer started one iteration ahead: its interpreter start and imports (most of each
# iteration's time) overlap the previous writer's run and check; it opens the store only
# when told (a line on stdin), once that writer is dead and the check has closed the store.
_WRITER = ("import sys\n"
           "from tests.store import _crash_writer\n"
           "sys.stdin.readline()\n"
           "_crash_writer.main()\n")


def _writer(path: Path, every: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(BATCH), str(every)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=REPO,
    )


def _run_loop(path: Path, iterations: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    # (checkpoint every, time to the kill) per iteration, drawn in the order they always were
    plan = [(rng.choice([0, 3, 7]), rng.uniform(0.0, 0.4)) for _ in range(iterations)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    printed: set[int] = set()
    failed_reopen: list[str] = []
    lost: list[int] = []
    partial: list[tuple[int, int]] = []
    proc: subprocess.Popen[str] | None = None
    ahead: subprocess.Popen[str] | None = _writer(path, plan[0][0], env)
    try:
        for it, (_, pause) in enumerate(plan):
            proc, ahead = ahead, None
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            first = proc.stdout.readline()
            assert first.startswith("start"), (first, proc.stderr.read() if proc.stderr else "")
            if it + 1 < iterations:
                ahead = _writer(path, plan[it + 1][0], env)
            time.sleep(pause)
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, proc.returncode
            # a line is only a commit when it is complete (the kill can cut a write short)
            lines = out.split("\n")
            printed.update(int(x) for x in lines[:-1] if x.strip())
            try:
                store = DuckDBStore(path)
            except StoreCorruptError as exc:
                failed_reopen.append(f"iteration {it}: {exc}")
                repair(path)
                store = DuckDBStore(path)
            try:
                counts: dict[int, int] = {}
                for _, ts, _ in store.query("crash"):
                    k = (ts - T0) // BATCH
                    counts[k] = counts.get(k, 0) + 1
                lost.extend(k for k in printed if counts.get(k, 0) != BATCH)
                partial.extend((k, n) for k, n in counts.items() if n != BATCH)
                wm = store.seq_watermark("crash")
                assert wm >= max(printed, default=0), (wm, max(printed, default=0))
                assert set(counts) == set(range(1, wm + 1)), "stored batches are not 1..watermark"
            finally:
                store.close()
    finally:
        for p in (proc, ahead):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    return {"printed": len(printed), "failed_reopen": failed_reopen, "lost": sorted(set(lost)),
            "partial": partial}


def test_store_survives_sigkill_loop(tmp_path: Path) -> None:
    """Check that 20 SIGKILLs of a writer leave 0 failed reopenings and 0 lost batches."""
    result = _run_loop(tmp_path / "crash.duckdb", iterations=20, seed=20)
    assert result["failed_reopen"] == [], result["failed_reopen"]
    assert result["lost"] == [], f"committed batches lost: {result['lost']}"
    assert result["partial"] == [], f"partial batches: {result['partial']}"
    assert result["printed"] > 20, "the writer committed too few batches to test anything"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_store_survives_long_sigkill_loop(tmp_path: Path) -> None:
    """Check the same over 200 kills."""
    result = _run_loop(tmp_path / "crash.duckdb", iterations=200, seed=200)
    assert result["failed_reopen"] == [] and result["lost"] == [] and result["partial"] == [], (
        result)
