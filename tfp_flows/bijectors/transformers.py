"""Elementwise transformers: the invertible maps couplings and autoregressive flows apply.

A transformer maps each transformed entry `x_i` with its own parameters `theta_i`, which a
conditioner computes. It is a small stateless object (no variables: those live in the
conditioner) with

- `num_params`: parameters per transformed entry,
- `forward(x, params)` and `inverse(y, params)`, each returning `(value, log_det)` where
  `params` has the shape of `x` plus a trailing axis of size `num_params` and `log_det` is
  the elementwise log-derivative of the map applied (the shape of `x`),
- `get_config()` / `from_config(config)`, so a flow holding one serializes.

`tff.bijectors.Coupling` and `tff.bijectors.MaskedAutoregressiveFlow` take any transformer:
a new elementwise map plugs into both without touching them.
"""

import abc
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._validation import check_int, check_positive_number
from tfp_flows.bijectors.base import soft_clamp

__all__ = [
    "TRANSFORMER_NAMES",
    "Additive",
    "Affine",
    "RationalQuadraticSpline",
    "Transformer",
    "get_transformer",
]

# Lower bounds keeping every spline bin and knot slope away from zero (Durkan et al.).
_MIN_BIN_SIZE = 1e-3
_MIN_SLOPE = 1e-3


class Transformer(abc.ABC):
    """Abstract base of the elementwise transformers.

    Subclasses implement `num_params` (a property: a mixture of `K` components needs a
    number that depends on `K`), `forward` and `inverse`, and override `get_config` when
    their constructor takes arguments. Register a subclass with
    `@keras.saving.register_keras_serializable()` so that flows holding it can be saved
    and loaded.

    Both methods compute in the dtype of their inputs; callers cast the conditioner's
    output to the data dtype first, which keeps log-dets in float32 under a mixed-precision
    policy. An inverse must be defined for every finite input (no silent NaN).
    """

    @property
    @abc.abstractmethod
    def num_params(self):
        """Number of parameters per transformed entry (an int >= 1)."""

    @abc.abstractmethod
    def forward(self, x, params):
        """Returns `(y, log_det)`: `y = tau(x; params)` and `log|dy/dx|` elementwise.

        Args:
            x: tensor `[...]`.
            params: tensor `[..., num_params]`, the parameters of each entry of `x`.
        """

    @abc.abstractmethod
    def inverse(self, y, params):
        """Returns `(x, log_det)`: `x = tau^{-1}(y; params)` and `log|dx/dy|` elementwise."""

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """Rebuilds a transformer from `get_config()`."""
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="tfp_flows")
class Additive(Transformer):
    """NICE's additive transformer: a shift, volume preserving.

    With the parameter `t`:

    - forward: `y = x + t`
    - inverse: `x = y - t`
    - log-det: `0`

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components
    Estimation", arXiv:1410.8516.

    Example:
        >>> Additive().forward(tf.constant([1.0]), tf.constant([[0.5]]))[0].numpy()
        array([1.5], dtype=float32)
    """

    @property
    def num_params(self):
        return 1

    def forward(self, x, params):
        return x + params[..., 0], tf.zeros_like(x)

    def inverse(self, y, params):
        return y - params[..., 0], tf.zeros_like(y)


@keras.saving.register_keras_serializable(package="tfp_flows")
class Affine(Transformer):
    """RealNVP's affine transformer with a soft-clamped log-scale.

    With the parameters `(t, s_raw)` (in that order on the params axis) and
    `s = c * tanh(s_raw / c)`, `c = log_scale_bound`:

    - forward: `y = x * exp(s) + t`
    - inverse: `x = (y - t) * exp(-s)`
    - log-det: `s` forward, `-s` inverse

    Zero parameters are the identity map.

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803.

    Args:
        log_scale_bound: positive bound `c` of the soft clamp.

    Raises:
        TypeError: `log_scale_bound` is not a number.
        ValueError: `log_scale_bound` is not finite and positive.
    """

    def __init__(self, log_scale_bound=3.0):
        self.log_scale_bound = check_positive_number("log_scale_bound", log_scale_bound)

    @property
    def num_params(self):
        return 2

    def _shift_and_log_scale(self, params):
        return params[..., 0], soft_clamp(params[..., 1], self.log_scale_bound)

    def forward(self, x, params):
        shift, log_scale = self._shift_and_log_scale(params)
        return x * tf.exp(log_scale) + shift, log_scale

    def inverse(self, y, params):
        shift, log_scale = self._shift_and_log_scale(params)
        return (y - shift) * tf.exp(-log_scale), -log_scale

    def get_config(self):
        return {"log_scale_bound": self.log_scale_bound}


