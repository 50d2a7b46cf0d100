"""Run a federated round across real processes with Flower's deployment engine.

:class:`LocalFleet` starts one ``flower-superlink`` and N ``flower-supernode`` processes on
loopback (insecure mode, free ports, a private ``FLWR_HOME``), submits the Edgewise Flower
app (``edgewise.federated.server_app:app`` / ``client_app:app``) the way ``flwr run``
does, waits for it to finish and stops every process it started. The pieces can also run
on separate machines: ``edgewise federate server`` starts the SuperLink and submits the run;
each device runs ``edgewise federate client --superlink HOST:PORT --partition-id I``.

The ``flwr`` command line itself cannot start under the Typer version Edgewise pins
(``typer<0.21``), so the run is submitted through ``flwr.cli.run.run`` from Python.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import edgewise
from edgewise.errors import InvalidParameterError

__all__ = ["RUN_DEFAULTS", "LocalFleet", "app_pyproject", "free_port", "supernode_command"]

#: The run config a :class:`LocalFleet` run starts from (``run`` overrides any of it).
RUN_DEFAULTS: dict[str, Any] = {
    "num-server-rounds": 2, "strategy": "trimmed", "dataset": "pump",
    "round-timeout": 60.0, "local-epochs": 1, "num-malicious": 0,
    "beta": 0.0, "dp-noise": 0.0, "dp-clip": 1.0, "data-dir": "",
    "data-dir-publish": "", "seed": 0, "threads": 1, "lr": 0.003,
    "batch-size": 32, "dp-sgd-noise": 0.0, "dp-sgd-clip": 1.0,
    "dp-sgd-epsilon": 0.0, "dp-delta": 1e-5, "evaluate": True,
}

_PYPROJECT = """\
[project]
name = "edgewise-federated"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "edgewise"

[tool.flwr.app.components]
serverapp = "edgewise.federated.server_app:app"
clientapp = "edgewise.federated.client_app:app"

