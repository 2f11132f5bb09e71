"""NanoFlow on sequences: the causal trunk, the grouped autoregressive step, NanoWaveFlow
(layout, exact weight counts, test kit, training, serialization), the generated signals and
the example script."""

import os
import runpy
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import load_exported, perturb

import tfp_flows as tff
from tfp_flows import bijectors, nets
from tfp_flows.testing import check_bijector, discover_trainable_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
SIGNALS = RNG.normal(size=[3, 16])


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def row_changes(layer, x, row):
    """Per output row, the largest change of `layer(x)` when input row `row` changes."""
    changed = x.copy()
    changed[:, row] += RNG.normal(size=changed[:, row].shape)
    return np.abs(np.asarray(layer(changed)) - np.asarray(layer(x))).max(axis=(0, 2, 3))


def conditioner(trunk, outputs, embedding=None):
    return nets.SharedTrunkConditioner(trunk, nets.StepProjection(outputs, zero_init=False),
                                       embedding=embedding)


# -- the causal trunk --------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", [None, ["concat", "bias", "gate"]], ids=["plain", "all"])
def test_trunk_row_i_sees_only_rows_above_it(embedding):
    channels = {"concat_channels": 2, "bias_channels": 3} if embedding else {}
    step = conditioner(nets.CausalConvTrunk(4, num_blocks=2, kernel_size=3, **channels), 3,
                       embedding)
    x = RNG.normal(size=[2, 5, 6, 2]).astype("float32")
    step(x)
    if embedding:
        step.log_gate.assign(RNG.normal(size=step.log_gate.shape))
    for row in range(5):
        changes = row_changes(step, x, row)
        assert np.all(changes[:row + 1] == 0.0), (row, changes)
        # Two blocks of height 3 and the shift reach 5 rows down: every later row here.
        assert np.all(changes[row + 1:] > 0.0), (row, changes)


def test_trunk_reach_is_the_shift_plus_the_blocks_kernels():
    trunk = nets.CausalConvTrunk(4, num_blocks=1, kernel_size=2)
    x = RNG.normal(size=[2, 6, 3, 1]).astype("float32")
    # Row 1 reaches rows 2 (shift) and 3 (a kernel of height 2), not 4 and 5.
    assert (row_changes(trunk, x, 1) > 0).tolist() == [False, False, True, True, False, False]


def test_trunk_weight_count_and_config_round_trip():
    trunk = nets.CausalConvTrunk(4, num_blocks=2, kernel_size=3, concat_channels=2,
                                 bias_channels=3, name="shared")
    trunk(np.zeros([1, 4, 4, 1], "float32"), embedding=np.zeros([4, 4, 2], "float32"),
          bias_embedding=np.zeros([3], "float32"))
    assert trunk.num_gates == 4 + 2 * 8
    assert len(trunk.trainable_weights) == 2 + 4 * 2 + 2
    assert sum(int(np.prod(w.shape)) for w in trunk.trainable_weights) == trunk_parameters(
        4, 2, 3, concat=2, bias=3)
    rebuilt = nets.CausalConvTrunk.from_config(trunk.get_config())
    assert rebuilt.get_config() == trunk.get_config()


# -- the grouped autoregressive step -----------------------------------------------------------


def grouped(shape, transformer="affine", dtype="float32"):
    size = bijectors.GroupedAutoregressive.conditioner_output_size(shape, transformer)
    layer = nets.SharedTrunkConditioner(nets.CausalConvTrunk(4, num_blocks=1, dtype=dtype),
                                        nets.StepProjection(size, zero_init=False, dtype=dtype),
                                        dtype=dtype)
    return bijectors.GroupedAutoregressive(layer, shape, transformer)


