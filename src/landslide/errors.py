"""The errors a user can cause and fix; the command-line entry points print them as one line and exit 2
(:func:`user_errors`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("landslide")


class ReleaseError(ValueError):
    """A problem with the release files; the message names the file."""


class ConfigError(ValueError):
    """An option outside its range, or settings that contradict a run on disk; the message names the option."""


class RunError(Exception):
    """A run directory or a model file cannot be used; the message names the file and the problem."""


class SceneError(ValueError):
    """A scene that cannot be mapped; the message is one line naming the file."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (the one-line errors quote it)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def print_error_line(message: str) -> None:
    """One error line on stderr, shaped as the job log's lines, for problems found before Hydra's job logging is set
    up (a mistyped option, a missing argument, an output folder that cannot be made)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}][landslide][ERROR] - {first_line(Exception(message))}", file=sys.stderr, flush=True)


#: the errors :func:`user_errors` turns into one line
USER_ERRORS = (ReleaseError, RunError, ConfigError, SceneError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input (a broken release, an incomplete run directory, an option out of range) ends the command with one
    line naming the problem, not a traceback."""
    try:
        yield
    except USER_ERRORS as err:
        log.error("%s", err)
        raise SystemExit(2) from None
