"""Command-line entry points print a user error as one line, not a traceback."""

from __future__ import annotations

import functools
import os
import sys

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
