"""Glow's ActNorm: normalisation after init, init triggered inside `fit` (also under XLA) and
never by construction, inference or a second batch, explicit init through a chain, and the
init state surviving `.keras` files and SavedModel exports."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import bijectors, nets
from tfp_flows.models import Flow

MEAN = np.array([3.0, -2.0, 0.5, 10.0])
STD = np.array([0.5, 2.0, 1.0, 4.0])


def _data(shape, dtype="float64", seed=0, mean=MEAN, std=STD):
    channels = shape[-1]
    x = np.random.default_rng(seed).normal(size=shape)
    return (x * std[:channels] + mean[:channels]).astype(dtype)


def _actnorm(event_shape, dtype="float64", name="actnorm"):
    params = nets.ActNormParams(event_shape[-1], dtype=dtype, name=f"{name}_params")
    return bijectors.ActNorm(params, event_shape, name=name)


def _channel_stats(z):
    axes = tuple(range(z.ndim - 1))
    return z.mean(axis=axes), z.std(axis=axes)


@keras.saving.register_keras_serializable(package="tfp_flows_tests")
class ActNormFlow(Flow):
    """Data -> ActNorm -> affine coupling -> noise (the order of a Glow step)."""

    def __init__(self, event_shape, **kwargs):
        super().__init__(event_shape, **kwargs)
        self.actnorm_params = nets.ActNormParams(self.event_shape[-1],
                                                 dtype=self.dtype_policy, name="actnorm")
        size = bijectors.AffineCoupling.conditioner_output_size(self.event_shape, "half", 0)
        self.conditioner = nets.MLP([8], size, dtype=self.dtype_policy, name="conditioner")
        # Listed data -> noise: the ActNorm is the first step data meets.
        self._set_bijectors([
            bijectors.ActNorm(self.actnorm_params, self.event_shape, name="actnorm"),
            bijectors.AffineCoupling(self.conditioner, self.event_shape, mask="half",
                                     parity=0, name="coupling"),
        ])


def _flag(params):
    return float(keras.ops.convert_to_numpy(params.initialized))


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


# -- the bijector and its explicit initialisation -------------------------------------------


@pytest.mark.parametrize("shape", [[256, 4], [16, 4, 4, 3]], ids=["vector", "image"])
def test_initialised_output_has_zero_mean_unit_variance(shape):
    x = _data(shape)
    actnorm = _actnorm(shape[1:])
    assert _flag(actnorm.params_layer) == 0.0
    assert bijectors.initialize_actnorm(actnorm, x) == 1
    assert _flag(actnorm.params_layer) == 1.0
    z = actnorm.inverse(tf.constant(x)).numpy()
    mean, std = _channel_stats(z)
    np.testing.assert_allclose(mean, 0.0, atol=1e-10)
    np.testing.assert_allclose(std, 1.0, atol=1e-5)
    np.testing.assert_allclose(_numpy(actnorm.params_layer.bias),
                               -x.reshape(-1, shape[-1]).mean(0), rtol=1e-10)
    # log-det counted once per pixel, and the forward map undoes the inverse.
    pixels = int(np.prod(shape[1:-1]))
    ildj = actnorm.inverse_log_det_jacobian(tf.constant(x), event_ndims=len(shape) - 1)
    np.testing.assert_allclose(
        ildj.numpy(), pixels * _numpy(actnorm.params_layer.log_scale).sum(), rtol=1e-12)
    np.testing.assert_allclose(actnorm.forward(tf.constant(z)).numpy(), x, rtol=1e-10)


def test_log_det_uses_the_parameters_initialised_in_the_same_call():
    x = tf.constant(_data([64, 4]))
    params = nets.ActNormParams(4, dtype="float64")
    actnorm = bijectors.ActNorm(params, [4])

    @tf.function(jit_compile=True)
    def training_step(x):
        # `training=True` reaches the layer through Keras' call context in `fit`; here
        # the call is made directly.
        log_scale, _ = params(x, training=True)
        return actnorm.inverse_log_det_jacobian(x, event_ndims=1), log_scale

    ildj, log_scale = training_step(x)
    assert _flag(params) == 1.0
    np.testing.assert_allclose(ildj.numpy(), np.sum(-np.log(x.numpy().std(0) + 1e-6)),
                               rtol=1e-9)
    np.testing.assert_allclose(log_scale.numpy(), _numpy(params.log_scale))


def test_chain_initialises_each_actnorm_on_the_activations_that_reach_it():
    keras.utils.set_random_seed(0)
    x = _data([128, 4])
    first, last = _actnorm([4], name="first"), _actnorm([4], name="last")
    size = bijectors.AffineCoupling.conditioner_output_size([4], "half", 0)
    coupling = bijectors.AffineCoupling(
        nets.MLP([8], size, activation="tanh", zero_init=False, dtype="float64"), [4])
    # A chain's inverse applies its first member first: data -> first -> coupling -> last.
    chain = bijectors.FlowChain([first, coupling, bijectors.reverse_permutation(4), last])
    assert bijectors.initialize_actnorm(chain, x) == 2
    np.testing.assert_allclose(_numpy(first.params_layer.bias), -x.mean(0), rtol=1e-10)
    mean, std = _channel_stats(chain.inverse(tf.constant(x)).numpy())
    np.testing.assert_allclose(mean, 0.0, atol=1e-10)
    np.testing.assert_allclose(std, 1.0, atol=1e-5)


def test_explicit_initialisation_of_a_flow():
    x = _data([200, 4], "float32")
    flow = ActNormFlow([4])
    assert bijectors.initialize_actnorm(flow, x) == 1
    np.testing.assert_allclose(_numpy(flow.actnorm_params.bias), -x.mean(0), rtol=1e-5)
    # A fresh coupling is the identity, so the flow's noise is the ActNorm's output.
    mean, std = _channel_stats(flow.inverse(x).numpy())
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(std, 1.0, atol=1e-4)


def test_initialize_actnorm_without_actnorm_raises():
    with pytest.raises(ValueError, match=r"contains no ActNorm"):
        bijectors.initialize_actnorm(bijectors.reverse_permutation(4), _data([8, 4]))


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"ActNormParams layer, got LogScale"):
        bijectors.ActNorm(nets.LogScale([4]), [4])
    with pytest.raises(ValueError, match=r"3 channels .* num_channels=4"):
        bijectors.ActNorm(nets.ActNormParams(4), [5, 5, 3])
    with pytest.raises(ValueError, match=r"num_channels must be a positive int, got 0"):
        nets.ActNormParams(0)
    with pytest.raises(ValueError, match=r"expects 4 channels .*got shape \[2, 3\]"):
        nets.ActNormParams(4).initialize_from(np.zeros([2, 3], "float32"))


def test_params_config_round_trip():
    layer = nets.ActNormParams(3, epsilon=1e-4, name="an")
    clone = nets.ActNormParams.from_config(layer.get_config())
    assert (clone.num_channels, clone.epsilon, clone.name) == (3, 1e-4, "an")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, nets.ActNormParams)
    assert [w.name for w in restored.weights] == ["log_scale", "bias", "initialized"]
    assert len(restored.trainable_weights) == 2


# -- when the data-dependent initialisation happens inside a model ---------------------------


def test_construction_and_inference_do_not_initialise():
    x = _data([32, 4], "float32")
    flow = ActNormFlow([4])  # its constructor runs log_prob on zeros
    flow.log_prob(x)
    flow.inverse(x)
    flow.sample(4, seed=0)
    flow(x)  # a Keras call without training=True
    flow.compile(optimizer="adam")
    flow.evaluate(x, batch_size=16, verbose=0)
    assert _flag(flow.actnorm_params) == 0.0
    np.testing.assert_array_equal(_numpy(flow.actnorm_params.bias), 0.0)
    assert len(flow.trainable_weights) == 2 + 4  # log_scale, bias + MLP (2 dense layers)
    assert len(flow.non_trainable_weights) == 1


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fit_initialises_on_the_first_batch_only(jit_compile):
    first = _data([32, 4], "float32", seed=1)
    second = _data([32, 4], "float32", seed=2, mean=-MEAN, std=3 * STD)
    flow = ActNormFlow([4])
    # A zero learning rate keeps the parameters where the initialisation put them.
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), jit_compile=jit_compile)
    assert flow.jit_compile == jit_compile  # Keras turns XLA off for models it cannot compile
    flags = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            flags.append((_flag(flow.actnorm_params), _numpy(flow.actnorm_params.bias)))

    history = flow.fit(np.concatenate([first, second]), batch_size=32, epochs=1,
                       shuffle=False, verbose=0, callbacks=[Record()])
    assert np.isfinite(history.history["loss"]).all()
    assert [flag for flag, _ in flags] == [1.0, 1.0]
    np.testing.assert_allclose(flags[0][1], -first.mean(0), rtol=1e-5)
    # The second batch, with other statistics, did not re-initialise.
    np.testing.assert_allclose(flags[1][1], -first.mean(0), rtol=1e-5)
    np.testing.assert_allclose(_numpy(flow.actnorm_params.log_scale),
                               -np.log(first.std(0) + 1e-6), rtol=1e-4)


def test_fit_trains_the_initialised_parameters():
    x = _data([64, 4], "float32")
    flow = ActNormFlow([4])
    flow.compile(optimizer=keras.optimizers.Adam(0.01))
    flow.fit(x, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert _flag(flow.actnorm_params) == 1.0
    # Initialised from the first batch, then moved by the optimizer.
    assert not np.allclose(_numpy(flow.actnorm_params.bias), -x[:32].mean(0), rtol=1e-6)
    np.testing.assert_allclose(_numpy(flow.actnorm_params.bias), -x[:32].mean(0), atol=0.1)


# -- the initialisation state survives saving ------------------------------------------------


def _initialised_flow():
    keras.utils.set_random_seed(0)
    x = _data([64, 4], "float32")
    flow = ActNormFlow([4])
    bijectors.initialize_actnorm(flow, x)
    # Values an initialisation from zeros (the build call of a reloaded model) cannot give.
    flow.actnorm_params.log_scale.assign(_numpy(flow.actnorm_params.log_scale) + 0.25)
    return flow, x


def test_keras_file_round_trip_keeps_the_init_state(tmp_path):
    flow, x = _initialised_flow()
    path = str(tmp_path / "flow.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ActNormFlow)
    assert _flag(loaded.actnorm_params) == 1.0
    for name in ("log_scale", "bias"):
        np.testing.assert_array_equal(_numpy(getattr(loaded.actnorm_params, name)),
                                      _numpy(getattr(flow.actnorm_params, name)))
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), flow.log_prob(x).numpy(),
                               rtol=1e-6)
    # Training the reloaded model does not initialise again.
    before = _numpy(loaded.actnorm_params.bias)
    loaded.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    loaded.fit(x + 5.0, batch_size=32, epochs=1, verbose=0)
    np.testing.assert_array_equal(_numpy(loaded.actnorm_params.bias), before)


def test_checkpoint_round_trip_keeps_the_init_state(tmp_path):
    flow, x = _initialised_flow()
    path = str(tmp_path / "flow.weights.h5")
    flow.save_weights(path)
    fresh = ActNormFlow([4])
    assert _flag(fresh.actnorm_params) == 0.0
    fresh.load_weights(path)
    assert _flag(fresh.actnorm_params) == 1.0
    np.testing.assert_array_equal(_numpy(fresh.actnorm_params.log_scale),
                                  _numpy(flow.actnorm_params.log_scale))


def test_saved_model_export_keeps_the_init_state(tmp_path):
    flow, x = _initialised_flow()
    path = flow.export(str(tmp_path / "export"))
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.log_prob(tf.constant(x)).numpy(),
                               flow.log_prob(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(reloaded.inverse(tf.constant(x)).numpy(),
                               flow.inverse(x).numpy(), rtol=1e-6)
    flags = [v for v in reloaded.non_trainable_variables if "initialized" in v.name]
    assert [float(v.numpy()) for v in flags] == [1.0]


def test_mixed_precision_keeps_statistics_and_log_det_in_the_data_dtype():
    x = _data([64, 4, 4, 3], "float32")
    params = nets.ActNormParams(3, dtype="mixed_float16")
    actnorm = bijectors.ActNorm(params, [4, 4, 3])

    @tf.function
    def training_step(x):
        params(x, training=True)
        return actnorm.inverse(x), actnorm.inverse_log_det_jacobian(x, event_ndims=3)

    z, ildj = training_step(tf.constant(x))
    assert z.dtype == ildj.dtype == tf.float32
    mean, std = _channel_stats(z.numpy())
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(std, 1.0, atol=1e-4)
    # Statistics of float16-cast inputs would be off by ~1e-3.
    np.testing.assert_allclose(_numpy(params.log_scale),
                               -np.log(x.astype("float64").reshape(-1, 3).std(0)), atol=2e-5)


def test_per_element_parameters_normalise_every_element_and_count_each_once():
    x = _data([64, 4, 4, 2]) * np.linspace(0.5, 3.0, 32).reshape(1, 4, 4, 2)
    params = nets.ActNormParams(2, spatial_shape=[4, 4], dtype="float64")
    actnorm = bijectors.ActNorm(params, [4, 4, 2])
    assert bijectors.initialize_actnorm(actnorm, x) == 1
    assert _numpy(params.log_scale).shape == (4, 4, 2)
    z = actnorm.inverse(tf.constant(x)).numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
    ildj = actnorm.inverse_log_det_jacobian(tf.constant(x), event_ndims=3)
    np.testing.assert_allclose(ildj.numpy(), _numpy(params.log_scale).sum(), rtol=1e-12)
    # Against autodiff on the flattened map.
    flat = tf.constant(x[:2].reshape(2, -1))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        out = tf.reshape(actnorm.inverse(tf.reshape(flat, [2, 4, 4, 2])), [2, -1])
    jac = tape.batch_jacobian(out, flat)
    np.testing.assert_allclose(np.linalg.slogdet(jac.numpy())[1], ildj.numpy()[:2], rtol=1e-10)
    config = params.get_config()
    assert nets.ActNormParams.from_config(config).spatial_shape == [4, 4]


def test_per_element_parameters_must_match_the_event():
    params = nets.ActNormParams(2, spatial_shape=[4, 4])
    with pytest.raises(ValueError, match=r"spatial_shape \[4, 4\].*\[2, 2\]"):
        bijectors.ActNorm(params, [2, 2, 2])
    with pytest.raises(TypeError, match="spatial_shape"):
        nets.ActNormParams(2, spatial_shape=4)
    with pytest.raises(ValueError, match="spatial_shape"):
        nets.ActNormParams(2, spatial_shape=[4, 0])


def _graph_op_types(fn, *args):
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


def test_a_function_traced_after_initialisation_has_no_initialisation_branch():
    params = nets.ActNormParams(4, dtype="float32")
    x = tf.constant(_data([8, 4], "float32"))
    before = _graph_op_types(lambda t: params(t, training=True), x)
    assert before & {"If", "StatelessIf"}
    params.initialize_from(x)
    assert params.initialized_now()
    after = _graph_op_types(lambda t: params(t, training=True), x)
    assert not after & {"If", "StatelessIf"}


def test_fit_initialises_from_the_training_rows_before_its_step():
    first = _data([32, 4], "float32", seed=1)
    outliers = _data([32, 4], "float32", seed=2, mean=100 + MEAN)
    x = np.concatenate([first, outliers])
    for shuffle in (False, True):
        flow = ActNormFlow([4])
        flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
        # validation_split keeps the last half (the outliers) out of training: the batch
        # the ActNorm initialises from is training rows, in order or drawn at random.
        flow.fit(x, batch_size=16, epochs=1, shuffle=shuffle, validation_split=0.5,
                 verbose=0)
        bias = _numpy(flow.actnorm_params.bias)
        if not shuffle:
            np.testing.assert_allclose(bias, -first[:16].mean(0), rtol=1e-5)
        assert np.all(np.abs(bias + MEAN) < 3 * STD)


def test_fit_on_a_dataset_initialises_from_its_first_batch():
    first = _data([16, 4], "float32", seed=1)
    second = _data([16, 4], "float32", seed=2, mean=-MEAN)
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate([first, second])).batch(16)
    flow = ActNormFlow([4])
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    flow.fit(dataset, epochs=1, verbose=0)
    np.testing.assert_allclose(_numpy(flow.actnorm_params.bias), -first.mean(0), rtol=1e-5)


def test_train_on_batch_initialises_fresh_weights_loaded_after_training():
    # A step traced with the ActNorm initialised has no initialisation branch: loading a
    # fresh flow's weights afterwards must not leave the next steps training it from the
    # identity (and a later fit initialising it over what they learnt).
    x = _data([64, 4], "float32", seed=1)
    flow = ActNormFlow([4])
    flow(x[:2])
    fresh = flow.get_weights()
    flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    flow.fit(x, batch_size=16, epochs=1, verbose=0)
    flow.train_on_batch(x[:16])  # traced with the ActNorm initialised
    flow.set_weights(fresh)
    assert not flow.actnorm_params.initialized_now()
    flow.train_on_batch(x[16:32])
    assert flow.actnorm_params.initialized_now()
    np.testing.assert_allclose(_numpy(flow.actnorm_params.bias), -x[16:32].mean(0), rtol=1e-5)
