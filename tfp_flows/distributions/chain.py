"""A chain of bijectors, inference surjections and factor-outs, as one inference surjection."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._validation import check_positive_int
from tfp_flows.distributions.cross_unit import stage_seed
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed, check_shape

__all__ = ["FactorOut", "InferenceChain"]


class FactorOut:
    """A chain stage that sends all but the first `keep_channels` channels to the latent.

    The factored-out channels leave the chain (they are modelled by the standard Normal
    base of the flow from there on, as in the multi-scale flows); the chain goes on with
    the kept ones.
    """

    def __init__(self, keep_channels):
        self.keep_channels = check_positive_int("keep_channels", keep_channels)

    def __repr__(self):
        return f"FactorOut(keep_channels={self.keep_channels})"


class InferenceChain(InferenceSurjection):
    """Stages between data and a flat latent: bijectors, surjections and factor-outs.

    A flow whose representation changes size or draws noise partway through (DenseFlow's
    dense blocks widen it with noise between units) is, from the data to the noise, a
    sequence of stages:

    - a bijector `b` (written as its sampling map, as everywhere in tfp_flows): the
      representation becomes `b^{-1}(h)`, contributing `-log |det d b^{-1} / dh|` to
      `log q`;
    - an `InferenceSurjection` `s`: `(h, log q_s) = s.encode(h)`, contributing `log q_s`;
    - a `FactorOut(keep)`: the channels after the first `keep` leave for the latent.

    The chain's latent is the concatenation of everything that left, flattened in the order
    it left, then the final representation: a vector `[N]`. So

        log p(x) >= log N(latent; 0, I) - log q(latent | x)

    with `log q(latent | x)` the sum of the stages' contributions: the ELBO of the whole
    chain, and a flow using the chain as its surjection (with a standard Normal base over
    `[N]`, or more bijectors on it) evaluates the IWBO over all the chain's noise at once.
    Decoding runs the stages backwards (factored-out channels rejoin, bijectors map
    forward, surjections decode) and is exact.

    A dequantizing first stage makes the chain discrete with its `num_bins`; the default
    number of importance samples is the largest of the stages'.

    Reference: Nielsen, Jaini, Hoogeboom, Winther, Welling, "SurVAE Flows: Surjections to
    Bridge the Gap between VAEs and Flows", arXiv:2007.02731 (composition of layers, the
    likelihood contribution of each).

    Args:
        stages: bijectors, `InferenceSurjection`s and `FactorOut`s in data -> latent order.
        event_shape: shape of one data example.
        name: a name for the surjection.

    Example:
        >>> import numpy as np
        >>> import tensorflow_probability as tfp
        >>> chain = InferenceChain([tfp.bijectors.Scale(0.5), FactorOut(1)], [2, 2, 2])
        >>> z, log_q = chain.encode(np.ones([1, 2, 2, 2], "float32"))
        >>> z.shape, float(log_q[0])  # 8 entries scaled by 2: log q = -8 log 2
        (TensorShape([1, 8]), -5.545177459716797)
        >>> chain.decode(z).shape
        TensorShape([1, 2, 2, 2])
    """

    def __init__(self, stages, event_shape, name="inference_chain"):
        stages = list(stages)
        shape = check_shape("event_shape", event_shape)
        self._shapes = []  # the representation's shape entering each stage
        self._factored_shapes = []
        for index, stage in enumerate(stages):
            self._shapes.append(shape)
            if isinstance(stage, tfp.bijectors.Bijector):
                shape = stage.inverse_event_shape(shape).as_list()
            elif isinstance(stage, InferenceSurjection):
                if stage.event_shape != shape:
                    raise ValueError(f"stage {index} ({stage!r}) takes event shape "
                                     f"{stage.event_shape}, but the chain gives it {shape}")
                shape = list(stage.latent_event_shape)
            elif isinstance(stage, FactorOut):
                if stage.keep_channels >= shape[-1]:
                    raise ValueError(f"stage {index} ({stage!r}) must keep fewer than the "
                                     f"{shape[-1]} channels of {shape}")
                self._factored_shapes.append([*shape[:-1], shape[-1] - stage.keep_channels])
                shape = [*shape[:-1], stage.keep_channels]
            else:
                raise TypeError(f"stages must be bijectors, InferenceSurjections or "
                                f"FactorOuts, got {stage!r} at position {index}")
        self.final_shape = shape
        size = sum(int(np.prod(s)) for s in self._factored_shapes) + int(np.prod(shape))
        super().__init__(event_shape, [size], name=name)
        self.stages = stages
        surjections = [s for s in stages if isinstance(s, InferenceSurjection)]
        first = stages[0] if stages else None
        if isinstance(first, InferenceSurjection) and first.discrete:
            self.discrete, self.num_bins = True, first.num_bins
        self.default_num_eval_samples = max(
            [s.default_num_eval_samples for s in surjections] or [1])

    @property
    def layers(self):
        return [layer for stage in self.stages if isinstance(stage, InferenceSurjection)
                for layer in stage.layers]

    def encode(self, x, seed=None, context=None):
        h = tf.convert_to_tensor(x)
        seed = as_seed(seed)
        log_q = tf.zeros(tf.shape(h)[:1], h.dtype)
        rows = tf.shape(h)[:1]
        factored = []
        for index, stage in enumerate(self.stages):
            if isinstance(stage, tfp.bijectors.Bijector):
                event_ndims = len(self._shapes[index])
                y = stage.inverse(h)
                log_q -= stage.inverse_log_det_jacobian(h, event_ndims)
                h = y
            elif isinstance(stage, InferenceSurjection):
                h, log_q_stage = stage.encode(h, seed=stage_seed(seed, index), context=context)
                log_q += tf.cast(log_q_stage, log_q.dtype)
            else:
                factored.append(tf.reshape(h[..., stage.keep_channels:],
                                           tf.concat([rows, [-1]], 0)))
                h = h[..., :stage.keep_channels]
        latent = tf.concat([*factored, tf.reshape(h, tf.concat([rows, [-1]], 0))], axis=-1)
        return latent, log_q

    def decode(self, z, context=None):
        z = tf.convert_to_tensor(z)
        rows = tf.shape(z)[:1]
        sizes = [int(np.prod(s)) for s in [*self._factored_shapes, self.final_shape]]
        parts = tf.split(z, sizes, axis=-1)
        h = tf.reshape(parts[-1], tf.concat([rows, self.final_shape], 0))
        factored = [tf.reshape(part, tf.concat([rows, shape], 0))
                    for part, shape in zip(parts[:-1], self._factored_shapes, strict=True)]
        for stage in reversed(self.stages):
            if isinstance(stage, tfp.bijectors.Bijector):
                h = stage.forward(h)
            elif isinstance(stage, InferenceSurjection):
                h = stage.decode(h, context=context)
            else:
                h = tf.concat([h, factored.pop()], axis=-1)
        return h
