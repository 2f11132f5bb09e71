"""Grouped autoregressive flow: the rows of an event, each transformed given the rows above."""

import keras
import tensorflow as tf

from tfp_flows.bijectors.autoregressive import sequential_passes
from tfp_flows.bijectors.base import FlowBijector, check_event_shape
from tfp_flows.bijectors.transformers import get_transformer

__all__ = ["GroupedAutoregressive"]


class GroupedAutoregressive(FlowBijector):
    """Autoregressive flow over groups of entries: the `H` rows of an `[H, W, C]` event.

    The event is split into `G = H` groups, row `i` being group `i`. A conditioner maps
    the whole event to parameters `theta_i(x)` of row `i` that depend on the rows `< i`
    only (for example `tff.nets.CausalConvTrunk` with a 1x1 `tff.nets.StepProjection`),
    and an elementwise `transformer` `tau` maps each entry with its own parameters. With
    `u` the base-side value and `x` the data-side value:

    - inverse (density direction, data -> noise): `u_i = tau^{-1}(x_i; theta_i(x_{<i}))`
      for every row at once: one conditioner pass.
    - forward (sampling direction, noise -> data): `x_i = tau(u_i; theta_i(x_{<i}))`,
      solved one row at a time: a `tf.while_loop` of exactly `H` conditioner passes, pass
      `k` recomputing `theta(x)` from the current `x`; after pass `k` the first `k` rows
      are exact, and the last pass gives the exact parameters of every row. A
      conditioner with a `precompute()` method (`tff.nets.SharedTrunkConditioner`) is
      asked once per sampling call for a function computing the same, so the terms of
      its flow step that do not depend on the data are computed once, not `H` times.
    - log-det: the Jacobian is block triangular in the rows with diagonal blocks, so the
      log-det is the sum of the elementwise log-derivatives of `tau` (forward
      `sum log tau'(u; theta)`, inverse its negative at the same point).

    With the affine transformer this is WaveFlow's `Z_i = sigma_i(X_{<i}) X_i + mu_i(X_{<i})`
    in the density direction (`u = (x - mu) exp(-s)` here, `s` soft-clamped). `G = 2`
    rows is a coupling (whose first group gets a data-independent transform), `G` equal to
    the event size (`[D, 1, 1]`) a fully autoregressive flow; in between, the `W C`
    entries of a row are transformed in parallel given the rows above, which is how
    WaveFlow trades the `D` sequential passes of WaveNet for `H`.

    The conditioner returns `transformer.num_params` parameters per entry on its last
    axis, parameter `p` of channel `c` at channel `p * C + c` (`Coupling`'s layout; see
    `conditioner_output_size`). A zero-initialised last layer makes a fresh bijector the
    identity for the shipped transformers. The bijector cannot check that the
    conditioner is causal along the rows: a conditioner whose row `i` reads rows `>= i`
    gives a wrong density and a wrong inverse.

    References: Ping, Peng, Zhao, Song, "WaveFlow: A Compact Flow-based Model for Raw
    Audio", arXiv:1912.01219; Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow
    for Density Estimation", arXiv:1705.07057.

    Args:
        conditioner: a Keras layer mapping `[N, H, W, C]` to
            `[N, H, W, conditioner_output_size(event_shape, transformer)]` whose row `i`
            depends on input rows `< i` only.
        event_shape: `[H, W, C]`, `H >= 2`.
        transformer: a `tff.bijectors.Transformer`, or `"additive"`, `"affine"`,
            `"spline"` or `"logistic_mixture"` for one with default arguments.
        validate_args: TFP's argument validation flag.
        name: bijector name.

    Raises:
        TypeError: `conditioner` is not a Keras layer, or a bad `transformer` or
            `event_shape` type.
        ValueError: `event_shape` is not `[H, W, C]` with `H >= 2`, or an unknown
            transformer name.

    Example:
        >>> import numpy as np
        >>> from tfp_flows import nets
        >>> size = GroupedAutoregressive.conditioner_output_size([4, 3, 1], "affine")
        >>> conditioner = nets.SharedTrunkConditioner(nets.CausalConvTrunk(8),
        ...                                           nets.StepProjection(size))
        >>> bijector = GroupedAutoregressive(conditioner, [4, 3, 1], "affine")
        >>> x = np.ones([2, 4, 3, 1], "float32")
        >>> float(np.abs(bijector.forward(x) - x).max())  # fresh: the identity
        0.0
    """

    def __init__(self, conditioner, event_shape, transformer="affine", validate_args=False,
                 name="grouped_autoregressive"):
        parameters = dict(locals())
        if not isinstance(conditioner, keras.layers.Layer):
            raise TypeError(f"conditioner must be a keras.layers.Layer, got {conditioner!r} "
                            f"of type {type(conditioner).__name__}")
        event_shape = _check_rows(event_shape)
        self.conditioner = conditioner
        self.transformer = get_transformer(transformer)
        super().__init__(event_shape, parameters=parameters, name=name,
                         validate_args=validate_args)

    @property
    def num_groups(self):
        """The number of groups `G`: the rows `H` of the event."""
        return self._event_shape_in[0]

    @staticmethod
    def conditioner_output_size(event_shape, transformer):
        """Size of the conditioner's last output axis: `transformer.num_params * C`."""
        return get_transformer(transformer).num_params * _check_rows(event_shape)[-1]

    # -- the shared pieces -------------------------------------------------------------------

    def _params(self, x, conditioner=None):
        """Transformer parameters `[N, H, W, C, P]` of `x` `[N, H, W, C]` (by
        `conditioner`, else `self.conditioner`), in its dtype."""
        params = (conditioner or self.conditioner)(x)
        # Log-dets stay in the data dtype (float32) even under a mixed-precision policy.
        params = tf.cast(params, x.dtype)
        channels, num_params = self._event_shape_in[-1], self.transformer.num_params
        if params.shape[-1] is not None and params.shape[-1] != num_params * channels:
            raise ValueError(
                f"{self.name}: the conditioner returned {params.shape[-1]} values on its last "
                f"axis, expected {num_params * channels} ({num_params} parameters of "
                f"{type(self.transformer).__name__} x {channels} channels; see "
                f"conditioner_output_size)")
        # Parameter p of channel c is channel p * C + c: move p to a trailing axis.
        params = tf.reshape(params, [-1, *self._event_shape_in[:-1], num_params, channels])
        return tf.linalg.matrix_transpose(params)

    def _elementwise(self, value, params, inverse):
        """`tau` (or `tau^{-1}`) with `params`: the result and its log-det `[N]`."""
        apply = self.transformer.inverse if inverse else self.transformer.forward
        out, log_det = apply(value, params)
        return out, tf.reduce_sum(log_det, axis=[1, 2, 3])

    # -- the fused transform -----------------------------------------------------------------

    def _transform(self, x, inverse, context=None):
        batch_shape = tf.shape(x)[:-3]
        flat = tf.reshape(x, [-1, *self._event_shape_in])
        if inverse:
            out, log_det = self._elementwise(flat, self._params(flat), inverse=True)
        else:
            out, log_det = self._sequential(flat)
        return tf.reshape(out, tf.shape(x)), tf.reshape(log_det, batch_shape)

    def _sequential(self, noise):
        """The sampling direction: `H` conditioner passes, each fixing one more row."""
        return sequential_passes(
            noise, self.num_groups, self.conditioner,
            lambda x, conditioner: self._elementwise(noise, self._params(x, conditioner),
                                                     inverse=False))


def _check_rows(event_shape):
    event_shape = check_event_shape(event_shape, ranks=(3,))
    if event_shape[0] < 2:
        raise ValueError(f"a grouped autoregressive flow needs event_shape [H, W, C] with "
                         f"H >= 2 groups (rows), got {event_shape}")
    return event_shape
