"""The Typer application objects that every ``edgewise.cli`` command module attaches to."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import click
import typer

from edgewise.config import default_data_dir

__all__ = ["UTF8_TEXT", "DataDir", "Json", "NonBlankPath", "Utf8Text", "app", "bench_app",
           "existing_data_dir", "fail", "not_an_input", "out_path"]

app = typer.Typer(
    name="edgewise",
    help="Edgewise: machine learning on IoT sensor fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks; each takes --json for one JSON object of figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")



class NonBlankPath(click.Path):
    """A path option that refuses a blank value (one line, exit 2): ``Path("")`` is the
    working directory, so ``--data-dir ""`` wrote the gateway's files into it and listed
    "no devices" there, and ``--out ""`` was reported as ``'.'``. ``what`` says what the
    path must be, e.g. ``"the data directory, e.g. ~/edgewise"``.

    >>> NonBlankPath("a file to write, e.g. model.rul").convert("m.rul", None, None)
    'm.rul'
    >>> NonBlankPath("a file to write, e.g. model.rul").convert(" ", None, None)
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: must be a file to write, e.g. model.rul; an empty one \
would mean the working directory. Got ' '.
    >>> import os
    >>> NonBlankPath("a file to write").convert("~/m.rul", None, None) == os.path.expanduser(
    ...     "~/m.rul")
    True
    """

    def __init__(self, what: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.what = what

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> object:
        """``value`` as :class:`click.Path` converts it, unless it is blank; a leading
        ``~`` or ``~user`` is the home folder (as ``Settings`` takes it): the shell leaves
        it in ``--data-dir=~/x``, and a variable set by systemd's ``Environment=``, docker
        ``-e`` or a ``.env`` file never has it expanded, so ``resolve_path`` made ``./~/x``.
        """
        if isinstance(value, str) and not value.strip():
            self.fail(f"must be {self.what}; an empty one would mean the working directory. "
                      f"Got {value!r}.", param, ctx)
        if isinstance(value, (str, Path)) and str(value).startswith("~"):
            value = type(value)(os.path.expanduser(value))
        return super().convert(value, param, ctx)


class Utf8Text(click.ParamType):
    """Text that UTF-8 can encode, for an argument or option that names something (a device,
    a token, an alert, a model): one ``error:`` line naming the option, exit 2, for anything
    else. An argument with bytes that are not UTF-8 (``$'pump\\xff'`` from a Latin-1
    terminal, a file name's bytes from a script) reaches Python as lone surrogates, which
    ended in a ``UnicodeEncodeError`` traceback wherever it was hashed, stored or sent.
    (Paths are no such text: a file name may be any bytes, so path options keep them.)

    >>> UTF8_TEXT.convert("pump-7", None, None)
    'pump-7'
    >>> UTF8_TEXT.convert("pump\\udcff", click.Option(["--device"]), None)
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """

    name = "text"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> object:
        """``value`` as text, refused (one line, exit 2) where UTF-8 cannot encode it."""
        text = value if isinstance(value, str) else str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            if ctx is not None and ctx.resilient_parsing:  # shell completion: no output
                return text
            byte = ord(text[exc.start]) - 0xDC00 if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF \
                else None
            what = (f"the byte 0x{byte:02x} at position {exc.start} is not UTF-8"
                    if byte is not None else
                    f"position {exc.start} holds a lone surrogate, which UTF-8 cannot encode")
            raise fail(f"{_param_name(param, ctx)} must be valid UTF-8 text. Got {text!r} "
                       f"instead: {what} (an argument typed in a terminal, or taken from a "
                       "file name, in another encoding such as Latin-1?).") from None
        return text


def _param_name(param: click.Parameter | None, ctx: click.Context | None) -> str:
    """How a refusal names ``param``: ``--device``, ``DEVICE_ID``, or ``EDGEWISE_X
    (--x)`` where the value came from its environment variable."""
    if param is None:
        return "the value"
    name = (" / ".join(param.opts) if isinstance(param, click.Option)
            else (param.name or "").upper() or param.human_readable_name)
    envvar = getattr(param, "envvar", None)
    if (ctx is not None and param.name and isinstance(envvar, str)
            and ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT):
        return f"{envvar} ({name})"
    return name


#: The type of every text argument or option that names something (``click_type=``).
UTF8_TEXT = Utf8Text()


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="EDGEWISE_DATA_DIR",
        help="Where the store, keys and registry live.",
        default_factory=default_data_dir,
        show_default=False,
        # a relative dir is the working directory's, in every URL made of it; a blank one
        # (the working directory, silently) is refused
        click_type=NonBlankPath("the data directory, e.g. ~/.local/share/edgewise",
                                resolve_path=True),
    ),
]
Json = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document (an object, or a list for listings) for scripts.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr; return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


#: Inputs of a command, as (the option that names it, the path): a file, or a folder whose
#: files are read. ``None`` paths (an option not given, a store that is no file) are skipped.
Inputs = Iterable[tuple[str, str | Path | None]]


def not_an_input(flag: str, target: str | Path, inputs: Inputs, example: str) -> None:
    """Fail (one line, exit 2), before any work, where the output ``target`` is one of the
    command's ``inputs`` (the same file, through a link too) or lies inside an input folder:
    writing it would destroy the input, or add a file the next run reads as one.

    >>> import tempfile
    >>> runs = Path(tempfile.mkdtemp()) / "runs.csv"
    >>> _ = runs.write_text("unit,cycle")
    >>> not_an_input("--out", runs.with_name("m.rul"), [("--data", runs)], "model.rul")
    >>> not_an_input("--out", runs, [("--data", runs)], "model.rul")
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    out = Path(target)
    where = out.resolve()
    for option, given in inputs:
        if given is None or not str(given).strip():
            continue
        source = Path(given)
        if not source.exists():
            continue
        if source.is_dir():
            if where.is_relative_to(source.resolve()):
                raise fail(f"{flag} {str(out)!r} lies inside the {option} folder "
                           f"{str(source)!r}, whose files are this command's input; give a "
                           f"path outside it, e.g. {example}")
        elif where == source.resolve() or (out.exists() and out.samefile(source)):
            raise fail(f"{flag} {str(out)!r} is the {option} input {str(source)!r}: writing it "
                       f"would destroy that input; give another path, e.g. {example}")


def out_path(flag: str, value: str, *, folder: bool, example: str, what: str = "",
             inputs: Inputs = ()) -> Path:
    """``value`` of an output option as a Path, refused (one line, exit 2) before any work
    where it cannot be written: empty (``Path("")`` is the working directory), a file where
    a folder is wanted or a folder where a file is, or a path whose nearest existing part
    is a file or cannot be written. Missing folders are fine: the caller makes them.
    ``what`` says what the path is for (default: "a folder for the results" or "a file to
    write"). ``inputs`` are the command's inputs, which the path must not be nor lie in
    (:func:`not_an_input`).

    Writability is tried, not only asked of ``os.access`` (which says yes to root on a
    read-only or virtual file system such as ``/proc``): the first missing folder is made
    and removed again, or a temporary file is made and removed in an existing folder, or
    an existing file is opened to append (nothing written). Nothing is left behind.

    >>> out_path("--out", "/tmp/nab", folder=True, example="/tmp/nab").as_posix()
    '/tmp/nab'
    """
    import os

    kind = what or ("a folder for the results" if folder else "a file to write")
    if not value.strip():
        raise fail(f"{flag} must be {kind}, e.g. {example}; an empty one would mean the "
                   f"working directory. Got {value!r}.")
    path = Path(value)
    not_an_input(flag, path, inputs, example)
    if folder and path.exists() and not path.is_dir():
        raise fail(f"{flag} must be {kind} (made if missing), e.g. {example}. Got {value!r}, "
                   "which is a file.")
    if not folder and path.is_dir():
        raise fail(f"{flag} must be {kind} (its folder made if missing), e.g. "
                   f"{path / Path(example).name}. Got {value!r}, which is a directory.")
    near = path if path.exists() else path.parent
    while not near.exists() and near != near.parent:
        near = near.parent
    if not (near.is_dir() or near == path):
        raise fail(f"{flag} must be {kind}, e.g. {example}. Got {value!r}, but "
                   f"{str(near)!r} is a file, so no folder can be made there.")
    if not os.access(near, os.W_OK | (os.X_OK if near.is_dir() else 0)):
        raise fail(f"{flag} must be {kind} that this user may write, e.g. {example}. Got "
                   f"{value!r}, but {str(near)!r} is not writable.")
    why = _cannot_write(path, near)
    if why:
        raise fail(f"{flag} must be {kind} that this user may write, e.g. {example}. Got "
                   f"{value!r}, but {why}.")
    return path


def _cannot_write(path: Path, near: Path) -> str | None:
    """Why nothing can be written at ``path``, whose nearest existing part is ``near``
    (tried: what this makes is removed again); ``None`` when it can be."""
    import os
    import tempfile

    try:
        if near == path and not path.is_dir():  # an existing file: open it to append
            if path.is_file():  # (a FIFO or a device is left to the writer)
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
            return None
        if near != path:  # make the first missing folder, as the caller will, and remove it
            first = near / path.relative_to(near).parts[0]
            try:
                os.mkdir(first)
            except FileExistsError:  # a dangling link or a racing maker: try a file below
                pass
            else:
                try:
                    os.rmdir(first)
                except OSError:  # another process put something in it meanwhile: theirs
                    pass
                return None
        fd, tmp = tempfile.mkstemp(prefix=".edgewise-write-check-", dir=near)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"nothing can be written in {str(near)!r} ({exc.strerror or exc})"
    return None


def existing_data_dir(data_dir: Path) -> Path:
    """``data_dir`` if it is a directory; else the Exit (one line) to raise.

    For commands that only read or change what is already there (``device list``, ``token
    revoke``, ``label list``, ...): a mistyped ``--data-dir`` must not leave a new data
    directory (and an empty ``security.sqlite``) behind, nor answer "no devices" as if it
    were the right one. Commands that make state (``serve``, ``demo``, ``device add``,
    ``token create``) create it instead.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> existing_data_dir(d) == d
    True
    >>> existing_data_dir(d / "mistyped")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    if data_dir.is_dir():
        return data_dir
    where = f"--data-dir (EDGEWISE_DATA_DIR) {str(data_dir)!r}"
    if data_dir.exists():
        raise fail(f"{where} is not a directory; pass the data directory the gateway runs with.")
    raise fail(f"{where} does not exist; nothing is kept there yet (create it with "
               "'edgewise serve' or 'edgewise device add', or pass the right --data-dir).")
