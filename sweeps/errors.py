"""Errors the CLI turns into exit codes."""


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2."""
