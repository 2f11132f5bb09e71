"""Bits per dimension and the NaN guard."""

import math

import keras
import numpy as np
import pytest

import tfp_flows as tff
from tfp_flows.training import BitsPerDim, NaNGuard, bits_per_dim


def test_bits_per_dim_formula():
    assert bits_per_dim(3 * math.log(2.0), 3) == pytest.approx(1.0)
    assert bits_per_dim(0.0, 5) == 0.0
    with pytest.raises(ValueError, match="num_dims must be a positive int, got 0"):
        bits_per_dim(1.0, 0)


def test_bits_per_dim_metric_averages_negative_log_prob():
    metric = BitsPerDim(2)
    metric.update_state(np.array([-2 * math.log(2.0), -6 * math.log(2.0)], "float32"))
    assert float(metric.result()) == pytest.approx(2.0, rel=1e-6)
    clone = BitsPerDim.from_config(metric.get_config())
    assert clone.num_dims == 2


def test_fit_reports_bits_per_dim_consistent_with_loss():
    keras.utils.set_random_seed(0)
    flow = tff.models.RealNVP([3], num_layers=2, hidden_units=[8])
    flow.compile(optimizer="adam")
    x = np.random.default_rng(0).normal(size=[64, 3]).astype("float32")
    logs = flow.evaluate(x, return_dict=True, verbose=0)
    assert logs["bits_per_dim"] == pytest.approx(bits_per_dim(logs["loss"], 3), rel=1e-5)


def test_nan_loss_stops_training_with_floating_point_error():
    keras.utils.set_random_seed(0)
    flow = tff.models.RealNVP([2], num_layers=2, hidden_units=[8])
    # A learning rate this large drives the weights to Inf within a few steps.
    flow.compile(optimizer=keras.optimizers.SGD(1e30))
    x = np.random.default_rng(0).normal(size=[256, 2]).astype("float32") * 100
    with pytest.raises(FloatingPointError, match="training loss became nan|inf"):
        flow.fit(x, batch_size=32, epochs=50, verbose=0)
    assert flow.stop_training


def test_nan_guard_passes_finite_losses():
    guard = NaNGuard()
    guard.set_model(tff.models.RealNVP([2], num_layers=1, hidden_units=[4]))
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": 1.5})
    with pytest.raises(FloatingPointError, match="epoch 1, batch 3"):
        guard.on_train_batch_end(2, {"loss": float("nan")})
