"""The one exception type that entry points turn into a one-line message instead of a traceback."""


class StylenetError(Exception):
    """Bad input (a config value, a file, a folder): the message says what and where."""