def test_density_is_one_pass_and_sampling_is_one_pass_per_row():
    bijector = grouped([5, 3, 2])
    conditioner = bijector.conditioner
    x = tf.constant(RNG.normal(size=[4, 5, 3, 2]).astype("float32"))
    bijector.inverse(x)  # builds the conditioner
    trunk_passes, step_inputs = [], []
    apply, inputs = conditioner.trunk._apply, conditioner.step_inputs
    conditioner.trunk._apply = lambda *args: trunk_passes.append(1) or apply(*args)
    conditioner.step_inputs = lambda: step_inputs.append(1) or inputs()
    u = bijector.inverse(tf.identity(x))
    assert (len(trunk_passes), len(step_inputs)) == (1, 1)
    trunk_passes.clear()
    step_inputs.clear()
    x_again = bijector.forward(tf.identity(u))  # eager: the loop's 5 passes run in Python
    # One trunk pass per row; the step's embedding terms once per call, not per pass.
    assert (len(trunk_passes), len(step_inputs)) == (5, 1)
    np.testing.assert_allclose(x_again, x, atol=1e-5)
    assert not np.allclose(u, x, atol=1e-2)


def test_jacobian_is_block_triangular_over_rows_with_diagonal_blocks():
    bijector = grouped([3, 2, 2], dtype="float64")
    x = tf.constant(RNG.normal(size=[4, 3, 2, 2]))
    row = np.repeat(np.arange(3), 4)  # the row of each flattened entry
    for method in (bijector.inverse, bijector.forward):
        # Backward passes through the while_loop one by one: pfor cannot vectorise it.
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = tf.reshape(method(tf.identity(x)), [4, 12])
        jacobian = tape.batch_jacobian(y, x, experimental_use_pfor=False).numpy()
        jacobian = np.abs(jacobian.reshape(4, 12, 12)).max(axis=0)
        later = row[None, :] > row[:, None]
        same_row_off_diagonal = (row[None, :] == row[:, None]) & ~np.eye(12, dtype=bool)
        assert np.all(jacobian[later] == 0.0) and np.all(jacobian[same_row_off_diagonal] == 0)
        assert np.any(jacobian[row[None, :] < row[:, None]] > 0.0)
        assert np.all(np.diag(jacobian) > 0.0)


@pytest.mark.parametrize("transformer", [
    "additive", bijectors.RationalQuadraticSpline(num_bins=3, range=1.0),
    bijectors.LogisticMixtureCDF(num_components=2)],
    ids=["additive", "spline", "logistic_mixture"])
def test_any_transformer_passes_the_test_kit(transformer):
    bijector = grouped([3, 2, 1], transformer, dtype="float64")
    check_bijector(bijector, RNG.normal(size=[3, 3, 2, 1]), modes=("eager",))


# -- the model ---------------------------------------------------------------------------------


def conv(kernel, c_in, c_out, bias=True):
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def trunk_parameters(width, blocks, kernel, concat=None, bias=None, c_in=1):
    """Parameters of a `CausalConvTrunk`: a 1x1 input conv, per block a gated conv to 2F
    channels and a 1x1 output conv to a residual and a skip (a skip only in the last),
    an unbiased 1x1 conv of a concatenated embedding, an unbiased embedding -> biases map."""
    parameters = conv(1, c_in, width) + blocks * conv(kernel, width, 2 * width)
    parameters += (blocks - 1) * conv(1, width, 2 * width) + conv(1, width, width)
    gates = width + 2 * width * blocks
    if concat:
        parameters += conv(1, concat, width, bias=False)
    if bias:
        parameters += bias * gates
    return parameters


def sequence_flow(sharing="nanoflow", embedding=None, num_steps=3, **kwargs):
    kwargs = {"num_groups": 4, "hidden_channels": 4, "num_blocks": 2, "kernel_size": 3,
              "embedding_channels": 2, **kwargs}
    return tff.models.NanoWaveFlow([16], num_steps=num_steps, sharing=sharing,
                                   embedding=embedding, **kwargs)


VARIANTS = [("none", None), ("naive", None), ("decomposed", None), ("nanoflow", "concat"),
            ("nanoflow", None), ("nanoflow", ["concat", "bias", "gate"])]
VARIANT_IDS = ["none", "naive", "decomposed", "concat", "default-bias+gate", "all"]


