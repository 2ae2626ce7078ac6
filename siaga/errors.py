"""Errors the command line turns into a message and an exit code: 2 for the user's input or setup,
143 for a stop asked by SIGTERM."""


class BadInput(Exception):
    """Input the command cannot use; the message says why."""


class StackUnavailable(BadInput):
    """No Prefect server answers, or it does not serve the runbook asked for."""


class Terminated(BaseException):
    """SIGTERM: stop as on Ctrl-C, through every `finally` (a BaseException, so that no
    `except Exception` swallows it)."""
