"""The one exception type that the CLI prints as a plain message instead of a traceback."""


class CmmdError(Exception):
    """Bad input a user can fix (a file, a flag, a config); the message says what and where."""
