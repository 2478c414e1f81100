"""Command-line entry points print a user error as one line, not a traceback."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

# Errors that carry a complete message (file, field, fix) for the user.
USER_ERRORS = (ValueError, OSError, RuntimeError, KeyError, ImportError)


def one_line_errors(fn):
    """Wrap a task function: a user error exits with ``error: <message>`` (status 2).

    Set ``RSDVLA_TRACEBACK=1`` to see the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("RSDVLA_TRACEBACK") == "1":
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def writable_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path`` (where creating ``path`` starts)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, field: str, what: str) -> None:
    """Before long work: ``path`` (a file or folder to create) can be written, by trying.

    Creates and removes a temp file in the nearest existing folder at or above ``path`` (a
    permission check alone passes for root on a read-only mount). One line naming ``field``.
    """
    import tempfile

    where = writable_ancestor(Path(path))
    if not where.is_dir():  # an existing file: it is replaced in its folder
        where = where.parent
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        raise OSError(
            f"{where}: not writable ({err.strerror}), so {field}={path} {what}; pass a writable "
            f"{field}=<path> or fix the permissions"
        ) from None


def check_run_dir(argv: list[str]) -> None:
    """Before Hydra starts: a ``hydra.run.dir``/``hydra.sweep.dir`` override must be writable.

    Hydra writes ``.hydra/`` there before the task runs and reports a failure as a traceback;
    this prints one line and exits 2 instead.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") not in ("hydra.run.dir", "hydra.sweep.dir"):
            continue
        where = writable_ancestor(Path(value))
        if not os.access(where, os.W_OK) or not where.is_dir():
            print(
                f"error: {where}: not writable, so {key}={value} cannot hold the run; pass a writable "
                f"{key}=<dir> or fix the permissions",
                file=sys.stderr,
            )
            sys.exit(2)


def build(config, **kwargs):
    """``hydra.utils.instantiate`` that lets a user error raised inside the target through unwrapped.

    Hydra wraps constructor errors in ``InstantiationException`` with its own preamble; the
    one-line message (file, field, fix) of our errors is what the user should see.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, USER_ERRORS):
            raise cause from None
        raise
