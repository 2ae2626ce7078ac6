"""Errors the command line turns into a message and exit code 2 (the user's input or setup)."""


class BadInput(Exception):
    """Input the command cannot use; the message says why."""


class StackUnavailable(BadInput):
    """No Prefect server answers, or it does not serve the runbook asked for."""