@pytest.mark.parametrize("sharing, embedding", VARIANTS, ids=VARIANT_IDS)
def test_weight_count_formula_identity_and_gradients(sharing, embedding):
    num_steps, width, blocks = 3, 4, 2
    flow = sequence_flow(sharing, embedding, num_steps)
    kinds = (nets.embedding_kinds(embedding or ["bias", "gate"]) if sharing == "nanoflow"
             else ())
    assert flow.embedding_kinds == kinds
    trunk = trunk_parameters(width, blocks, 3, concat=2 if "concat" in kinds else None,
                             bias=2 if "bias" in kinds else None)
    trunk_variables = 2 + 4 * blocks + ("concat" in kinds) + ("bias" in kinds)
    projection = conv(1, width, 2)  # a shift and a log-scale per sample
    own = {"concat": 4 * 4 * 2, "bias": 2, "gate": width + 2 * width * blocks}
    embeddings = sum(own[kind] for kind in kinds)
    trunks, projections = {"none": (3, 3), "naive": (1, 1)}.get(sharing, (1, num_steps))
    assert len(flow.trunks) == trunks and len(flow.projections) == projections
    assert sum(int(np.prod(w.shape)) for w in flow.trainable_weights) == (
        trunks * trunk + projections * projection + num_steps * embeddings)
    assert len(flow.trainable_weights) == (trunks * trunk_variables + 2 * projections
                                           + num_steps * len(kinds))
    if sharing != "none":
        assert all(c.trunk is flow.trunks[0] for c in flow.conditioners)
    reached = discover_trainable_variables(flow.bijector)
    assert {id(v) for v in reached} == {id(v) for v in flow.trainable_weights}
    # A fresh flow is the identity (zero projections): the standard Normal density.
    expected = np.sum(-0.5 * SIGNALS ** 2 - 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(flow(SIGNALS.astype("float32")), expected, rtol=1e-5)
    perturb(flow, seed=1, scale=0.2, trainable_only=True)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow(tf.constant(SIGNALS, tf.float32)))
    grads = tape.gradient(loss, flow.trainable_weights)
    missing = [w.path for w, g in zip(flow.trainable_weights, grads, strict=True)
               if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing


def test_layout_follows_waveflow():
    flow = sequence_flow(num_steps=3)
    assert [b.name for b in flow.bijector.bijectors] == [
        "invert_squeeze_to_rows", "step_0_autoregressive", "step_1_reverse_rows",
        "step_1_autoregressive", "step_2_reverse_rows", "step_2_autoregressive",
        "squeeze_to_rows"]
    # Column j holds the adjacent samples 4j .. 4j + 3, from the top row down.
    image = flow.bijector.bijectors[0].inverse(np.arange(16.0, dtype="float32")[None])
    np.testing.assert_array_equal(image[0, :, :, 0], np.arange(16).reshape(4, 4).T)
    reverse = flow.bijector.bijectors[2]
    np.testing.assert_array_equal(reverse.inverse(image)[0, :, :, 0], image[0, ::-1, :, 0])
    assert flow.bijector.inverse(SIGNALS.astype("float32")).shape == (3, 16)


@pytest.mark.parametrize("num_groups", [2, 8], ids=["coupling", "fully_autoregressive"])
def test_two_groups_make_a_coupling_and_one_sample_per_group_an_autoregressive_flow(
        num_groups):
    flow = tff.models.NanoWaveFlow([8], num_groups=num_groups, num_steps=1,
                                   hidden_channels=4, num_blocks=3, kernel_size=3)
    perturb(flow, seed=4, scale=0.3, trainable_only=True)
    x = tf.constant(RNG.normal(size=[2, 8]).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        u = flow.bijector.inverse(x)
    jacobian = np.abs(tape.batch_jacobian(u, x).numpy()).max(axis=0)
    # Sample t is in row t % h: every sample of the rows before its own conditions it
    # (three blocks of height 3 and the shift reach 7 rows up, and +-7 columns across).
    rows = np.arange(8) % num_groups
    before = rows[None, :] < rows[:, None]
    assert np.all(jacobian[rows[None, :] > rows[:, None]] == 0.0)
    assert np.all(jacobian[before] > 0.0)
    np.testing.assert_allclose(flow.bijector.forward(tf.identity(u)), x, atol=1e-5)


def test_the_flow_passes_the_test_kit():
    # Graph and XLA modes of the step run in the contract test (test_bijectors_contract.py).
    flow = sequence_flow(num_steps=2, num_blocks=1, dtype="float64")
    perturb(flow, seed=2, scale=0.3, trainable_only=True)
    report = check_bijector(flow.bijector, SIGNALS, modes=("eager",))
    assert "autodiff log-det" in report  # 16 samples: the Jacobian is checked


def test_fit_lowers_the_nll_and_samples_are_finite():
    x = tff.datasets.damped_sinusoids(320, length=32, seed=0)
    x_test = tff.datasets.damped_sinusoids(64, length=32, seed=1)
    flow = tff.models.NanoWaveFlow([32], num_groups=4, num_steps=2, hidden_channels=8,
                                   num_blocks=1)
    before = -float(np.mean(flow.log_prob(x_test)))
    flow.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = flow.fit(x, batch_size=32, epochs=3, verbose=0)
    after = -float(np.mean(flow.log_prob(x_test)))
    losses = history.history["loss"]
    assert losses[-1] < losses[0] and after < before - 10.0, (losses, before, after)
    samples = flow.sample(8, seed=0).numpy()
    assert samples.shape == (8, 32) and np.all(np.isfinite(samples))


def test_keras_file_round_trip_keeps_the_sharing_and_the_density(tmp_path):
    flow = sequence_flow(embedding=["concat", "gate"], num_steps=2,
                         transformer=bijectors.RationalQuadraticSpline(num_bins=3, range=2.0))
    perturb(flow, seed=3, scale=0.2, trainable_only=True)
    path = str(tmp_path / "nanowaveflow.keras")
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is tff.models.NanoWaveFlow
    assert loaded.get_config() == flow.get_config()
    assert len(loaded.trainable_weights) == len(flow.trainable_weights)
    assert [c.trunk for c in loaded.conditioners] == [loaded.trunks[0]] * 2
    x = SIGNALS.astype("float32")
    np.testing.assert_allclose(loaded(x), flow(x), rtol=1e-5)


def test_export_loads_without_tfp_flows(tmp_path, python_without_tfp_flows):
    flow = perturb(sequence_flow(num_steps=2), seed=4, scale=0.2, trainable_only=True)
    x = SIGNALS.astype("float32")
    results = load_exported(flow.export(str(tmp_path / "nanowaveflow")), x,
                            python_without_tfp_flows)
    assert results["imported"] == []
    np.testing.assert_allclose(results["log_prob"], flow.log_prob(x), rtol=1e-5, atol=1e-4)
    expected = flow.sample(3, temperature=0.7, seed=5).numpy()
    np.testing.assert_allclose(results["sample"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(event_shape=[18]), ValueError, r"event_shape \[T\] with T divisible by "
                                         r"num_groups=4, got \[18\]"),
    (dict(event_shape=[4, 4, 1]), ValueError, r"event_shape \[T\]"),
    (dict(num_groups=1), ValueError, r"num_groups must be an int >= 2, got 1"),
    (dict(num_groups=4.0), TypeError, r"num_groups must be an int >= 2, got 4.0"),
    (dict(num_steps=0), ValueError, r"num_steps must be a positive int, got 0"),
    (dict(kernel_size=0), ValueError, r"kernel_size must be a positive int, got 0"),
    (dict(sharing="full"), ValueError, r"sharing must be one of"),
    (dict(sharing="none", embedding="bias"), ValueError,
     r"embedding applies to sharing='nanoflow' only"),
    (dict(embedding="film"), ValueError, r"embedding must be one of"),
    (dict(embedding_channels=0), ValueError, r"embedding_channels"),
    (dict(transformer="quadratic"), ValueError, r"transformer must be one of"),
    (dict(context_size=2), ValueError, r"no conditional form"),
])
def test_invalid_arguments(kwargs, error, match):
    event_shape = kwargs.pop("event_shape", [16])
    with pytest.raises(error, match=match):
        tff.models.NanoWaveFlow(event_shape, **{"num_groups": 4, "num_steps": 1,
                                                "hidden_channels": 4, **kwargs})


def test_invalid_layer_and_bijector_arguments():
    with pytest.raises(ValueError, match=r"hidden_channels must be a positive int, got 0"):
        nets.CausalConvTrunk(0)
    with pytest.raises(TypeError, match=r"kernel_size must be a positive int, got '3'"):
        nets.CausalConvTrunk(4, kernel_size="3")
    with pytest.raises(ValueError, match=r"CausalConvTrunk expects images .* got shape "
                                         r"\[2, 3\]"):
        nets.CausalConvTrunk(4)(np.zeros([2, 3], "float32"))
    with pytest.raises(TypeError, match=r"conditioner must be a keras.layers.Layer, got "
                                        r"'net' of type str"):
        bijectors.GroupedAutoregressive("net", [4, 2, 1])
    with pytest.raises(ValueError, match=r"H >= 2 groups \(rows\), got \[1, 3, 1\]"):
        bijectors.GroupedAutoregressive(nets.CausalConvTrunk(4), [1, 3, 1])
    with pytest.raises(ValueError, match=r"event_shape must have rank 3"):
        bijectors.GroupedAutoregressive(nets.CausalConvTrunk(4), [8])
    wrong = bijectors.GroupedAutoregressive(conditioner(nets.CausalConvTrunk(4), 3),
                                            [4, 2, 2])
    with pytest.raises(ValueError, match=r"returned 3 values on its last axis, expected 4 "
                                         r"\(2 parameters of Affine x 2 channels"):
        wrong.inverse(np.zeros([1, 4, 2, 2], "float32"))


# -- the generated signals ---------------------------------------------------------------------


def test_damped_sinusoids_shape_scale_and_determinism():
    x = tff.datasets.damped_sinusoids(200, length=128, seed=3)
    assert x.shape == (200, 128) and x.dtype == np.float32
    np.testing.assert_array_equal(x, tff.datasets.damped_sinusoids(200, length=128, seed=3))
    assert not np.array_equal(x, tff.datasets.damped_sinusoids(200, length=128, seed=4))
    clean = tff.datasets.damped_sinusoids(200, length=128, noise=0.0, seed=3)
    assert np.abs(clean).max() <= 1.0
    # The noise is white with the requested standard deviation.
    assert abs(float(np.std(x - clean)) - 0.01) < 0.001


def test_damped_sinusoids_oscillate_between_100_and_1500_hz_and_decay():
    rate, length = 8000, 1024
    clean = tff.datasets.damped_sinusoids(100, length=length, sample_rate=rate, noise=0.0,
                                          seed=0).astype("float64")
    spectrum = np.abs(np.fft.rfft(clean, axis=1))
    peak = np.fft.rfftfreq(length, 1 / rate)[spectrum.argmax(axis=1)]
    assert np.all((peak >= 100 - 10) & (peak <= 1500 + 10)), peak
    first, last = (np.abs(clean[:, :128]).max(axis=1), np.abs(clean[:, -128:]).max(axis=1))
    assert np.all(last < first)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_examples=0), ValueError, r"num_examples must be a positive int, got 0"),
    (dict(length=2.5), TypeError, r"length must be a positive int, got 2.5"),
    (dict(sample_rate=2000), ValueError, r"sample_rate must be a finite number > 3000, "
                                         r"got 2000"),
    (dict(noise=-0.1), ValueError, r"noise must be a finite number >= 0, got -0.1"),
    (dict(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
])
def test_damped_sinusoids_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tff.datasets.damped_sinusoids(**{"num_examples": 2, **kwargs})


# -- the example -------------------------------------------------------------------------------


def test_example_script_runs(tmp_path, capsys, monkeypatch):
    # Run as `python examples/nanoflow_signals.py ...` would, in this process.
    script = os.path.join(ROOT, "examples", "nanoflow_signals.py")
    monkeypatch.setattr(sys, "argv", [script, "--epochs", "1", "--num-train", "128",
                                      "--num-test", "64",
                                      "--num-steps", "1", "--hidden-channels", "4",
                                      "--out", str(tmp_path)])
    runpy.run_path(script, run_name="__main__")
    printed = capsys.readouterr().out
    assert "nats per signal" in printed and "nats per sample" in printed
    assert "samples finite: True" in printed
    assert os.listdir(tmp_path) == ["nanoflow_signals.png"]
