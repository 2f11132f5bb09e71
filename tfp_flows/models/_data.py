"""Checks on data handed to a flow: dtype, shape and finiteness, with clear messages."""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = ["Support", "check_array", "check_dataset", "describe"]


class Support(NamedTuple):
    """The values a flow's data may take: `[low, high)` (or `(low, high)`), maybe integers.

    Attributes:
        low: lower end of the interval.
        high: upper end (excluded).
        open_low: whether `low` itself is excluded.
        integers: whether values must be whole numbers (discrete levels); integer dtypes are
            then accepted as well as floats holding integers.
        reason: what sets the support, for messages (e.g. `"num_bins=17"`).
    """

    low: float
    high: float
    open_low: bool = False
    integers: bool = False
    reason: str = ""

    def interval(self):
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g})"

    def describe(self):
        kind = "integers in " if self.integers else "values in "
        because = f" (data of a flow with {self.reason})" if self.reason else ""
        return f"{kind}{self.interval()}{because}"


def _examples(values, limit=3):
    shown = ", ".join(f"{float(v):g}" for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _check_support(array, support, name):
    """Raises ValueError naming the offending values if `array` leaves `support`."""
    array = np.asarray(array)
    below = array <= support.low if support.open_low else array < support.low
    outside = below | (array >= support.high)
    if np.any(outside):
        bad = array[outside]
        raise ValueError(
            f"{name} must hold {support.describe()}; got {bad.size} value(s) "
            f"outside {support.interval()}: {_examples(bad)}")
    if support.integers:
        fractional = array != np.floor(array)
        if np.any(fractional):
            bad = array[fractional]
            raise ValueError(
                f"{name} must hold {support.describe()}; got {bad.size} non-integer "
                f"value(s): {_examples(bad)}")


def _shape_text(shape):
    return [None if d is None else int(d) for d in shape]


def describe(value):
    """A short description of a received value for error messages: type and shape."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        try:
            return f"{type(value).__name__} of shape {_shape_text(shape)}"
        except TypeError:
            pass
    text = repr(value)
    return text if len(text) <= 80 else f"{type(value).__name__} ({text[:60]}...)"


def check_array(value, trailing_shape, dtype, name, support=None, extra_batch_dims=False):
    """Returns `value` as a tensor of `dtype` after checking it.

    Raises `TypeError` for non-numeric or integer data (integers are accepted when
    `support.integers`) and `ValueError` for a wrong shape, non-finite entries or values
    outside `support` (checked eagerly; symbolic tensors are only shape-checked).

    The shape must be `[batch, *trailing_shape]`; with `extra_batch_dims`,
    `[..., batch, *trailing_shape]` (one or more batch axes, as `log_prob` takes).
    """
    if isinstance(value, tf.data.Dataset):
        raise TypeError(f"{name} must be an array or tensor here, got a tf.data.Dataset")
    if value is None:
        raise TypeError(f"{name} must be an array of floats, got None")
    if not tf.is_tensor(value):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an array of floats, got {type(value).__name__}") \
                from error
        if value.dtype == object or not np.issubdtype(value.dtype, np.number):
            raise TypeError(f"{name} must be an array of floats, got dtype {value.dtype}")
    value_dtype = tf.as_dtype(value.dtype)
    integers_allowed = support is not None and support.integers
    if integers_allowed and value_dtype.is_integer:
        pass
    elif not value_dtype.is_floating:
        raise TypeError(
            f"{name} must hold floating-point values, got dtype {value_dtype.name}; cast or "
            "dequantize integer data first (or build the flow with num_bins and "
            "dequantization='uniform' to give it the discrete data)")
    expected = list(trailing_shape)
    shape = value.shape
    rank = shape.rank if tf.is_tensor(value) else len(shape)
    rank_ok = (rank is not None and rank >= len(expected) + 1 if extra_batch_dims
               else rank == len(expected) + 1)
    if not rank_ok or any(
            got is not None and got != want
            for got, want in zip(list(shape)[rank - len(expected):], expected, strict=True)):
        trailing = ", ".join(map(str, expected))
        more = (f" (more leading batch axes are accepted too: [..., batch, {trailing}])"
                if extra_batch_dims else "")
        raise ValueError(
            f"{name} must have shape [batch, {trailing}], got {_shape_text(shape)}{more}")
    cast = tf.cast(value, dtype)
    if not tf.is_tensor(value) or tf.executing_eagerly():
        if value_dtype.is_floating:
            _check_finite(value, cast, name)
        if support is not None:
            _check_support(value.numpy() if tf.is_tensor(value) else value, support, name)
    return cast


def _check_finite(value, cast, name):
    """Raises ValueError if `value` holds NaN/Inf, or values that overflow in `cast`."""
    finite = np.asarray(tf.math.is_finite(cast))
    if bool(np.all(finite)):
        return
    bad = int(finite.size - np.count_nonzero(finite))
    originally = np.asarray(tf.math.is_finite(value) if tf.is_tensor(value)
                            else np.isfinite(value))
    overflowed = bad - int(originally.size - np.count_nonzero(originally))
    if overflowed:
        raise ValueError(
            f"{name} contains {bad} value(s) that are NaN or Inf as {cast.dtype.name}, "
            f"{overflowed} of them finite {tf.as_dtype(value.dtype).name} values too large "
            f"for {cast.dtype.name} (largest magnitude {float(tf.as_dtype(cast.dtype).max):g})")
    raise ValueError(f"{name} contains {bad} NaN or Inf value(s)")


def check_dataset(dataset, specs, dtype, support=None):
    """Checks a dataset's element spec and adds a finiteness check to each element.

    `specs` maps element keys (`"x"`, `"context"`) to the expected trailing shape. Elements
    may be a tensor (`x` only), a `(x, context)` tuple or a dict with those keys; the
    result yields dicts when a context is expected and plain tensors otherwise. With a
    `support`, each batch of `x` is also checked against it as it streams (a
    `tf.errors.InvalidArgumentError` naming the support stops the first bad batch).
    """
    element = dataset.element_spec
    names = list(specs)
    if isinstance(element, tuple):
        if len(element) != len(names):
            raise ValueError(
                f"dataset elements must be {' or '.join(names)}"
                f" ({len(names)} part(s)), got a tuple of {len(element)}")
        dataset = dataset.map(lambda *parts: dict(zip(names, parts, strict=True)))
    elif not isinstance(element, dict):
        dataset = dataset.map(lambda x: {names[0]: x})
    element = dataset.element_spec
    if set(element) != set(names):
        raise ValueError(f"dataset elements must have keys {names}, got {sorted(element)}")
    for key, trailing in specs.items():
        spec = element[key]
        integers_allowed = key == "x" and support is not None and support.integers
        if not spec.dtype.is_floating and not (integers_allowed and spec.dtype.is_integer):
            raise TypeError(
                f"dataset {key} must hold floating-point values, got dtype {spec.dtype.name}")
        got = spec.shape.as_list()
        if len(got) != len(trailing) + 1 or any(
                g is not None and g != w for g, w in zip(got[1:], trailing, strict=False)):
            raise ValueError(
                f"dataset {key} must be batched with shape [batch, "
                f"{', '.join(map(str, trailing))}], got {got}")

    def checked(element):
        out = {
            key: tf.debugging.assert_all_finite(
                tf.cast(value, dtype), f"dataset {key} contains NaN or Inf")
            for key, value in element.items()
        }
        if support is not None:
            out["x"] = _assert_support(out["x"], support)
        return out if len(names) > 1 else out[names[0]]

    return dataset.map(checked)


def _assert_support(x, support, name="dataset x"):
    """Graph-side check of `support`: an InvalidArgumentError naming it, never NaN."""
    message = f"{name} must hold {support.describe()}"
    low = tf.constant(support.low, x.dtype)
    high = tf.constant(support.high, x.dtype)
    above_low = x > low if support.open_low else x >= low
    inside = tf.logical_and(above_low, x < high)
    if support.integers:
        inside = tf.logical_and(inside, tf.equal(x, tf.floor(x)))
    check = tf.debugging.Assert(
        tf.reduce_all(inside),
        [message + "; got values outside it such as", tf.boolean_mask(x, ~inside)[:3]])
    with tf.control_dependencies([check]):
        return tf.identity(x)
