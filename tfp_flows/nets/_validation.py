"""Argument checks shared by the conditioner layers."""

__all__ = ["check_positive_int", "check_units"]


def check_positive_int(name, value):
    """Returns `value` if it is a positive Python int, else raises."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_units(name, units):
    """Returns `units` as a list of positive ints (hidden layer widths)."""
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    if not isinstance(units, list | tuple) or not units:
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {units!r}")
    return [check_positive_int(f"{name}[{i}]", u) for i, u in enumerate(units)]
