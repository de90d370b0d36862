"""Errors of the local stack; none of them is fixed by retrying the same command unchanged."""


class StackError(RuntimeError):
    """The local stack cannot be set up or started; the message says what to do."""
