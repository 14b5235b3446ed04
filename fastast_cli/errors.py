"""Errors that are the user's to fix: the CLI prints their message, never a traceback."""


class FastASTError(Exception):
    """A problem with the user's input (a file, a flag, a checkpoint), explained in its message."""

    exit_code = 2


class CheckpointError(FastASTError):
    """A checkpoint that cannot be read, is unsafe to read, or does not fit the model."""


class NonFiniteScores(FastASTError):
    """A model gave NaN or infinite scores: never printed or scored as a result."""


class Interrupted(FastASTError):
    """Ctrl-C (or SIGTERM, SIGHUP): the message says what was kept and how to continue; exit
    code 128 + the signal's number, as a shell reports it (130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
