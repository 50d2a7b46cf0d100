"""The ``edgewise`` command. Each module in this package adds its commands to ``app``.

Commands are thin: parse, call the library, print. Modules are discovered, so a new
command is one new file; heavy imports stay inside the command functions so that
``edgewise --help`` is quick.

A command that needs an optional package that is not installed (:data:`OPTIONAL`) ends in
one ``error:`` line naming the package and the ``pip install`` that brings it, exit 2, not
a traceback: checked before any work for the commands that always need one
(:data:`NEEDS`), and caught where any other command first imports it.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
import sqlite3
from typing import NoReturn

from edgewise.cli._app import app, bench_app
from edgewise.errors import EdgewiseError

__all__ = ["NEEDS", "OPTIONAL", "app", "bench_app", "damaged_database", "main",
           "missing_package"]

_loaded = False

#: Optional packages (by import name) and the install that brings each: the extras of
#: pyproject.toml's ``[project.optional-dependencies]`` (river and statsmodels are in
#: ``dev`` only, so they are installed by name).
OPTIONAL: dict[str, str] = {
    "psycopg": "pip install 'edgewise[postgres]'",
    "torch": "pip install 'edgewise[torch]'",
    "lightgbm": "pip install 'edgewise[rul]'",
    "onnx": "pip install 'edgewise[onnx]'",
    "onnxruntime": "pip install 'edgewise[onnx]'",
    "skl2onnx": "pip install 'edgewise[onnx]'",
    "flwr": "pip install 'edgewise[federated]'",
    "dp_accounting": "pip install 'edgewise[federated]'",
    "opacus": "pip install 'edgewise[federated]'",
    "river": "pip install river",
    "statsmodels": "pip install statsmodels",
}

#: Commands that need an optional package whatever their options, checked before they
#: start (``bench cmapss`` imported LightGBM only after its data was read and prepared).
NEEDS: dict[tuple[str, ...], str] = {
    ("bench", "cmapss"): "lightgbm",
    ("train", "rul"): "lightgbm",
    ("federate", "demo"): "flwr",
    ("bench", "federated"): "flwr",
    ("bench", "detect"): "river",  # its table has River's HalfSpaceTrees as the river-hst row
}


def load_commands() -> None:
    """Import every command module of this package once."""
    global _loaded
    if _loaded:
        return
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def missing_package(exc: BaseException) -> ImportError | None:
    """The failed import of an optional package (:data:`OPTIONAL`) in ``exc`` or in the
    error it was raised from (an adapter's own ImportError keeps River's as its context,
    even ``from None``), or ``None`` for any other error.

    >>> missing_package(ModuleNotFoundError("No module named 'flwr.app'", name="flwr.app")).name
    'flwr.app'
    >>> missing_package(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None
    True
    """
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ImportError) and err.name:
            return err if err.name.split(".")[0] in OPTIONAL else None
        err = err.__cause__ or err.__context__
    return None


def _needs_message(package: str, command: str, why: str) -> str:
    """The one line for a command that needs ``package``: what, why, and the install."""
    return f"{command} needs the '{package}' package, which {why}: {OPTIONAL[package]}"


def _command_name(args: list[str]) -> str:
    """``edgewise`` and the command words that lead ``args`` (``edgewise detect``)."""
    import typer

    cmd = typer.main.get_command(app)
    words = ["edgewise"]
    for arg in args:
        sub = getattr(cmd, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        cmd = sub
    return " ".join(words)


def _check_needs(args: list[str]) -> str | None:
    """The message for a command of :data:`NEEDS` whose package is not installed (asked
    of the import system, nothing imported), ``None`` otherwise or where help is asked."""
    import importlib.util

    if "--help" in args:
        return None
    words = tuple(args[:2])
    package = NEEDS.get(words)
    if package is None:
        return None
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken install: the import itself will say
        return None
    if found:
        return None
    return _needs_message(package, "edgewise " + " ".join(words), "is not installed")


def _database_file(exc: BaseException) -> str | None:
    """The file of the SQLite database whose use raised ``exc``: asked of a connection
    found in the frames the error went through (innermost first: a local, or an
    attribute of ``self``), SQLite's own ``PRAGMA database_list``; ``None`` if none says."""
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        found = list(frame.f_locals.values())
        me = frame.f_locals.get("self")
        if me is not None:
            found += list(getattr(me, "__dict__", {}).values())
        for value in found:
            if not isinstance(value, sqlite3.Connection):
                continue
            try:
                rows = value.execute("PRAGMA database_list").fetchall()
            except sqlite3.Error:  # closed meanwhile
                continue
            name = next((str(r[2]) for r in rows if r[1] == "main" and r[2]), None)
            if name:
                return name
    return None


def damaged_database(exc: sqlite3.DatabaseError, args: list[str]) -> str:
    """The one line for a SQLite error no command caught: the file (else the data
    directory the command was given, else the default one) and what is wrong with it.

    >>> damaged_database(sqlite3.DatabaseError("file is not a database"),
    ...                  ["device", "list", "--data-dir", "/srv/ew"])  # doctest: +ELLIPSIS
    "a SQLite database in the data directory '/srv/ew' is damaged or not an Edgewise ..."
    """
    import os

    from edgewise.config import default_data_dir

    text = str(exc).strip() or type(exc).__name__
    damaged = any(w in text for w in ("not a database", "malformed", "no such table",
                                      "no such column", "file is encrypted"))
    file = _database_file(exc)
    if file is not None:
        what = f"SQLite database {file!r}"
    else:
        given = next((a.split("=", 1)[1] for a in args if a.startswith("--data-dir=")), None)
        if given is None and "--data-dir" in args[:-1]:
            given = args[args.index("--data-dir") + 1]
        where = given or os.environ.get("EDGEWISE_DATA_DIR") or str(default_data_dir())
        what = f"a SQLite database in the data directory {where!r}"
    if damaged:
        return (f"{what} is damaged or not an Edgewise database (SQLite: {text}); restore "
                "it from a backup, or move it aside to start it afresh.")
    return f"{what} cannot be used (SQLite: {text})."


def _is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is how DuckDB reports a Ctrl-C during a query (it turns SIGINT into
    ``InterruptException``, or a ``RuntimeError`` "Query interrupted").

    >>> _is_interrupt(RuntimeError("Query interrupted")), _is_interrupt(RuntimeError("x"))
    (True, False)
    """
    return (type(exc).__name__ == "InterruptException"
            or (isinstance(exc, RuntimeError) and "Query interrupted" in str(exc)))


def _interrupted(args: list[str]) -> NoReturn:
    """Ctrl-C: one line (not DuckDB's 50-line traceback, nor a silent exit), exit 130."""
    import sys

    words = _command_name(args).split()[1:]
    if words in (["store", "purge"], ["device", "delete"]):
        what = ("error: interrupted; the store is left consistent (the next open finishes "
                "a pending purge), run it again")
    else:
        what = "error: interrupted; run it again"
    print(what, file=sys.stderr)
    raise SystemExit(130)


def _name_too_long(exc: OSError, args: list[str]) -> str:
    """The one line for a path with a name (one of its parts) longer than the file system
    holds (``ENAMETOOLONG``: 255 bytes on most), naming the option (or the argument) of
    ``args`` whose value holds that part.

    >>> long = "a" * 300
    >>> _name_too_long(OSError(36, "File name too long", f"/d/{long}/x.csv"),
    ...                ["bench", "forecast", "--series", f"{long}/x.csv"])  # doctest: +ELLIPSIS
    "--series '/d/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'... has a name of 300 bytes; ..."
    """
    import os

    path = os.fsdecode(exc.filename) if exc.filename is not None else ""
    part = max((p for p in path.split("/") if p), key=lambda p: len(os.fsencode(p)),
               default=path)
    what = "the path"
    for i, arg in enumerate(args):
        if not part or part not in arg:
            continue
        if arg.startswith("--") and "=" in arg:
            what = arg.split("=", 1)[0]
        elif i and args[i - 1].startswith("-"):
            what = args[i - 1]
        else:
            what = f"the argument {arg[:20]!r}..."
        break
    shown = f"{path[:40]!r}..." if len(path) > 40 else repr(path)
    return (f"{what} {shown} has a name of {len(os.fsencode(part))} bytes; a file or folder "
            "name holds at most 255 bytes: give a shorter one.")


def main() -> None:
    """Entry point of the ``edgewise`` console script."""
    import sys

    import click

    missing = _check_needs(sys.argv[1:])
    if missing is not None:
        print(f"error: {missing}", file=sys.stderr)
        raise SystemExit(2)
    try:
        load_commands()
        code = app(standalone_mode=False)
    except EdgewiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ImportError as exc:  # an optional package missing: one line, not a traceback
        failed = missing_package(exc)
        if failed is None or failed.name is None:
            raise
        package = failed.name.split(".")[0]
        why = f"cannot be imported ({failed})"
        print(f"error: {_needs_message(package, _command_name(sys.argv[1:]), why)}",
              file=sys.stderr)
        raise SystemExit(2) from None
    except click.ClickException as exc:  # a bad option (UsageError) among them
        # one line, as every other refusal: not Click's usage lines and a boxed message
        # (a value from an environment variable is named by its option, as Click does)
        print(f"error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C outside Click's own handling (between queries)
        _interrupted(sys.argv[1:])
    except click.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # Ctrl-C
            _interrupted(sys.argv[1:])
        print("error: aborted", file=sys.stderr)
        raise SystemExit(1) from None
    except sqlite3.DatabaseError as exc:  # a damaged file: one line naming it, no traceback
        from edgewise.label.store import LabelsBusyError

        if isinstance(exc, LabelsBusyError):  # held by another writer, not damaged
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"error: {damaged_database(exc, sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:  # a path no file system holds: one line naming its option
        if exc.errno != errno.ENAMETOOLONG:
            raise
        print(f"error: {_name_too_long(exc, sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        if not _is_interrupt(exc):
            raise
        _interrupted(sys.argv[1:])
    if isinstance(code, int) and code:
        raise SystemExit(code)
