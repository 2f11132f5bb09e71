"""Preprocessing at a flow's data end: level scaling and the logit transform of dequantized
images, standardisation of vectors.

The bijectors follow the package convention that `forward` is the sampling direction
(model space -> data space). Preprocessing data for training is their `inverse`, and the
log-dets of those inverses are what a flow's `log_prob` adds, so a flow ending in these
bijectors has its density over the data themselves: the dequantized data `y in [0, K)^D`
(see `tfp_flows.training.bits_per_dim` with `density_space="bins"`), or the vectors in
their own units.
"""

import math

import numpy as np
import tensorflow as tf

from tfp_flows._validation import check_bool, check_int, check_number, check_positive_number
from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["LevelScaling", "LogitTransform", "Standardize"]


def _num_elements(event_shape):
    return math.prod(event_shape)


class LevelScaling(FlowBijector):
    """Affine map between dequantized levels `[0, K)` and the unit interval.

    For `K = num_bins` quantisation levels (256 for 8-bit images, 17 for the scikit-learn
    digits) and `D` entries per event, with `c = 1/2` if `centered` else `c = 0`:

    - inverse (preprocessing, data -> model): `x = y / K - c`, mapping `[0, K)` to
      `[0, 1)` (or `[-1/2, 1/2)` when `centered`); log-det `-D log K`.
    - forward (sampling, model -> data): `y = K (x + c)`; log-det `+D log K`.

    Including this bijector in a flow makes the flow's density one over the dequantized data
    `y` (in units of one level), so `-log p(y) / (D ln 2)` is the usual bits per dimension
    with no further correction.

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803 (section 4.1); Theis, van den Oord, Bethge, "A note on the evaluation
    of generative models", arXiv:1511.01844 (section 3.1, dequantization).

    Args:
        num_bins: number of levels `K` of the discrete data, an int >= 2.
        event_shape: event shape, `[D]` or `[H, W, C]`.
        centered: map to `[-1/2, 1/2)` instead of `[0, 1)` (Glow's convention). The
            logit transform needs `centered=False`.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> scaling = LevelScaling(256, [2])
        >>> scaling.inverse(np.array([[0.0, 128.0]], "float32")).numpy()
        array([[0. , 0.5]], dtype=float32)
        >>> round(float(scaling.inverse_log_det_jacobian(
        ...     np.zeros([1, 2], "float32"), event_ndims=1)[0]), 4)  # -2 log 256
        -11.0904
    """

    def __init__(self, num_bins, event_shape, centered=False, validate_args=False,
                 name="level_scaling"):
        parameters = dict(locals())
        self.num_bins = check_int("num_bins", num_bins, minimum=2)
        self.centered = check_bool("centered", centered)
        shape = check_event_shape(event_shape)
        self._log_det_per_example = _num_elements(shape) * math.log(num_bins)
        super().__init__(shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        levels = tf.constant(float(self.num_bins), x.dtype)
        offset = tf.constant(0.5 if self.centered else 0.0, x.dtype)
        if inverse:
            y = x / levels - offset
            log_det = -self._log_det_per_example
        else:
            y = (x + offset) * levels
            log_det = self._log_det_per_example
        return y, self._per_example(tf.constant(log_det, x.dtype), x)


class LogitTransform(FlowBijector):
    """RealNVP's logit transform of data in `[0, 1]`, with a boundary margin `alpha`.

    With `s = alpha + (1 - 2 alpha) x`:

    - inverse (preprocessing, data -> model): `z = logit(s) = log s - log(1 - s)`;
      log-det `sum(log(1 - 2 alpha) - log s - log(1 - s))`.
    - forward (sampling, model -> data): `x = (sigmoid(z) - alpha) / (1 - 2 alpha)`;
      log-det `sum(log sigmoid(z) + log sigmoid(-z) - log(1 - 2 alpha))`.

    `alpha` keeps `s` in `[alpha, 1 - alpha]`, away from the infinite slopes of the logit
    at 0 and 1; RealNVP uses `alpha = 0.05`. Apply it after `LevelScaling(centered=False)`
    in data -> model order (in a `tfb.Chain` list: right after it).

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803 (section 4.1).

    Args:
        event_shape: event shape, `[D]` or `[H, W, C]`.
        alpha: margin in `[0, 0.5)`. With `alpha = 0` the data must lie in the open
            interval `(0, 1)`.
        validate_args: if true, the inverse asserts its input lies in `[0, 1]`.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> logit = LogitTransform([2], alpha=0.05)
        >>> logit.inverse(np.array([[0.5, 0.0]], "float32")).numpy().round(4)
        array([[ 0.    , -2.9444]], dtype=float32)
    """

    def __init__(self, event_shape, alpha=0.05, validate_args=False, name="logit_transform"):
        parameters = dict(locals())
        self.alpha = check_number("alpha", alpha, minimum=0, maximum=0.5,
                                  exclusive_maximum=True)
        super().__init__(check_event_shape(event_shape), parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        alpha = tf.constant(self.alpha, x.dtype)
        log_range = tf.math.log1p(tf.constant(-2.0 * self.alpha, x.dtype))  # log(1 - 2a)
        event_axes = list(range(-len(self._event_shape_in), 0))
        if inverse:
            if self.validate_args:
                x = tf.debugging.assert_all_finite(x, f"{self.name}: input is not finite")
                with tf.control_dependencies([
                        tf.debugging.assert_greater_equal(
                            x, tf.zeros([], x.dtype),
                            message=f"{self.name}: inverse needs inputs in [0, 1]"),
                        tf.debugging.assert_less_equal(
                            x, tf.ones([], x.dtype),
                            message=f"{self.name}: inverse needs inputs in [0, 1]")]):
                    x = tf.identity(x)
            s = alpha + (1.0 - 2.0 * alpha) * x
            log_s, log_one_minus_s = tf.math.log(s), tf.math.log1p(-s)
            y = log_s - log_one_minus_s
            log_det = tf.reduce_sum(log_range - log_s - log_one_minus_s, axis=event_axes)
        else:
            y = (tf.sigmoid(x) - alpha) / (1.0 - 2.0 * alpha)
            # log sigmoid(z) + log sigmoid(-z) = -softplus(-z) - softplus(z), stable for all z.
            log_det = tf.reduce_sum(
                -tf.math.softplus(-x) - tf.math.softplus(x) - log_range, axis=event_axes)
        return y, log_det


def _constant_array(name, value):
    """`value` as a float64 array of finite numbers, else `TypeError`/`ValueError`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array of numbers, got {value!r}") from error
    if array.ndim == 0:
        raise ValueError(f"{name} must have the event shape ([D] or [H, W, C]), got a "
                         f"scalar {value!r}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


class Standardize(FlowBijector):
    """A fixed elementwise affine map standardising the data: `z = (x - mean) / std`.

    `mean` and `std` are constants of the event's shape (the training data's, from
    `Standardize.from_data`), not weights: nothing is learned.

    - inverse (preprocessing, data -> model): `z = (x - mean) / std`; log-det
      `-sum(log std)`.
    - forward (sampling, model -> data): `x = z * std + mean`; log-det `+sum(log std)`.

    At the data end of a flow (`tff.models.MAF(..., standardize=...)`, any builder takes
    the argument) the flow models standardised data while its density, the log-det
    counted, stays that of the data in their own units: `log_prob`, losses and test NLLs
    are comparable with and without it. A flow's conditioners then see inputs of unit
    scale whatever the data's units. Unlike an ActNorm, it needs no training step to
    initialise and adds no weights.

    Args:
        mean: array of the event shape (`[D]`, or `[H, W, C]`).
        std: positive array of the same shape.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Raises:
        TypeError: `mean` or `std` is not an array of numbers.
        ValueError: their shapes differ or are no event shape, a value is not finite, or
            a `std` is not positive.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], "float32")
        >>> standardize = Standardize.from_data(x)
        >>> standardize.mean.tolist(), standardize.std.tolist()
        ([2.0, 20.0], [1.0, 10.0])
        >>> standardize.inverse(x).numpy()
        array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
        >>> round(float(standardize.inverse_log_det_jacobian(x, event_ndims=1)[0]), 4)
        -2.3026
    """

    def __init__(self, mean, std, validate_args=False, name="standardize"):
        parameters = dict(locals())
        mean = _constant_array("mean", mean)
        std = _constant_array("std", std)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std must have the same shape, got {list(mean.shape)} "
                             f"and {list(std.shape)}")
        if np.any(std <= 0):
            raise ValueError(f"std must be positive, got {std.tolist()}")
        shape = check_event_shape(list(mean.shape))
        self.mean, self.std = mean, std
        self._log_det_per_example = float(np.sum(np.log(std)))
        super().__init__(shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @classmethod
    def from_data(cls, x, min_std=1e-6, **kwargs):
        """The standardisation of data `x` (`[N, *event_shape]`): its mean and standard
        deviation over the examples, each std at least `min_std` (a constant dimension
        is shifted, not divided by zero).

        Args:
            x: the (training) data, an array or tensor of at least 2 examples.
            min_std: positive floor of the standard deviations.
            **kwargs: `validate_args`, `name`.
        """
        min_std = check_positive_number("min_std", min_std)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"x must be [N, *event_shape] with N >= 2 examples, got shape "
                             f"{list(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x must be finite to standardise it; it holds NaN or Inf")
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), min_std), **kwargs)

    def get_config(self):
        """`{"mean": [...], "std": [...]}` as nested lists: `Standardize(**config)`
        rebuilds it (a flow's `get_config` stores this)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def _transform(self, x, inverse, context=None):
        mean = tf.constant(self.mean, x.dtype)
        std = tf.constant(self.std, x.dtype)
        if inverse:
            y = (x - mean) / std
            log_det = -self._log_det_per_example
        else:
            y = x * std + mean
            log_det = self._log_det_per_example
        return y, self._per_example(tf.constant(log_det, x.dtype), x)
