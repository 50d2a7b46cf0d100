"""Where and how a benchmark ran: the machine as measured, and the command line as given.

Every benchmark's JSON and results file records these, so that a figure is never read
beside a machine it was not measured on (a hard-coded "2-core VM" outlives the VM).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["command_line", "machine", "machine_fields", "machine_line"]


def machine() -> str:
    """What this machine is, as measured: architecture, system, CPU count and processor.

    >>> f"{os.cpu_count()} CPUs" in machine()
    True
    """
    cpu = platform.processor() or "processor not reported"
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs ({cpu})"


def machine_fields() -> dict[str, str | int | None]:
    """The machine for a benchmark's JSON: :func:`machine`, the CPU count and Python's version.

    >>> sorted(machine_fields())
    ['cpus', 'machine', 'python']
    >>> machine_fields()["cpus"] == os.cpu_count()
    True
    """
    return {"machine": machine(), "cpus": os.cpu_count(), "python": platform.python_version()}


def machine_line() -> str:
    """The line a benchmark's text output ends with, saying where its figures were measured
    (its JSON has :func:`machine_fields`): timings read without it are read beside another
    machine.

    >>> machine_line().startswith("machine: ") and f"{os.cpu_count()} CPUs" in machine_line()
    True
    """
    return f"machine: {machine()}, Python {platform.python_version()}"


def _is_edgewise(argv0: str) -> bool:
    """Whether ``argv0`` (``sys.argv[0]``) is the edgewise CLI: its script or a ``python -m``
    of ``edgewise`` or ``edgewise.cli`` (not some other ``__main__.py``, such as pytest's).

    >>> [_is_edgewise(a) for a in ("/venv/bin/edgewise", "src/edgewise/__main__.py",
    ...                            "src/edgewise/cli/__main__.py", "/lib/pytest/__main__.py")]
    [True, True, True, False]
    """
    parts = Path(argv0).parts
    return (parts[-1:] == ("edgewise",) or parts[-2:] == ("edgewise", "__main__.py")
            or parts[-3:] == ("edgewise", "cli", "__main__.py"))


def command_line(given: Sequence[str]) -> str:
    """The command that is running, shell-quoted: ``edgewise`` and this process's arguments
    where it is the edgewise CLI, else (the command called in-process, as tests do)
    ``edgewise`` and ``given``, the arguments rebuilt from the parsed options.

    >>> command_line(["bench", "edge", "--data", "my data"])  # in-process, as here
    "edgewise bench edge --data 'my data'"
    """
    args = sys.argv[1:] if sys.argv and _is_edgewise(sys.argv[0]) else list(given)
    return shlex.join(["edgewise", *args])
