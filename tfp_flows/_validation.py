"""The argument checks every layer of tfp_flows shares.

One rule for every check: a value of the wrong type raises `TypeError`, a value of the right
type outside its allowed range raises `ValueError`, and each message names the argument,
what was expected and what was received. `bool` is never accepted where a number is
expected (`True` is an int in Python, but never a meaningful count).

`class_declares` reads a capability flag off a class (layers of `nets/` declare what the
bijectors may ask of them).
"""

import math
import numbers

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_positive_int",
    "check_positive_number",
    "class_declares",
]


def check_int(name, value, minimum=None, maximum=None, allow_none=False):
    """Returns `value` as a Python int after checking its type and range.

    Args:
        name: the argument's name, for the message.
        value: the received value; Python and NumPy integers are accepted, bools are not.
        minimum: smallest allowed value, or `None`.
        maximum: largest allowed value, or `None`.
        allow_none: whether `None` is accepted (and returned).

    Raises:
        TypeError: `value` is not an integer (or is a bool).
        ValueError: `value` is outside `[minimum, maximum]`.
    """
    if value is None and allow_none:
        return None
    expected = _expected("int", minimum, maximum) + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {value!r} of type "
                        f"{type(value).__name__}")
    if _outside(value, minimum, maximum):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_positive_int(name, value, allow_none=False):
    """`check_int(name, value, minimum=1)`: a count such as a number of layers."""
    return check_int(name, value, minimum=1, allow_none=allow_none)


def check_number(name, value, minimum=None, maximum=None, exclusive_minimum=False,
                 exclusive_maximum=False, allow_none=False):
    """Returns `value` as a finite Python float after checking its type and range.

    Raises:
        TypeError: `value` is not a real number (or is a bool).
        ValueError: `value` is not finite, or outside the allowed range.
    """
    if value is None and allow_none:
        return None
    expected = _expected("number", minimum, maximum, exclusive_minimum, exclusive_maximum)
    expected += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {value!r} of type "
                        f"{type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value!r} (not finite)")
    if _outside(value, minimum, maximum, exclusive_minimum, exclusive_maximum):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_positive_number(name, value, allow_none=False):
    """`check_number` for a finite number `> 0`, such as a bound or a learning rate."""
    return check_number(name, value, minimum=0, exclusive_minimum=True,
                        allow_none=allow_none)


def check_bool(name, value):
    """Returns `value` if it is a bool (Python or NumPy), else raises `TypeError`."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`, else raises `ValueError` listing them."""
    try:
        allowed = value in choices
    except TypeError:  # an unhashable value looked up in a dict or set
        allowed = False
    if not allowed:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def _outside(value, minimum, maximum, exclusive_minimum=False, exclusive_maximum=False):
    too_small = minimum is not None and (
        value <= minimum if exclusive_minimum else value < minimum)
    too_large = maximum is not None and (
        value >= maximum if exclusive_maximum else value > maximum)
    return too_small or too_large


def _expected(kind, minimum, maximum, exclusive_minimum=False, exclusive_maximum=False):
    """Says what is allowed: "a positive int", "an int >= 2", "a number in (0, 1)", ..."""
    if kind == "int" and minimum == 1 and maximum is None:
        return "a positive int"
    if kind == "number" and minimum == 0 and exclusive_minimum and maximum is None:
        return "a positive number"
    article = "an" if kind == "int" else "a"
    if minimum is not None and maximum is not None:
        return (f"{article} {kind} in {'(' if exclusive_minimum else '['}{minimum:g}, "
                f"{maximum:g}{')' if exclusive_maximum else ']'}")
    finite = "" if kind == "int" else "finite "
    if minimum is not None:
        return f"{article} {finite}{kind} {'>' if exclusive_minimum else '>='} {minimum:g}"
    if maximum is not None:
        return f"{article} {finite}{kind} {'<' if exclusive_maximum else '<='} {maximum:g}"
    return f"{article} {finite}{kind}"


def class_declares(obj, flag):
    """Whether `obj`'s own class sets the class attribute `flag` true. Not inherited: a
    subclass that overrides the methods the flag vouches for does not claim it."""
    return bool(vars(type(obj)).get(flag, False))
