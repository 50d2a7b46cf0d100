"""``edgewise ARGS`` run in the test's own process, answered as ``python -m edgewise`` answers.

A new interpreter costs a CLI test about a second of CPU (importing pandas, scikit-learn and
the detectors) before the command does anything. A test that checks what a command prints,
writes or exits with, not the process boundary (signals, resource limits, a crash of the
interpreter), runs it here instead: through the real entry point :func:`edgewise.cli.main`
(its one-line ``error:`` answers and exit statuses), with file descriptors 1 and 2 captured
(Python's and native libraries' output alike), a fresh interpreter's warning filters, and no
``EDGEWISE_*`` variable of the test's environment (the subprocesses ran with a bare
environment). An uncaught exception is a traceback on stderr and status 1, as there.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path

__all__ = ["edgewise_here"]


def edgewise_here(*args: str, cwd: Path | str | None = None,
                  env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``edgewise ARGS`` here, in ``cwd`` and with ``env`` added to the environment;
    its exit status, stdout and stderr as :func:`subprocess.run` gives them."""
    from edgewise.cli import main

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    saved_env = dict(os.environ)
    saved_argv, saved_streams, saved_cwd = sys.argv, (sys.stdout, sys.stderr), os.getcwd()
    saved_fds = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in saved_streams:
            stream.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        here = sys.stdout, sys.stderr = tuple(
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                             write_through=True) for fd in (1, 2))
        sys.argv = ["edgewise", *args]
        code = 0
        try:
            for k in [k for k in os.environ if k.startswith("EDGEWISE_")]:
                del os.environ[k]
            os.environ.update(env or {})
            if cwd is not None:
                os.chdir(cwd)
            with warnings.catch_warnings():
                warnings.resetwarnings()  # a fresh interpreter's filters
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                 ResourceWarning):
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = show
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            if isinstance(exc.code, str):
                sys.stderr.write(exc.code + "\n")
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            os.chdir(saved_cwd)
            if dict(os.environ) != saved_env:
                os.environ.clear()
                os.environ.update(saved_env)
            for stream in here:
                stream.close()
            sys.stdout, sys.stderr = saved_streams
            sys.argv = saved_argv
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["edgewise", *args], int(code),
                                           out.read().decode(), err.read().decode())
