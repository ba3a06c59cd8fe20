"""The one exception type that user-facing failures raise."""


class OptLensError(Exception):
    """A failure a student can act on: the message is one or two plain sentences, never a traceback."""