[tool.flwr.app.config]
{config}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect_host(host: str) -> str:
    """The address a process on this machine reaches a SuperLink listening on ``host`` at:
    loopback for the wildcard addresses.

    >>> connect_host("0.0.0.0"), connect_host("::"), connect_host("10.0.0.5")
    ('127.0.0.1', '127.0.0.1', '10.0.0.5')
    """
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def connect_address(host: str, port: int) -> str:
    """Where a process on this machine reaches a SuperLink listening on ``host:port``
    (:func:`connect_host`, with brackets for IPv6).

    >>> connect_address("0.0.0.0", 9092), connect_address("10.0.0.5", 9092)
    ('127.0.0.1:9092', '10.0.0.5:9092')
    >>> connect_address("fe80::1", 9092)
    '[fe80::1]:9092'
    """
    h = connect_host(host)
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raise ``RuntimeError`` naming ``host:port`` when another program listens there (or
    the address cannot be bound), before a SuperLink is started on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = ("is already in use by another program" if exc.errno == errno.EADDRINUSE
                   else f"cannot be bound ({exc.strerror or exc})")
            raise RuntimeError(
                f"Port {port} on {host} {why}; stop that program or choose another --port."
            ) from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def app_pyproject(run_config: dict[str, Any]) -> str:
    """The ``pyproject.toml`` of the Flower app, with ``run_config`` as its defaults.

    >>> "num-server-rounds = 2" in app_pyproject({"num-server-rounds": 2})
    True
    """
    return _PYPROJECT.format(
        config="\n".join(f"{k} = {_toml_value(v)}" for k, v in run_config.items())
    )


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    src = str(Path(edgewise.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_ledger_path(path: str | Path, name: str) -> None:
    """Refuse a ledger path Flower's node config cannot carry (a quote or a line break),
    naming it ``name``."""
    if any(c in str(path) for c in "'\n\r"):
        raise InvalidParameterError(
            f"{name} must not hold a quote or a line break (Flower's node config cannot "
            f"carry it). Got {str(path)!r}.")


def supernode_command(superlink: str, partition_id: int, num_partitions: int,
                      port: int, attack: str = "", max_epsilon: float = 0.0,
                      ledger: str | Path | None = None) -> list[str]:
    """The ``flower-supernode`` command line of one device (``max_epsilon`` > 0: the most
    record-level ε the device will spend, whatever the server asks, checked against its
    privacy ``ledger`` file: :mod:`edgewise.federated.ledger`).

    >>> cmd = supernode_command("127.0.0.1:9092", 0, 3, 9100, max_epsilon=8.0,
    ...                         ledger="/var/lib/edgewise/federated/privacy-ledger-0.json")
    >>> cmd[cmd.index("--node-config") + 1]
    "partition-id=0 num-partitions=3 max-dp-epsilon=8.0 privacy-ledger='/var/lib/edgewise/federated/privacy-ledger-0.json'"
    """  # noqa: E501
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if max_epsilon > 0:
        node_config += f" max-dp-epsilon={float(max_epsilon)}"
    if ledger:
        check_ledger_path(ledger, "The privacy ledger path")
        node_config += f" privacy-ledger='{ledger}'"
    if attack:
        node_config += f' attack="{attack}"'
    return [shutil.which("flower-supernode") or "flower-supernode", "--insecure",
            "--superlink", superlink, "--port", str(port), "--node-config", node_config,
            "--max-retries", "30", "--max-wait-time", "60"]


class LocalFleet:
    """A SuperLink and ``clients`` SuperNodes as separate processes on loopback.

    Parameters
    ----------
    clients
        Number of SuperNodes (devices).
    workdir
        Where logs, results and Flower's state go (a temporary folder by default).
    attacks
        Optional ``{partition_id: attack}`` (see ``client_app.ATTACKS``).
    spawn_nodes
        Start the SuperNodes here (``False``: devices connect from elsewhere with
        ``edgewise federate client``).
    port, host
        Where the SuperLink listens (default: a free port on 127.0.0.1).
    max_epsilon
        Each SuperNode's own record-level ε limit (node config ``max-dp-epsilon``; 0: none),
        held against its privacy ledger ``workdir/privacy-ledger-<partition>.json``
        (:mod:`edgewise.federated.ledger`), which survives a restarted SuperNode.

    Use as a context manager; :meth:`run` submits one federated run and returns its
    ``result.json``.
    """

    def __init__(self, clients: int = 3, workdir: str | Path | None = None,
                 attacks: dict[int, str] | None = None, spawn_nodes: bool = True,
                 port: int | None = None, host: str = "127.0.0.1",
                 max_epsilon: float = 0.0) -> None:
        if clients < 1:
            raise InvalidParameterError(
                f"The 'clients' parameter of LocalFleet must be >= 1. Got {clients} instead."
            )
        self.clients = clients
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgewise-fl-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.attacks = attacks or {}
        self.max_epsilon = max_epsilon
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.host = host
        #: where this machine's processes reach the SuperLink (``host``; loopback for 0.0.0.0)
        self.address = connect_address(host, self.port)
        self.spawn_nodes = spawn_nodes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}

    # -- processes -------------------------------------------------------------------
    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=_env(self.flwr_home), cwd=self.workdir,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> LocalFleet:
        """Start the SuperLink, wait until it answers, then start the SuperNodes."""
        check_port_free(self.host, self.port)
        (self.workdir / "superlink.db").unlink(missing_ok=True)  # a fresh link state each time
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n[superlink.local]\n'
            f'address = "{self.address}"\ninsecure = true\n'
        )
        self._spawn([shutil.which("flower-superlink") or "flower-superlink", "--insecure",
                     "--host", self.host, "--port", str(self.port),
                     "--disable-runtime-dependency-installation",
                     "--database", str(self.workdir / "superlink.db")], "superlink.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((connect_host(self.host), self.port),
                                              timeout=0.5):
                    break
            except OSError:
                if self.procs[0].poll() is not None:
                    raise RuntimeError(self._tail("superlink.log")) from None
                time.sleep(0.2)
        else:
            raise TimeoutError(f"SuperLink did not listen on port {self.port} within 60 s.")
        if self.spawn_nodes:
            for i in range(self.clients):
                self.start_node(i)
        return self

    def start_node(self, partition_id: int) -> None:
        """Start (or restart) the SuperNode of device ``partition_id``."""
        ledger = (self.workdir / f"privacy-ledger-{partition_id}.json").resolve() \
            if self.max_epsilon > 0 else None
        cmd = supernode_command(self.address, partition_id, self.clients,
                                free_port(), self.attacks.get(partition_id, ""),
                                max_epsilon=self.max_epsilon, ledger=ledger)
        self.nodes[partition_id] = self._spawn(cmd, f"supernode-{partition_id}.log")

    def stop_node(self, partition_id: int) -> None:
        """Stop device ``partition_id`` (a dropout)."""
        self._kill(self.nodes.pop(partition_id))

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this fleet started
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process this fleet started (SuperNodes first)."""
        for proc in reversed(self.procs):
            self._kill(proc)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tail(self, name: str, n: int = 3000) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    # -- runs ------------------------------------------------------------------------
    def run(self, run_config: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Submit one run of the Edgewise Flower app and wait for its ``result.json``.

        Raises :class:`~edgewise.federated.server_app.FederatedRunError` with the
        ServerApp's reason when the run failed (its ``error.json``; nothing registered),
        and ``RuntimeError`` when it produced neither within ``timeout`` seconds.
        """
        out = Path(run_config.get("out-dir") or self.workdir / "out")
        config = {**RUN_DEFAULTS, "num-nodes": self.clients,
                  "min-available-nodes": self.clients}
        config.update(run_config)
        config["out-dir"] = str(out)
        app_dir = self.workdir / "app"
        app_dir.mkdir(exist_ok=True)
        (app_dir / "pyproject.toml").write_text(app_pyproject(config))
        result, error = out / "result.json", out / "error.json"
        result.unlink(missing_ok=True)
        error.unlink(missing_ok=True)
        code = (
            "from flwr.cli.run.run import run\n"
            f"run(app={str(app_dir)!r}, superlink=None, federation=None, "
            "run_config_overrides=None, federation_config_overrides=None, stream=True, "
            "output_format='default')\n"
        )
        with open(self.workdir / "run.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=log,
                                    stderr=subprocess.STDOUT, env=_env(self.flwr_home),
                                    cwd=self.workdir, start_new_session=True)
            self.procs.append(proc)
            deadline = time.monotonic() + timeout
            exited: int | None = None
            while time.monotonic() < deadline and not result.exists() and not error.exists():
                if proc.poll() is not None and not result.exists():
                    time.sleep(1.0)  # the ServerApp may still be writing
                    if not result.exists() and not error.exists():
                        exited = proc.returncode
                        break
                time.sleep(0.3)
            self._kill(proc)
        if error.exists() and not result.exists():
            from edgewise.federated.server_app import FederatedRunError

            try:
                why = str(json.loads(error.read_text())["error"])
            except (OSError, ValueError, KeyError):
                why = error.read_text(errors="replace")
            raise FederatedRunError(why)
        if not result.exists() and exited is not None:
            tail = self._tail("run.log")
            last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
            raise RuntimeError(
                f"The run exited (status {exited}) without a result or an error report"
                + (f"; its last log line: {last[:300]}" if last else "")
                + f"\nLast log lines:\n{tail}"
            )
        if not result.exists():
            raise RuntimeError(
                f"Federated run produced no result within {timeout:.0f} s. "
                f"Last log lines:\n{self._tail('run.log')}"
            )
        return dict(json.loads(result.read_text()))
