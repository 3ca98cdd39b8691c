"""The errors a user can cause and fix; the command-line entry points print them as one line and exit 2."""


class ConfigError(ValueError):
    """An option outside its range, or settings that contradict a run on disk; the message names the option."""


class RunError(Exception):
    """A run directory or a model file cannot be used; the message names the file and the problem."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (the one-line errors quote it)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