@keras.saving.register_keras_serializable(package="tfp_flows")
class RationalQuadraticSpline(Transformer):
    """Monotonic rational-quadratic spline on `[-B, B]`, the identity outside.

    With `K = num_bins` bins, knots `(x^k, y^k)`, bin widths `w_k`, heights `h_k`,
    slope `s_k = h_k / w_k` and knot derivatives `d_k`, for `x` in bin `k` and
    `xi = (x - x^k) / w_k`:

    - forward: `y = y^k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k)
      xi (1 - xi))`
    - inverse: the root in `[0, 1]` of the quadratic this gives for `xi` (closed form), so
      it is exact and finite for every input
    - log-det: `log(s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2)) -
      2 log(s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))` forward, its negative at the
      inverse image for the inverse; `0` outside `[-B, B]`.

    The `3K - 1` parameters per entry are `K` bin widths, `K` bin heights (softmax, scaled
    to `2B`, each at least `1e-3`) and `K - 1` interior knot slopes
    (`softplus(v + log(expm1(1 - 1e-3))) + 1e-3`, so `v = 0` is slope 1); the boundary
    slopes are 1. Zero parameters are the identity map. The math is TFP's
    `tfp.bijectors.RationalQuadraticSpline`.

    Reference: Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows",
    arXiv:1906.04032.

    Args:
        num_bins: number of bins `K >= 2`.
        range: positive half-width `B` of the interval `[-B, B]`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `num_bins < 2` or `range` is not finite and positive.
    """

    def __init__(self, num_bins=8, range=3.0):
        self.num_bins = check_int("num_bins", num_bins, minimum=2)
        self.range = check_positive_number("range", range)

    @property
    def num_params(self):
        return 3 * self.num_bins - 1

    def _spline(self, params):
        bins = self.num_bins
        dtype = params.dtype
        width = tf.constant(2.0 * self.range - bins * _MIN_BIN_SIZE, dtype)

        def bin_sizes(raw):
            return tf.math.softmax(raw, axis=-1) * width + _MIN_BIN_SIZE

        raw_slopes = params[..., 2 * bins:] + math.log(math.expm1(1.0 - _MIN_SLOPE))
        return tfp.bijectors.RationalQuadraticSpline(
            bin_widths=bin_sizes(params[..., :bins]),
            bin_heights=bin_sizes(params[..., bins:2 * bins]),
            knot_slopes=tf.math.softplus(raw_slopes) + _MIN_SLOPE,
            range_min=tf.constant(-self.range, dtype))

    def forward(self, x, params):
        spline = self._spline(params)
        return spline.forward(x), spline.forward_log_det_jacobian(x, event_ndims=0)

    def inverse(self, y, params):
        spline = self._spline(params)
        return spline.inverse(y), spline.inverse_log_det_jacobian(y, event_ndims=0)

    def get_config(self):
        return {"num_bins": self.num_bins, "range": self.range}


TRANSFORMER_NAMES = ("additive", "affine", "spline")


def get_transformer(identifier):
    """Returns a `Transformer` from an instance, a name or a serialized config.

    Args:
        identifier: a `Transformer` (returned as is), one of `"additive"`, `"affine"`,
            `"spline"` (default arguments), or a dict from
            `keras.saving.serialize_keras_object(transformer)`.

    Raises:
        TypeError: `identifier` is none of these.
        ValueError: an unknown name, or a config that is not a `Transformer`'s.
    """
    if isinstance(identifier, Transformer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in TRANSFORMER_NAMES:
            raise ValueError(f"transformer must be one of {TRANSFORMER_NAMES} or a "
                             f"Transformer, got {identifier!r}")
        return {"additive": Additive, "affine": Affine,
                "spline": RationalQuadraticSpline}[identifier]()
    if isinstance(identifier, dict):
        transformer = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(transformer, Transformer):
            raise ValueError(f"transformer config does not describe a Transformer, got "
                             f"{identifier!r}")
        return transformer
    raise TypeError(f"transformer must be a tfp_flows.bijectors.Transformer, a name or a "
                    f"serialized config, got {identifier!r} of type "
                    f"{type(identifier).__name__}")
