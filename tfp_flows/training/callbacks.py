"""Callbacks that `Flow.fit` installs."""

import math

import keras

__all__ = ["NaNGuard"]


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and raises `FloatingPointError`.

    Keras' own `TerminateOnNaN` only prints a line; a flow whose loss turned NaN has NaN
    weights, so going on (or returning as if training succeeded) would hide the failure.
    Checkpoints written before the failure are left untouched.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"training loss became {float(loss)} at epoch {self._epoch + 1}, batch "
                f"{batch + 1}; stopped. Lower the learning rate or check the data scale.")
