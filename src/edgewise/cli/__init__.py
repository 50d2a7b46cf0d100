"""The ``edgewise`` command. Each module in this package adds its commands to ``app``.

Commands are thin: parse, call the library, print. Modules are discovered, so a new
command is one new file; heavy imports stay inside the command functions so that
``edgewise --help`` is quick.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgewise.cli._app import app, bench_app
from edgewise.errors import EdgewiseError

__all__ = ["app", "bench_app", "main"]

_loaded = False


def load_commands() -> None:
    """Import every command module of this package once."""
    global _loaded
    if _loaded:
        return
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def main() -> None:
    """Entry point of the ``edgewise`` console script."""
    import sys

    import click

    load_commands()
    try:
        code = app(standalone_mode=False)
    except EdgewiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except click.ClickException as exc:  # a bad option (UsageError) among them
        # one line, as every other refusal: not Click's usage lines and a boxed message
        # (a value from an environment variable is named by its option, as Click does)
        print(f"error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        print("error: aborted", file=sys.stderr)
        raise SystemExit(1) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
