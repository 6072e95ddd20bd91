"""The one exception type that entry points turn into a one-line message instead of a traceback."""


class StylenetError(Exception):
    """Bad input (a config value, a file, a folder): the message says what and where."""


def check_number(key: str, value: object, minimum: float, integer: bool = False) -> None:
    """Raise a one-line error unless `value` is a number >= `minimum` (an int when `integer`).

    Config values reach constructors untyped (`data.image_size=abc` is a string).
    """
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        kind = "an integer" if integer else "a number"
        raise StylenetError(f"{key} must be {kind} >= {minimum}, got {value!r}")
