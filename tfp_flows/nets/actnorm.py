"""The parameters of Glow's ActNorm: a per-channel (or per-element) log-scale and bias with
data-dependent init."""

import keras
import tensorflow as tf

from tfp_flows import _replicas
from tfp_flows._validation import check_positive_int, check_positive_number

__all__ = ["ActNormParams"]


@keras.saving.register_keras_serializable(package="tfp_flows")
class ActNormParams(keras.layers.Layer):
    """Owns ActNorm's per-channel `log_scale` and `bias` and whether they were initialised.

    Weights (all of shape `[num_channels]`, or `[*spatial_shape, num_channels]` with
    `spatial_shape`, but the flag, a scalar):

    - `log_scale`, `bias`: trainable, zeros (the identity) until initialised;
    - `initialized`: non-trainable float, `0.` or `1.`. It is a Keras weight so that the
      initialisation state survives `.keras` files, checkpoints and SavedModel exports: a
      reloaded model never re-initialises over trained values.

    `layer(x, training=...)` returns `(log_scale, bias)` in the dtype of `x`. When
    `training` is true and the layer is not initialised yet, it first initialises from `x`
    (`initialize_from`); the check is a `tf.cond` on the flag, so it runs inside a
    `tf.function` (or XLA) training step exactly once, on the first batch. A function
    traced when the layer is initialised already leaves the check out (the flag is read
    while tracing): `Flow.fit` initialises the ActNorms from one training batch before it
    traces its step, so that step has no initialisation branches. Like the batch
    statistics of `BatchNormalization`, Keras propagates `training=True` from
    `model.fit` to this layer; a call without `training` (inference, `log_prob`, the dummy
    call that builds a flow) never initialises. Under a `tf.distribute` strategy with
    several replicas the statistics are those of the global batch (the replicas
    all-reduce counts, sums and centred squares), so every replica assigns the same
    values, exactly those one device would compute from the whole batch. There the flag
    is checked with `tf.where` instead of `tf.cond`, as TF cannot synchronise replicas
    inside a `tf.cond`: every training step computes (and all-reduces) the statistics,
    and keeps the current values once initialised.

    Weights are read and statistics computed in the data dtype, never in a mixed-precision
    policy's float16.

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039 (section 3.1).

    Args:
        num_channels: size of the last axis of the data (features of a vector, channels of
            an image).
        epsilon: added to the standard deviation at initialisation, so a constant channel
            gets a large but finite scale.
        spatial_shape: `None` (one scale and bias per channel, Glow's ActNorm), or the
            leading event axes `[H, W]` of an image (`[D]`-vectors have none) to give every
            element its own scale and bias, Flow++'s per-element normalisation; the
            statistics are then over the batch alone.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, num_channels, epsilon=1e-6, spatial_shape=None, **kwargs):
        # Under a mixed-precision policy the statistics and parameters stay in the data
        # dtype: inputs are not cast to float16, nor are the weights when read (hence
        # also `autocast=False` on each weight).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.epsilon = check_positive_number("epsilon", epsilon)
        if spatial_shape is not None:
            if isinstance(spatial_shape, str) or not hasattr(spatial_shape, "__iter__"):
                raise TypeError(f"spatial_shape must be None or a list of positive ints, got "
                                f"{spatial_shape!r}")
            spatial_shape = [check_positive_int("spatial_shape entries", d)
                             for d in spatial_shape]
        self.spatial_shape = spatial_shape
        # The shape of log_scale and bias.
        self.param_shape = [*(spatial_shape or []), self.num_channels]
        # The shapes are known here: creating the weights now lets the sampling direction
        # read them before any data went through the layer.
        self.build()

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] not in (None, self.num_channels):
            raise ValueError(f"{self.name} expects {self.num_channels} channels on the last "
                             f"axis, got input shape {list(input_shape)}")
        if self.built:
            return
        # "mean" aggregation: under tf.distribute every replica assigns the same
        # global-batch statistics, whose mean is themselves.
        self.log_scale = self.add_weight(shape=self.param_shape, initializer="zeros",
                                         name="log_scale", aggregation="mean",
                                         autocast=False)
        self.bias = self.add_weight(shape=self.param_shape, initializer="zeros",
                                    name="bias", aggregation="mean", autocast=False)
        self.initialized = self.add_weight(shape=[], initializer="zeros", dtype="float32",
                                           trainable=False, name="initialized",
                                           aggregation="mean", autocast=False)
        self.built = True

    def _values(self, dtype):
        return (tf.cast(tf.convert_to_tensor(self.log_scale), dtype),
                tf.cast(tf.convert_to_tensor(self.bias), dtype))

    def _statistics(self, x):
        """Returns `(-mean, -log(std + epsilon))` of `x` per parameter, in the weights' dtype."""
        x = tf.stop_gradient(tf.convert_to_tensor(x))
        if x.shape.rank is not None and x.shape[-1] not in (None, self.num_channels):
            raise ValueError(f"{self.name} expects {self.num_channels} channels on the last "
                             f"axis, got shape {x.shape.as_list()}")
        # Statistics in float32 at least (a float16 variance of raw pixels overflows).
        stat_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        flat = tf.reshape(tf.cast(x, stat_dtype), [-1, *self.param_shape])
        # Over the global batch under tf.distribute: every replica gets the same values.
        mean, variance = _replicas.global_moments(flat, axes=[0])
        log_scale = -tf.math.log(tf.sqrt(variance) + tf.cast(self.epsilon, stat_dtype))
        return tf.cast(-mean, self.bias.dtype), tf.cast(log_scale, self.log_scale.dtype)

    def initialize_from(self, x):
        """Sets `bias = -mean(x)`, `log_scale = -log(std(x) + epsilon)` and the flag.

        Statistics are per parameter (per channel, over every axis but the last; per
        element with `spatial_shape`, over the batch), so `(x + bias) * exp(log_scale)` has
        zero mean and unit variance per channel (element). Works eagerly, in a
        `tf.function` and under XLA.
        """
        bias, log_scale = self._statistics(x)
        self.bias.assign(bias)
        self.log_scale.assign(log_scale)
        self.initialized.assign(1.0)
        return tf.constant(True)

    def initialized_now(self):
        """Whether the flag is set now (read eagerly, also while a function is traced;
        `False` where no eager value exists, as in a TF1 graph)."""
        with tf.init_scope():
            return tf.executing_eagerly() and bool(self.initialized.numpy() > 0.5)

    def maybe_initialize_from(self, x):
        """`initialize_from(x)` unless already initialised; safe in graphs and under XLA.

        `x` may be a function of no arguments returning the data: then it runs only when
        the layer initialises (in the `tf.cond` branch), so a step that does not need the
        data does not compute it.

        Returns a tensor to take control dependencies on before reading the weights.
        Initialised already when called (or traced), it adds nothing to the graph.
        """
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            x = x() if callable(x) else x
            # Assigning a mirrored variable synchronises the replicas (a merge_call), which
            # TF cannot do inside a tf.cond branch. So every training step assigns, keeping
            # the current values once initialised; the statistics are those of the global
            # batch, the same on every replica.
            done = self.initialized > 0.5
            bias, log_scale = self._statistics(x)
            ops = [self.bias.assign(tf.where(done, tf.convert_to_tensor(self.bias), bias)),
                   self.log_scale.assign(
                       tf.where(done, tf.convert_to_tensor(self.log_scale), log_scale)),
                   self.initialized.assign(1.0)]
            with tf.control_dependencies([op for op in ops if op is not None]):
                return tf.logical_not(done)
        if self.initialized_now():
            return tf.constant(False)
        return tf.cond(self.initialized > 0.5, lambda: tf.constant(False),
                       lambda: self.initialize_from(x() if callable(x) else x))

    def call(self, inputs, training=None):
        """Returns `(log_scale, bias)` in the dtype of `inputs`, initialising first if needed.

        Args:
            inputs: data-direction activations `[..., num_channels]` (what ActNorm
                normalises); used only for the initialisation.
            training: initialise from `inputs` if true and not initialised yet.
        """
        return self.read(inputs.dtype, inputs if training else None)

    def read(self, dtype, initialize_from=None):
        """Returns `(log_scale, bias)` in `dtype`, first initialising if asked and needed.

        Args:
            dtype: the dtype of the returned values.
            initialize_from: `None` (just read), or the data to initialise from if not
                initialised yet: a tensor, or a function of no arguments returning it,
                called only when the layer initialises.
        """
        if initialize_from is None:
            return self._values(dtype)
        done = self.maybe_initialize_from(initialize_from)
        # The reads must see the values the cond may just have assigned.
        with tf.control_dependencies([done]):
            return self._values(dtype)

    def get_config(self):
        return {**super().get_config(), "num_channels": self.num_channels,
                "epsilon": self.epsilon, "spatial_shape": self.spatial_shape}
