"""Glow's activation normalisation, with data-dependent initialisation."""

import contextlib
import math
import threading

import keras
import tensorflow as tf

from tfp_flows.bijectors.base import FlowBijector, check_event_shape

__all__ = ["ActNorm", "initialize_actnorm"]

_forcing = threading.local()


def _force_depth():
    return getattr(_forcing, "depth", 0)


@contextlib.contextmanager
def _force_initialization():
    """Within this block every ActNorm inverse (re)initialises from its input."""
    _forcing.depth = _force_depth() + 1
    _forcing.count = 0 if _forcing.depth == 1 else _forcing.count
    try:
        yield _forcing
    finally:
        _forcing.depth -= 1


class ActNorm(FlowBijector):
    """Per-channel affine normalisation (Glow's ActNorm) with data-dependent initialisation.

    With `s` (`log_scale`) and `b` (`bias`), vectors of the channel size read from an
    `ActNormParams` layer and broadcast over the other event axes (or, for a layer with
    `spatial_shape`, one per element of the event: Flow++'s per-element form). The
    inverse is the
    data -> noise (normalising) direction, the one `log_prob` of a
    `tfd.TransformedDistribution` runs on data:

    - inverse: `z = (x + b) * exp(s)`
    - forward: `x = z * exp(-s) - b`
    - log-det: inverse `H * W * sum(s)` (an image `[H, W, C]`; `sum(s)` for a vector
      `[D]` and for per-element parameters), forward the negative.

    Data-dependent initialisation: the parameters start as the identity. The first time
    the inverse runs on data while `training` is true (Keras propagates it from
    `model.fit`, like it does for `BatchNormalization`) and the layer's `initialized` flag
    is 0, the layer first sets `b = -mean(x)` and `s = -log(std(x) + eps)` per channel from
    that batch, so the output of this step has zero mean and unit variance per channel; the
    transform and log-det of that same call already use the new values. The flag is a saved
    Keras weight, so it happens once and never again after reloading: `fit` runs one
    training batch through the flow before it compiles its step (see
    `tff.nets.ActNormParams`); a step compiled before the layer is initialised checks the
    flag with a `tf.cond` and initialises inside itself, also under XLA. Calls without
    `training` (inference,
    `log_prob`, the dummy call a `Flow` makes to build its weights) never initialise. To
    initialise explicitly, outside `fit`, use `initialize_actnorm(flow_or_bijector, x)`.

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039 (section 3.1).

    Args:
        params_layer: a `tfp_flows.nets.ActNormParams` layer with `num_channels` equal to
            the last axis of `event_shape`.
        event_shape: `[D]` (vector) or `[H, W, C]` (image).
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows.nets import ActNormParams
        >>> actnorm = ActNorm(ActNormParams(2), [2])
        >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], "float32")
        >>> initialize_actnorm(actnorm, x)
        1
        >>> np.round(actnorm.inverse(x).numpy(), 3)
        array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
    """

    def __init__(self, params_layer, event_shape, validate_args=False, name="actnorm"):
        parameters = dict(locals())
        if not isinstance(params_layer, keras.layers.Layer) or not all(
                hasattr(params_layer, attr) for attr in ("initialize_from", "initialized")):
            raise TypeError(f"params_layer must be a tfp_flows.nets.ActNormParams layer, got "
                            f"{type(params_layer).__name__}")
        event_shape = check_event_shape(event_shape)
        if event_shape[-1] != params_layer.num_channels:
            raise ValueError(
                f"event_shape {event_shape} has {event_shape[-1]} channels on its last axis "
                f"but params_layer has num_channels={params_layer.num_channels}")
        spatial_shape = getattr(params_layer, "spatial_shape", None)
        if spatial_shape is not None and list(spatial_shape) != event_shape[:-1]:
            raise ValueError(
                f"params_layer has per-element parameters for spatial_shape {spatial_shape}, "
                f"which must be event_shape[:-1] = {event_shape[:-1]}")
        self.params_layer = params_layer
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    def _transform(self, x, inverse, context=None):
        if inverse:
            if _force_depth():
                self.params_layer.initialize_from(x)
                _forcing.count += 1
            # No explicit `training`: Keras' call context decides (true inside `fit`).
            log_scale, bias = self.params_layer(x)
        else:
            # Base noise is no data to initialise from.
            log_scale, bias = self.params_layer(x, training=False)
        # A per-channel log-scale counts once per pixel of an image; per-element ones once.
        pixels = (1 if getattr(self.params_layer, "spatial_shape", None) is not None
                  else math.prod(self._event_shape_in[:-1]))
        log_det = self._per_example(tf.cast(pixels, x.dtype) * tf.reduce_sum(log_scale), x)
        if inverse:
            return (x + bias) * tf.exp(log_scale), log_det
        return x * tf.exp(-log_scale) - bias, -log_det


def initialize_actnorm(flow_or_bijector, x, context=None):
    """(Re)initialises every `ActNorm` reached by running `x` in the data -> noise direction.

    The data go through the inverse of the bijector (or of `flow.bijector` for a
    `tfp_flows` `Flow` model) once; each `ActNorm` in a chain initialises, in order, from
    the activations that reach it, i.e. after the steps before it have transformed the data
    (and after earlier ActNorms have been initialised). Already initialised ActNorms are
    initialised again. Inverted ActNorms (`tfb.Invert(actnorm)`) see the sampling
    direction and are left alone. Runs eagerly; use a batch large enough for stable
    per-channel statistics.

    Args:
        flow_or_bijector: a `Flow` model (anything with a `bijector` attribute that is a
            bijector) or a `tfp.bijectors.Bijector`.
        x: data `[batch, *event_shape]`.
        context: context tensor of a conditional flow, or `None`.

    Returns:
        The number of ActNorm steps initialised.

    Raises:
        ValueError: if no ActNorm was reached.
    """
    bijector = getattr(flow_or_bijector, "bijector", flow_or_bijector)
    if not hasattr(bijector, "inverse"):
        raise TypeError(f"flow_or_bijector must be a Flow or a tfp.bijectors.Bijector, got "
                        f"{type(flow_or_bijector).__name__}")
    dtype = getattr(flow_or_bijector, "dtype", None)
    x = tf.convert_to_tensor(x, dtype=dtype if isinstance(dtype, str) else None)
    kwargs = {} if context is None else {"context": tf.convert_to_tensor(context, x.dtype)}
    with _force_initialization() as state:
        # A fresh tensor: a cache hit would skip the transforms.
        bijector.inverse(tf.identity(x), **kwargs)
        count = state.count
    if not count:
        raise ValueError(f"initialize_actnorm: {bijector.name} contains no ActNorm step "
                         "reached in the data -> noise direction")
    return count
