"""The errors a user can cause and fix; the command-line entry points print them as one line and exit 2."""


class ConfigError(ValueError):
    """An option outside its range, or settings that contradict a run on disk; the message names the option."""


class RunError(Exception):
    """A run directory or a model file cannot be used; the message names the file and the problem."""
