"""Hunt fixes in ``edgewise demo --tls-cert``: a certificate the simulated pumps would not
trust is refused in one line before anything starts (it was a traceback after 14 s), the
pumps connect by a name the certificate holds, and pumps that cannot connect leave no
gateway running (its lock and store were left open)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from tests.conftest import REPO, free_port, start_demo, stop_demo, wait_until

load_commands()


def _cert(name: str, sans: list[x509.GeneralName] | None, issuer: x509.Certificate | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.subject if issuer else subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=1))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                        critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256()), key


def _files(folder: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
           *chain: x509.Certificate) -> tuple[str, str]:
    cp, kp = folder / "cert.pem", folder / "key.pem"
    cp.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain)))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(cp), str(kp)


LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _another_hosts(folder: Path) -> tuple[str, str]:
    return _files(folder, *_cert("gw.example.com", [x509.DNSName("gw.example.com")]))


def _leaf_without_its_ca(folder: Path) -> tuple[str, str]:
    ca, ca_key = _cert("demo CA", None)
    return _files(folder, *_cert("127.0.0.1", LOOPBACK, ca, ca_key))


@pytest.mark.parametrize(("make", "why"), [
    (_another_hosts, "(it names gw.example.com, neither 127.0.0.1 nor localhost)"),
    (_leaf_without_its_ca, "(unable to get local issuer certificate)"),
])
def test_demo_refuses_a_certificate_its_pumps_would_not_trust(tmp_path, make, why) -> None:
    """Check the demo with a certificate its pumps (dialling 127.0.0.1, trusting the file
    only) refuse ended in a traceback after 14 s, naming no TLS, its files left behind."""
    cert, key = make(tmp_path)
    d = tmp_path / "d"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "edgewise", "demo", "--data-dir", str(d), "--pumps", "2",
             "--port", str(free_port()), "--mqtt-port", str(free_port()),
             "--tls-cert", cert, "--tls-key", key],
            capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"still running after 60 s: {exc.output}")
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --tls-cert {cert!r}"), lines
    assert why in lines[0] and "names 127.0.0.1 or localhost" in lines[0], lines[0]
    assert took < 30, took
    assert not (d / "security.sqlite").exists()  # refused before anything was made


def test_demo_with_a_localhost_certificate_connects_its_pumps_by_that_name(
        tmp_path: Path) -> None:
    """Check a certificate naming localhost only serves the demo: its pumps dialled
    127.0.0.1 and failed the name check."""
    cert, key = _files(tmp_path, *_cert("localhost", [x509.DNSName("localhost")]))
    proc, lines, http = start_demo(tmp_path / "d", "--pumps", "2", "--tls-cert", cert,
                                   "--tls-key", key)

    def stored() -> float:
        m = httpx.get(f"https://127.0.0.1:{http}/metrics", verify=False, timeout=10).text
        return next(float(ln.split()[-1]) for ln in m.splitlines()
                    if ln.startswith("edgewise_readings_stored_total "))

    try:
        out = "\n".join(lines)
        assert "Ctrl-C stops." in out, out
        assert "2 simulated pumps on MQTT localhost:" in out, out
        assert wait_until(lambda: stored() >= 2 * 8 * 50, 60)
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, rest
    assert "stopped;" in rest


def test_a_demo_whose_pumps_cannot_connect_stops_its_gateway(tmp_path: Path,
                                                             monkeypatch) -> None:
    """Check pumps failing to connect (after the gateway started) left the gateway's
    lock held and its store open: ``runner.start`` was outside the try that stops it."""
    from edgewise.gateway.presence import gateway_running
    from edgewise.sim.fleet import FleetRunner

    def start(self: FleetRunner) -> FleetRunner:
        raise ConnectionError("Device 'pump-01' could not connect to 127.0.0.1:1 within "
                              "10 s; last error: stands in.")

    monkeypatch.setattr(FleetRunner, "start", start)
    d = tmp_path / "d"
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        res = CliRunner(mix_stderr=False).invoke(
            app, ["demo", "--data-dir", str(d), "--pumps", "2", "--port", str(free_port()),
                  "--mqtt-port", str(free_port())])
    finally:
        os.umask(umask)  # the demo makes this process's files private
    assert not gateway_running(d), "the gateway was left running"
    assert res.exit_code == 2, (res.exception, res.output)
    assert ("error: the demo's simulated pumps could not connect to its MQTT broker on "
            "127.0.0.1:") in res.stderr and "last error: stands in." in res.stderr
    assert "admin token (shown once, keep it; the demo did not start):" in res.stderr
    assert (d / "demo-labels.json").exists()
