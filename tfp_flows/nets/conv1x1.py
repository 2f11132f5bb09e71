"""A layer that owns the kernel of Glow's invertible 1x1 convolution."""

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

from tfp_flows._validation import check_bool, check_int, check_positive_int

__all__ = ["Conv1x1Kernel"]


def random_orthogonal(size, seed):
    """A `[size, size]` orthogonal matrix drawn uniformly (Haar) with NumPy from `seed`."""
    matrix = np.random.default_rng(seed).normal(size=[size, size])
    q, r = np.linalg.qr(matrix)
    # Fixing the signs of diag(r) makes the distribution of q uniform over O(size).
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _log_abs_det(matrix):
    """`log|det matrix|` from a QR decomposition: XLA on CPU has no kernel for `slogdet`,
    `det` or `lu`, but it has one for `qr` (and its gradient), and
    `|det W| = |det Q| |det R| = prod |diag(R)|`."""
    _, r = tf.linalg.qr(matrix)
    return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))


@keras.saving.register_keras_serializable(package="tfp_flows")
class Conv1x1Kernel(keras.layers.Layer):
    """Holds the `[C, C]` kernel `W` of an invertible 1x1 convolution (Glow).

    Initialised to a random orthogonal matrix (so `log|det W| = 0`), reproducible from
    `seed`. Two parameterisations:

    - `lu=False`: one trainable `kernel = W`; `log|det W|` comes from a QR decomposition and
      `W^-1` from `tf.linalg.inv`, each `O(C^3)` per call.
    - `lu=True` (Glow's LU decomposition, section 3.2): `W = P L (U + diag(sign * exp(log_s)))`
      with a fixed permutation `P` and fixed signs `sign` (non-trainable weights, from the LU
      decomposition of the initial orthogonal matrix), a trainable strictly lower `L` (unit
      diagonal added by masking), a trainable strictly upper `U` and a trainable `log_s`.
      Then `log|det W| = sum(log_s)` and `W^-1` comes from two triangular solves.

    `layer(inputs, inverse=False)` returns `(kernel, log_abs_det)`: `W` (or `W^-1` when
    `inverse=True`) in the dtype of `inputs`, and the scalar `log|det W|` (not negated),
    computed in the variables' dtype (float32 under a mixed-precision policy: the weights do
    not autocast). `inputs` only supplies the dtype.

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039.

    Args:
        channels: size `C` of the last axis the kernel mixes.
        lu: whether to use the LU parameterisation.
        seed: int seed of the random orthogonal initialisation; `None` draws one from NumPy's
            global generator (seeded by `keras.utils.set_random_seed`). The config records
            the seed used, so `from_config` rebuilds the same initial kernel.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
        >>> layer = Conv1x1Kernel(3, lu=True, seed=0)
        >>> kernel, log_abs_det = layer(np.zeros([1, 3], "float32"))
        >>> bool(np.allclose(kernel @ np.transpose(kernel), np.eye(3), atol=1e-5))
        True
    """

    def __init__(self, channels, lu=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_positive_int("channels", channels)
        check_bool("lu", lu)
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self.lu = lu
        self.seed = check_int("seed", seed, allow_none=True)
        # Weights do not depend on the input shape: they exist from construction on, like
        # `LogScale`'s, so a loaded model finds them without a build step.
        self._create_weights()

    def _weight(self, name, value, trainable=True):
        value = np.asarray(value)
        return self.add_weight(
            shape=value.shape, name=name, trainable=trainable, autocast=False,
            initializer=lambda shape, dtype=None: tf.constant(value, dtype=dtype))

    def _create_weights(self):
        w_init = random_orthogonal(self.channels, self.seed)
        if not self.lu:
            self.kernel = self._weight("kernel", w_init)
            return
        p, lower, upper = scipy.linalg.lu(w_init)
        diagonal = np.diag(upper)
        self.permutation = self._weight("permutation", p, trainable=False)
        self.sign = self._weight("sign", np.sign(diagonal), trainable=False)
        self.lower = self._weight("lower", np.tril(lower, k=-1))
        self.upper = self._weight("upper", np.triu(upper, k=1))
        self.log_scale = self._weight("log_scale", np.log(np.abs(diagonal)))

    def _lu_factors(self):
        """`(P, L, U')` with `W = P L U'`, `L` unit lower and `U'` upper triangular."""
        identity = tf.eye(self.channels, dtype=self.variable_dtype)
        # band_part keeps the masked entries out of W and so gives them zero gradient.
        lower = tf.linalg.band_part(tf.convert_to_tensor(self.lower), -1, 0)
        lower = lower - tf.linalg.band_part(lower, 0, 0) + identity
        upper = tf.linalg.band_part(tf.convert_to_tensor(self.upper), 0, -1)
        upper = upper - tf.linalg.band_part(upper, 0, 0)
        upper = upper + tf.linalg.diag(
            tf.convert_to_tensor(self.sign) * tf.exp(tf.convert_to_tensor(self.log_scale)))
        return tf.convert_to_tensor(self.permutation), lower, upper

    def kernel_and_log_abs_det(self, inverse=False):
        """`(W or W^-1, log|det W|)` in the variables' dtype; see the class docstring."""
        if not self.lu:
            kernel = tf.convert_to_tensor(self.kernel)
            log_abs_det = _log_abs_det(kernel)
            return (tf.linalg.inv(kernel) if inverse else kernel), log_abs_det
        permutation, lower, upper = self._lu_factors()
        log_abs_det = tf.reduce_sum(tf.convert_to_tensor(self.log_scale))
        if not inverse:
            return permutation @ lower @ upper, log_abs_det
        # W^-1 = U'^-1 L^-1 P^T: solve U' Z = L^-1 P^T, after L M = P^T.
        inverse_lower = tf.linalg.triangular_solve(
            lower, tf.transpose(permutation), lower=True)
        return tf.linalg.triangular_solve(upper, inverse_lower, lower=False), log_abs_det

    def call(self, inputs, inverse=False):
        kernel, log_abs_det = self.kernel_and_log_abs_det(inverse=inverse)
        return tf.cast(kernel, inputs.dtype), log_abs_det

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "lu": self.lu,
                "seed": self.seed}
