"""Errors raised while choosing a target or generating code."""


class BackendError(RuntimeError):
    """Code generation or tuning failed; the message names the target and the step."""
