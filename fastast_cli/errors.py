"""Errors that are the user's to fix: the CLI prints their message, never a traceback."""


class FastASTError(Exception):
    """A problem with the user's input (a file, a flag, a checkpoint), explained in its message."""

    exit_code = 2


class CheckpointError(FastASTError):
    """A checkpoint that cannot be read, is unsafe to read, or does not fit the model."""


class NonFiniteScores(FastASTError):
    """A model gave NaN or infinite scores: never printed or scored as a result."""


class Interrupted(FastASTError):
    """Ctrl-C: the message says what was kept and how to continue (exit code 130, as a shell
    reports SIGINT)."""

    exit_code = 130
