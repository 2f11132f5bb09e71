"""DenseFlow's dense block: flow units with noise appended between them (cross-unit coupling)."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows.distributions.augmentation import NormalAugmentation
from tfp_flows.distributions.surjection import InferenceSurjection, as_seed, check_shape

__all__ = ["CrossUnitBlock"]


def stage_seed(seed, index):
    """The stateless seed of stage `index` of a stochastic chain (`None` stays `None`)."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), index)


class CrossUnitBlock(InferenceSurjection):
    """Flow units with noise channels appended between them, DenseFlow's dense block.

    With units `f_0, ..., f_{n-1}` (bijectors, written as sampling maps as everywhere in
    tfp_flows, so the data -> noise direction applies their inverses) and augmentations
    `a_1, ..., a_{n-1}` (`NormalAugmentation`s), the data -> latent direction is

        y_0 = f_0^{-1}(x)
        y_i = f_i^{-1}(concat(y_{i-1}, n_i)),   n_i ~ q_i(n | x, y_0, ..., y_{i-2})

    where `q_i = N(mu_i, sigma_i^2)` with `(mu_i, log_sigma_i)` computed by `a_i`'s
    `params_net` from the concatenation of the block's input and the outputs of all units
    but the last one before it, as the original code does (`InvertibleDenseBlock` in
    matejgrcic/DenseFlow), or a standard Normal for an augmentation without `params_net`
    (the unconditional augmentation DenseFlow improves on). The latent is `y_{n-1}`, with
    the channels of `x` plus all noise channels. The block's contribution to the bound is

        log q(latent | x) = sum_i [log N(e_i; 0, 1) - sum(log sigma_i)]
                            - sum_i log |det d f_i^{-1}|,

    the first sum that of the noise (`e_i` the standard Normal draw behind `n_i`), the
    second the units' log-dets. Decoding is exact: `f_i` then dropping `n_i`, from the last
    unit to the first. Without augmentations (growth rate 0) the block is a plain chain of
    units.

    Reference: Grcic, Grubisic, Segvic, "Densely connected normalizing flows",
    arXiv:2106.04627 (section 3).

    Args:
        units: `n >= 1` bijectors; unit `i` acts on the block's input shape with the
            channels of the augmentations before it added.
        augmentations: `n - 1` `NormalAugmentation`s; augmentation `i` (from 1) appends its
            noise to the output of unit `i - 1`.
        event_shape: shape of the block's input, `[D]` or `[H, W, C]`.
        name: a name for the surjection.

    Example:
        >>> import numpy as np
        >>> import tensorflow_probability as tfp
        >>> from tfp_flows.distributions import NormalAugmentation
        >>> units = [tfp.bijectors.Scale(2.0), tfp.bijectors.Identity()]
        >>> block = CrossUnitBlock(units, [NormalAugmentation([2], 3)], [2])
        >>> z, log_q = block.encode(np.ones([1, 2], "float32"), seed=0)
        >>> z.shape, block.latent_event_shape
        (TensorShape([1, 5]), [5])
        >>> block.decode(z).numpy()
        array([[1., 1.]], dtype=float32)
    """

    def __init__(self, units, augmentations, event_shape, name="cross_unit_block"):
        units, augmentations = list(units), list(augmentations)
        if not units or not all(isinstance(u, tfp.bijectors.Bijector) for u in units):
            raise TypeError(f"units must be a non-empty list of tfp.bijectors.Bijector, got "
                            f"{units!r}")
        if not all(isinstance(a, NormalAugmentation) for a in augmentations):
            raise TypeError(f"augmentations must be NormalAugmentations, got "
                            f"{augmentations!r}")
        if len(augmentations) not in (0, len(units) - 1):
            raise ValueError(f"{len(units)} units take {len(units) - 1} augmentations (one "
                             f"between each two units) or none, got {len(augmentations)}")
        shape = check_shape("event_shape", event_shape)
        for index, unit in enumerate(units):
            if index and augmentations:
                augmentation = augmentations[index - 1]
                if augmentation.event_shape != shape:
                    raise ValueError(f"augmentation {index} takes event shape "
                                     f"{augmentation.event_shape}, but unit {index - 1} "
                                     f"gives {shape}")
                shape = augmentation.latent_event_shape
            if unit.inverse_event_shape(shape).as_list() != shape:
                raise ValueError(f"unit {index} must keep its event shape {shape}, got "
                                 f"{unit.inverse_event_shape(shape)}")
        super().__init__(event_shape, shape, name=name)
        self.units = units
        self.augmentations = augmentations
        self.default_num_eval_samples = max(
            [a.default_num_eval_samples for a in augmentations] or [1])

    @property
    def layers(self):
        return [layer for a in self.augmentations for layer in a.layers]

    def encode(self, x, seed=None, context=None):
        h = tf.convert_to_tensor(x)
        seed = as_seed(seed)
        event_ndims = len(self.event_shape)
        log_q = tf.zeros(tf.shape(h)[:1], h.dtype)
        previous = [h]
        for index, unit in enumerate(self.units):
            if index and self.augmentations:
                conditioning = tf.concat(previous, axis=-1)
                previous.append(h)
                h, log_q_noise = self.augmentations[index - 1].encode(
                    h, seed=stage_seed(seed, index), context=conditioning)
                log_q += log_q_noise
            y = unit.inverse(h)
            log_q -= unit.inverse_log_det_jacobian(h, event_ndims)
            h = y
        return h, log_q

    def decode(self, z, context=None):
        h = tf.convert_to_tensor(z)
        for index in reversed(range(len(self.units))):
            h = self.units[index].forward(h)
            if index and self.augmentations:
                h = self.augmentations[index - 1].decode(h)
        return h
