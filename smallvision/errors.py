"""The one error type users see: a message that names the problem and the fix."""


class SmallvisionError(Exception):
    """A user-facing error: bad input, missing weights, an unusable model folder."""
