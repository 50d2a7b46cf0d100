"""Shared fixtures: where the real data lives, free ports, and which services answer."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]

# One BLAS thread per process: the suite runs two xdist workers on two cores, and OpenBLAS's
# second thread per process only contends for them (a small logistic-regression fit cost
# 14-17 ms of CPU with it, 2-3 ms without; same coefficients). Subprocesses the tests start
# inherit the variable; this process's BLAS, loaded already, is limited at run time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
threadpool_limits(1, user_api="blas")
# One OpenMP thread too (scikit-learn's KMeans and HistGradientBoosting, LightGBM): with two
# workers on two cores a test's OpenMP threads fight the other worker's (a C-MAPSS RUL fit,
# 54 KMeans fits: 27-38 s loaded, 3.4-5.4 s with one thread).
os.environ.setdefault("OMP_NUM_THREADS", "1")
threadpool_limits(1, user_api="openmp")


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``EDGEWISE_SHARED_DATA``."""
    env = os.environ.get("EDGEWISE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, drawn at random below the
    kernel's ephemeral range (32768 and up on Linux).

    A port the kernel hands out (``bind(("127.0.0.1", 0))``) is also what it gives the next
    outgoing connection or the other xdist worker's next ``free_port``: a gateway that a
    test kills and restarts on its port then found it taken ("address already in use"),
    and its devices talked to someone else's broker.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-31999 after 200 tries")

def random_values(seed: int, n: int = 200) -> list[float]:
    """``n`` distinct-looking floats in [-1e6, 1e6] drawn with ``seed``: values whose
    float64 bytes can be searched for in a store's files (:func:`values_on_disk`)."""
    rng = random.Random(seed)
    return [rng.uniform(-1e6, 1e6) for _ in range(n)]


def values_on_disk(path: Path, values: list[float]) -> int:
    """How many of ``values``, as float64 bytes, are in the store file ``path`` or its
    write-ahead log (``<path>.wal``): 0 once a deletion really erased them."""
    data = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + ".wal"))
                    if p.exists())
    return sum(struct.pack("<d", v) in data for v in values)


@contextmanager
def tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs, e.g. ``"3m"``) at ``tmp_path / "disk"``:
    needs root to mount, else the test is skipped; unmounted lazily after (a failed test
    may hold it)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip(f"mounting a {size} tmpfs needs root; not root here")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB filesystem (tmpfs): needs root to mount, else the test is skipped."""
    with tmpfs(tmp_path, "3m") as mnt:
        yield mnt


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """The SQLite file ``path`` write-locked by another connection (``BEGIN IMMEDIATE``, as
    another process's import or command holds it) until the block ends."""
    import sqlite3

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@contextmanager
def dml_only_role(postgres_url: str, schema: str, prefix: str,
                  grants: str = "SELECT, INSERT, UPDATE, DELETE") -> Iterator[tuple[str, str]]:
    """A login role allowed only ``grants`` (by default SELECT, INSERT, UPDATE and DELETE)
    on ``schema``'s tables (it owns none of them), as ``(role, its store URL on schema)``;
    dropped afterwards."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    role = f"{prefix}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"; GRANT {grants} '
                      f'ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
    parts = urlsplit(postgres_url)
    url = urlunsplit((parts.scheme, f"{role}@{parts.netloc.rpartition('@')[2]}", parts.path,
                      f"schema={schema}", ""))
    try:
        yield role, url
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}" CASCADE')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and 127.0.0.1 that no system CA signed (its own
    CA, so a client may trust it by file), and its key: PEM files ``cert.pem``, ``key.pem``
    in ``folder``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cp, kp = folder / "cert.pem", folder / "key.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


def wait_until(cond: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``cond`` every ``step`` seconds until it is true (``True``) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def score_one_by_one(det: object, values: object, name: str = "v") -> np.ndarray:
    """Score, then learn, each value in turn (``{name: value}``; a dict is the reading
    itself): the loop a detector's ``score_many`` must equal."""
    out = []
    for v in values:  # type: ignore[attr-defined]
        x = v if isinstance(v, dict) else {name: v}
        out.append(det.score_one(x))  # type: ignore[attr-defined]
        det.learn_one(x)  # type: ignore[attr-defined]
    return np.array(out)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data (NAB, C-MAPSS)."""
    path = shared_data_dir()
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"shared data missing at {path}; CI must have ../shared beside the clone")
        pytest.skip(f"shared data not found at {path} (set EDGEWISE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL at 127.0.0.1:5432 (trust auth, database 'test')."""
    url = os.environ.get("EDGEWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    if not port_answers("127.0.0.1", 5432):
        if IN_CI:
            pytest.fail("PostgreSQL at 127.0.0.1:5432 does not answer; CI expects it")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 does not answer")
    return url


@pytest.fixture(scope="session")
def mosquitto_port() -> int:
    """The Mosquitto broker at 127.0.0.1:1883."""
    if not port_answers("127.0.0.1", 1883):
        if IN_CI:
            pytest.fail("Mosquitto at 127.0.0.1:1883 does not answer; CI expects it")
        pytest.skip("Mosquitto at 127.0.0.1:1883 does not answer")
    return 1883


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh, empty Edgewise data directory."""
    d = tmp_path / "ewdata"
    d.mkdir()
    return d


def start_demo(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str], int]:
    """Start ``edgewise demo`` on free ports with ``data_dir`` and read its banner up to
    "Ctrl-C stops"; return the process, the banner's lines and the HTTP port. The process is
    killed if the banner cannot be read."""
    http, mqtt_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "demo", "--data-dir", str(data_dir),
         "--port", str(http), "--mqtt-port", str(mqtt_port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C stops"):
                break
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, lines, http


def demo_stored(http_port: int) -> float:
    """``edgewise_readings_stored_total`` of the gateway answering on ``http_port``."""
    import httpx

    m = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    return next(float(ln.split()[-1]) for ln in m.splitlines()
                if ln.startswith("edgewise_readings_stored_total "))


def wait_stored(http_port: int, at_least: float, timeout: float) -> float:
    """Poll :func:`demo_stored` until it reaches ``at_least`` or ``timeout`` s pass; the
    last count."""
    deadline = time.monotonic() + timeout
    stored = demo_stored(http_port)
    while stored < at_least and time.monotonic() < deadline:
        time.sleep(0.3)
        stored = demo_stored(http_port)
    return stored


def stop_demo(proc: subprocess.Popen[str]) -> str:
    """Stop a demo started by :func:`start_demo` with Ctrl-C and return the rest of its
    output; killed if it has not stopped within 60 s."""
    import signal

    try:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        return rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
