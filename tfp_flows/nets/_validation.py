"""Argument checks of the conditioner layers: the package's shared validators, plus units."""

from tfp_flows._validation import check_positive_int

__all__ = ["check_units"]


def check_units(name, units):
    """Returns `units` as a list of positive ints (hidden layer widths).

    Raises:
        TypeError: `units` is not an int or a list/tuple of ints.
        ValueError: the list is empty or a width is below 1.
    """
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    if not isinstance(units, list | tuple):
        raise TypeError(f"{name} must be a non-empty list of positive ints, got {units!r}")
    if not units:
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {units!r}")
    return [check_positive_int(f"{name}[{i}]", u) for i, u in enumerate(units)]
