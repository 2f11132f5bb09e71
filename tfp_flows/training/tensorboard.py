"""Deprecated names of TensorBoard logging: use `keras.callbacks.TensorBoard` directly.

`tensorboard` is a dependency of tfp_flows, so `keras.callbacks.TensorBoard` always
writes its logs; the TensorFlow-only writer that stood in for it when the package was
missing is gone. The two names below remain for code that used them.
"""

import os
import warnings

import keras

__all__ = ["EpochSummaries", "tensorboard_callback"]


def tensorboard_callback(log_dir):
    """Deprecated: returns `keras.callbacks.TensorBoard(log_dir)`."""
    warnings.warn("tensorboard_callback(log_dir) is deprecated; use "
                  "keras.callbacks.TensorBoard(log_dir)", DeprecationWarning, stacklevel=2)
    return keras.callbacks.TensorBoard(os.fspath(log_dir))


class EpochSummaries(keras.callbacks.TensorBoard):
    """Deprecated: `keras.callbacks.TensorBoard(log_dir, write_graph=False)`.

    Writes the epoch logs of `fit` (and the learning rate) as TensorBoard scalars under
    `log_dir/train` and `log_dir/validation`, tags `epoch_loss`, `epoch_bits_per_dim`, ...,
    stepped by the epoch index.

    Args:
        log_dir: directory of the logs; created if needed.
    """

    def __init__(self, log_dir):
        warnings.warn("EpochSummaries is deprecated; use keras.callbacks.TensorBoard",
                      DeprecationWarning, stacklevel=2)
        super().__init__(os.fspath(log_dir), write_graph=False)
