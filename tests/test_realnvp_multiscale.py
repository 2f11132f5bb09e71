"""Multi-scale RealNVP (arXiv:1605.08803, section 3.6) and RealNVP's data-space steps."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_flows as tff
from tfp_flows.testing import check_bijector, discover_trainable_variables


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def multiscale(event_shape=(4, 4, 1), num_scales=2, **kwargs):
    options = dict(hidden_channels=4, num_blocks=1)
    options.update(kwargs)
    return tff.models.RealNVP(list(event_shape), num_scales=num_scales, **options)


def perturb(flow, seed=0, scale=0.1, layers=None):
    """Moves the weights away from the zero-initialised identity."""
    rng = np.random.default_rng(seed)
    weights = flow.trainable_weights if layers is None else [
        w for layer in layers for w in layer.trainable_weights]
    for weight in weights:
        weight.assign(weight.numpy() + rng.normal(0.0, scale, size=weight.shape))
    return flow


def eager_log_prob(flow, x):
    """`log_prob` without tracing a graph: faster for a single call on a small flow."""
    return flow.distribution.log_prob(tf.constant(x)).numpy()


def normal(shape, seed=0, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def standard_normal_log_prob(x):
    flat = x.reshape(x.shape[0], -1).astype("float64")
    return np.sum(-0.5 * flat ** 2 - 0.5 * math.log(2 * math.pi), axis=-1)


def test_three_scales_keep_the_event_shape_and_start_as_the_identity():
    flow = multiscale([8, 8, 2], num_scales=3)
    x = normal([3, 8, 8, 2])
    # Fresh couplings are identities and each squeeze is undone: noise == data.
    np.testing.assert_allclose(flow.bijector.inverse(x), x, atol=1e-6)
    np.testing.assert_allclose(eager_log_prob(flow, x), standard_normal_log_prob(x), rtol=1e-5)
    # 3 + 3 couplings on each of the first two scales, 4 on the last.
    assert len(flow.conditioners) == 6 + 6 + 4
    (level_0,) = flow.bijector.bijectors
    names = [b.name for b in level_0.bijectors]
    assert names == ["level_0_checkerboard_0", "level_0_checkerboard_1",
                     "level_0_checkerboard_2", "level_0_squeeze", "level_0_channel_0",
                     "level_0_channel_1", "level_0_channel_2", "level_0_split",
                     "level_0_unsqueeze"]
    split = level_0.bijectors[7]
    assert split.keep_channels == 4  # [4, 4, 8] after the squeeze keeps 4 channels
    deeper_split = split.bijector.bijectors[7]
    assert deeper_split.keep_channels == 8  # [2, 2, 16] keeps 8; the last scale is [2, 2, 8]
    assert [b.mask for b in split.bijector.bijectors[7].bijector.bijectors] == [
        "checkerboard"] * 4


def test_factored_out_channels_bypass_the_deeper_scale():
    """Only the last scale is perturbed: it moves the kept half of the squeezed channels."""
    flow = multiscale([4, 4, 1], num_scales=2)
    perturb(flow, layers=flow.conditioners[6:])
    x = normal([2, 4, 4, 1], seed=2)
    squeeze = tff.bijectors.Squeeze([4, 4, 1])
    z, x_squeezed = squeeze.forward(flow.inverse(x)).numpy(), squeeze.forward(x).numpy()
    np.testing.assert_allclose(z[..., 2:], x_squeezed[..., 2:], atol=1e-6)
    assert np.abs(z[..., :2] - x_squeezed[..., :2]).max() > 1e-3


def test_one_scale_is_four_checkerboard_couplings_on_any_image():
    flow = multiscale([3, 5, 1], num_scales=1)
    assert len(flow.conditioners) == 4
    assert flow.log_prob(normal([2, 3, 5, 1])).shape == (2,)


def test_keras_tracks_every_conditioner():
    flow = multiscale([4, 4, 2], num_scales=2)
    expected = sum(len(c.trainable_weights) for c in flow.conditioners)
    assert len(flow.trainable_weights) == expected == 10 * 8  # 10 ConvResNets of 4 convs
    tracked = {id(w) for w in flow.trainable_weights}
    assert {id(w) for w in discover_trainable_variables(flow.bijector)} == tracked


def test_the_whole_bijector_passes_the_contract_in_float64():
    flow = perturb(multiscale([4, 4, 1], num_scales=2, dtype="float64"), seed=3)
    report = check_bijector(flow.bijector, normal([3, 4, 4, 1], seed=4, dtype="float64"),
                            modes=("eager", "function"))
    assert "autodiff log-det" in report


def test_conditional_multiscale_flow_uses_the_context():
    flow = perturb(multiscale([4, 4, 1], num_scales=2, context_size=3), seed=7)
    x = normal([2, 4, 4, 1], seed=8)
    first = flow.log_prob(x, context=np.zeros([2, 3], "float32"))
    second = flow.log_prob(x, context=np.ones([2, 3], "float32"))
    assert first.shape == (2,) and np.abs(first - second).max() > 1e-4
    assert flow.sample(2, seed=0, context=np.ones([3], "float32")).shape == (2, 4, 4, 1)


def _twin(**kwargs):
    """A perturbed multi-scale flow and one with the same weights and extra `kwargs`."""
    plain = perturb(multiscale([4, 4, 1], num_scales=2), seed=9)
    other = multiscale([4, 4, 1], num_scales=2, **kwargs)
    other.set_weights(plain.get_weights())
    return plain, other


def test_num_bins_gives_the_density_of_the_dequantized_levels():
    # log p_K(y) = log p(y / K - 1/2) - D log K  (LevelScaling, centred).
    plain, binned = _twin(num_bins=17)
    y = np.random.default_rng(10).uniform(0.0, 17.0, size=[3, 4, 4, 1]).astype("float32")
    expected = eager_log_prob(plain, y / 17.0 - 0.5) - 16 * math.log(17)
    np.testing.assert_allclose(eager_log_prob(binned, y), expected, rtol=1e-5)


def test_logit_alpha_adds_the_logit_transform_log_det():
    # With x = y / K, s = alpha + (1 - 2 alpha) x and z = logit(s):
    # log p(y) = log p_flow(z) + sum(log(1 - 2 alpha) - log s - log(1 - s)) - D log K.
    alpha = 0.05
    plain, logit = _twin(num_bins=17, logit_alpha=alpha)
    y = np.random.default_rng(11).uniform(0.0, 17.0, size=[3, 4, 4, 1])
    s = alpha + (1 - 2 * alpha) * y / 17.0
    z = np.log(s) - np.log1p(-s)
    log_det = np.sum(math.log(1 - 2 * alpha) - np.log(s) - np.log1p(-s), axis=(1, 2, 3))
    expected = eager_log_prob(plain, z.astype("float32")) + log_det - 16 * math.log(17)
    np.testing.assert_allclose(eager_log_prob(logit, y.astype("float32")), expected, rtol=1e-5)


def test_num_bins_on_a_single_scale_vector_flow():
    plain = perturb(tff.models.RealNVP([3], num_layers=2, hidden_units=[8]), seed=12)
    binned = tff.models.RealNVP([3], num_layers=2, hidden_units=[8], num_bins=4)
    binned.set_weights(plain.get_weights())
    y = np.random.default_rng(13).uniform(0.0, 4.0, size=[5, 3]).astype("float32")
    expected = eager_log_prob(plain, y / 4.0 - 0.5) - 3 * math.log(4)
    np.testing.assert_allclose(eager_log_prob(binned, y), expected, rtol=1e-5)


def test_keras_file_round_trip(tmp_path):
    flow = perturb(multiscale([4, 4, 2], num_scales=2, num_bins=17, logit_alpha=0.05), seed=14)
    path = str(tmp_path / "realnvp.keras")
    flow.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == flow.get_config()
    assert loaded.get_config()["num_scales"] == 2
    y = np.random.default_rng(15).uniform(0.0, 17.0, size=[3, 4, 4, 2]).astype("float32")
    np.testing.assert_allclose(loaded.log_prob(y), flow.log_prob(y), rtol=1e-5, atol=1e-4)


def test_single_scale_config_keeps_its_defaults():
    config = tff.models.RealNVP([4], num_layers=2, hidden_units=[8]).get_config()
    assert (config["num_scales"], config["num_bins"], config["logit_alpha"]) == (None,) * 3
    assert config["num_layers"] == 2


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_scales=0), ValueError, "num_scales must be a positive int, got 0"),
    (dict(num_scales=1.5), TypeError, "num_scales must be a positive int, got 1.5"),
    (dict(num_scales=True), TypeError, "num_scales must be a positive int, got True"),
    (dict(event_shape=[16]), ValueError,
     r"num_scales needs an image event_shape \[H, W, C\], got \[16\]"),
    (dict(event_shape=[6, 6, 1], num_scales=3), ValueError,
     r"num_scales=3 needs height and width divisible by 4, got event_shape \[6, 6, 1\]"),
    (dict(num_layers=4), ValueError, "num_layers does not apply with num_scales.*got num_layers=4"),
    (dict(mask="half"), ValueError, "num_scales fixes the masks.*got mask='half'"),
    (dict(permutation="reverse"), ValueError,
     "num_scales takes no permutation.*got permutation='reverse'"),
    (dict(num_bins=1), ValueError, "num_bins must be an int >= 2 or None, got 1"),
    (dict(logit_alpha=0.05), ValueError, "logit_alpha needs num_bins"),
    (dict(num_bins=17, logit_alpha=0.5), ValueError,
     r"alpha must be a number in \[0, 0.5\), got 0.5"),
])
def test_invalid_arguments(kwargs, error, match):
    options = dict(event_shape=[4, 4, 1], num_scales=2, hidden_channels=2, num_blocks=1)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        tff.models.RealNVP(**options)


def test_log_prob_and_inverse_compile_with_xla():
    flow = perturb(multiscale([4, 4, 2], num_scales=2, num_bins=17), seed=16)
    y = tf.constant(np.random.default_rng(17).uniform(0.0, 17.0, size=[2, 4, 4, 2]), tf.float32)
    log_prob = tf.function(lambda v: flow.distribution.log_prob(v), jit_compile=True)
    inverse = tf.function(lambda v: flow.bijector.inverse(v), jit_compile=True)
    np.testing.assert_allclose(log_prob(y), flow.log_prob(y), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(inverse(y), flow.inverse(y), rtol=1e-5, atol=1e-5)


def test_nice_models_discrete_data_too():
    NICE = tff.models.NICE
    flow = NICE([4, 4, 1], num_layers=2, hidden_channels=4, num_blocks=1, num_bins=17,
                logit_alpha=0.05)
    assert flow.get_config()["num_bins"] == 17 and flow.get_config()["logit_alpha"] == 0.05
    assert [type(b).__name__ for b in flow.bijector.bijectors[:2]] == [
        "LevelScaling", "LogitTransform"]
    samples = flow.sample(3, seed=0).numpy()
    assert np.all((samples >= 0.0) & (samples <= 17.0))
    clone = NICE.from_config(flow.get_config())
    assert clone.num_bins == 17 and clone.logit_alpha == 0.05
