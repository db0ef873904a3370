"""Errors the CLI turns into exit codes, each printed as ``error:`` lines, no traceback."""


class UsageError(Exception):
    """Bad input from the user (a flag, a config, a study name): exit code 2."""


class RunFailed(Exception):
    """The run could not go on (database unreachable, workers failed): exit code 1."""
