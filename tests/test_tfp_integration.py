"""Flows as TFP citizens: variables TFP can see, names joint distributions accept, batch
axes in `log_prob`, and the examples of docs/tfp.md, executed as written."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from flow_helpers import perturb

import tfp_flows as tff
from tfp_flows.distributions import NormalAugmentation

tfd = tfp.distributions
tfb = tfp.bijectors

DOCS_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "docs", "tfp.md")
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)


def doc_examples():
    """The page's examples, name -> code, in page order."""
    with open(DOCS_PAGE, encoding="utf-8") as page:
        return dict(_EXAMPLE.findall(page.read()))


def run_examples(*names, namespace=None):
    """Runs the named examples of docs/tfp.md, in order, in one namespace (returned)."""
    examples = doc_examples()
    namespace = {"__name__": "tfp_docs_example"} if namespace is None else namespace
    for name in names:
        exec(compile(examples[name], f"docs/tfp.md:{name}", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def normal(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# One small flow per family and kind of event; Glow brings non-trainable ActNorm flags.
FLOWS = {
    "nice": lambda: tff.models.NICE([4], num_layers=2, hidden_units=[8]),
    "realnvp": lambda: tff.models.RealNVP([4], num_layers=2, hidden_units=[8]),
    "realnvp_image": lambda: tff.models.RealNVP([4, 4, 2], num_layers=2, hidden_channels=4,
                                                num_blocks=1),
    "glow": lambda: tff.models.Glow([4, 4, 2], num_levels=2, num_steps=1, hidden_channels=4),
    "maf": lambda: tff.models.MAF([4], num_layers=2, hidden_units=[8]),
    "iaf": lambda: tff.models.IAF([4], num_layers=2, hidden_units=[8]),
    "realnvp_conditional": lambda: tff.models.RealNVP([4], num_layers=2, hidden_units=[8],
                                                      context_size=3),
    "realnvp_augmented": lambda: tff.models.RealNVP(
        [4], num_layers=2, hidden_units=[8], surjection=NormalAugmentation([2], 2)),
}


def _ids(variables):
    return [id(v) for v in variables]


# -- variables TFP can see --------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOWS)
def test_distribution_lists_the_variables_behind_the_keras_weights(name):
    flow = FLOWS[name]()
    backing = [w.value for w in flow.trainable_weights]
    assert all(isinstance(v, tf.Variable) for v in backing)
    for module in (flow.distribution, flow.bijector):
        assert _ids(module.trainable_variables) == _ids(backing), name
    non_trainable = [w.value for w in flow.non_trainable_weights]
    assert _ids(flow.distribution.non_trainable_variables) == _ids(non_trainable)
    if name == "glow":
        assert non_trainable  # ActNorm's initialised flags, seen but not trained


@pytest.mark.parametrize("name", ["realnvp", "iaf", "realnvp_conditional"])
def test_gradients_reach_the_tf_variables_as_keras_sees_them(name):
    flow = perturb(FLOWS[name]())
    x = normal([8, 4])
    kwargs = {"bijector_kwargs": {"context": normal([8, 3], seed=2)}} if flow.conditional \
        else {}
    with tf.GradientTape(persistent=True) as tape:
        loss = -tf.reduce_mean(flow.distribution.log_prob(x, **kwargs))
    through_tfp = tape.gradient(loss, flow.distribution.trainable_variables)
    through_keras = tape.gradient(loss, flow.trainable_variables)
    assert len(through_tfp) == len(flow.trainable_variables)
    for tfp_grad, keras_grad in zip(through_tfp, through_keras, strict=True):
        assert tfp_grad is not None
        np.testing.assert_allclose(tfp_grad, keras_grad, rtol=1e-6)
    assert all(np.any(g.numpy() != 0) for g in through_tfp)


@pytest.mark.parametrize("name", FLOWS)
def test_trainable_variables_are_the_tf_variables_of_trainable_weights(name):
    flow = FLOWS[name]()
    variables = flow.trainable_variables
    assert all(isinstance(v, tf.Variable) for v in variables)
    assert _ids(variables) == _ids([w.value for w in flow.trainable_weights])
    assert not any(isinstance(w, tf.Variable) for w in flow.trainable_weights)  # Keras'


def test_trainable_variables_follow_keras_trainable_flags():
    flow = FLOWS["realnvp"]()
    count = len(flow.trainable_variables)
    frozen = flow.conditioners[0].trainable_weights
    flow.conditioners[0].trainable = False
    assert len(flow.trainable_variables) == len(flow.trainable_weights) == count - len(frozen)
    assert not set(_ids(w.value for w in frozen)) & set(_ids(flow.trainable_variables))


def test_keras_state_methods_still_see_keras_variables():
    flow = perturb(FLOWS["realnvp"]())
    flow.compile()
    x = normal([4, 4])
    tree = flow.get_state_tree()
    assert "conditioner_0" in tree["trainable_variables"]
    flow.set_state_tree(tree)
    log_prob, _ = flow.stateless_call([w.value for w in flow.trainable_weights],
                                      [w.value for w in flow.non_trainable_weights], x)
    np.testing.assert_allclose(log_prob, flow.log_prob(x), rtol=1e-5, atol=1e-5)


def test_keras_trains_and_saves_with_an_optimizer_built_from_trainable_variables(tmp_path):
    # Keras builds the optimizer from model.trainable_variables under tf.distribute and in
    # BackupAndRestore: the tf.Variables and the Keras variables are the same to it.
    flow = FLOWS["realnvp"]()
    flow.compile(optimizer=keras.optimizers.Adam(1e-2))
    flow.optimizer.build(flow.trainable_variables)
    x = normal([32, 4])
    before = [w.numpy() for w in flow.trainable_weights]
    flow.fit(x, batch_size=16, epochs=1, verbose=0)
    after = [w.numpy() for w in flow.trainable_weights]
    assert any(np.any(a != b) for a, b in zip(before, after, strict=True))
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    for saved, restored in zip(flow.optimizer.variables, loaded.optimizer.variables,
                               strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())


OPTIMIZERS = {
    "keras": lambda: keras.optimizers.Adam(1e-2),
    "tf_keras": lambda: tf_keras.optimizers.Adam(1e-2),
    "tf_keras_legacy": lambda: tf_keras.optimizers.legacy.Adam(1e-2),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fit_surrogate_posterior_takes_flow_trainable_variables(optimizer):
    flow = tff.models.RealNVP([2], num_layers=2, hidden_units=[8])
    target = tfd.MultivariateNormalDiag(loc=[1.0, -1.0], scale_diag=[0.5, 2.0])
    losses = tfp.vi.fit_surrogate_posterior(
        target.log_prob, surrogate_posterior=flow.distribution,
        optimizer=OPTIMIZERS[optimizer](), num_steps=100, sample_size=32,
        trainable_variables=flow.trainable_variables, seed=0)
    assert losses.shape == [100] and np.all(np.isfinite(losses))
    # Fitted: the negative ELBO (KL(q || p) here, about 3.2 for the initial identity flow)
    # fell close to its minimum, 0.
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20])
    # The variables TFP trained are those Keras evaluates and saves.
    x = normal([4, 2])
    np.testing.assert_allclose(flow.log_prob(x), flow.distribution.log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(flow.sample(4000, seed=3).numpy().mean(axis=0), [1.0, -1.0],
                               atol=0.2)


def test_minimize_without_explicit_variables_finds_them():
    flow = tff.models.RealNVP([2], num_layers=2, hidden_units=[8])
    x = normal([32, 2]) * 2.0 + 1.0
    losses = tfp.math.minimize(lambda: -tf.reduce_mean(flow.distribution.log_prob(x)),
                               num_steps=20, optimizer=keras.optimizers.Adam(5e-2))
    assert losses[-1] < losses[0]


def test_reloaded_flow_exposes_its_variables(tmp_path):
    flow = perturb(FLOWS["realnvp"]())
    flow.save(tmp_path / "flow.keras")
    loaded = keras.saving.load_model(tmp_path / "flow.keras")
    assert _ids(loaded.distribution.trainable_variables) == _ids(
        [w.value for w in loaded.trainable_weights])
    x = normal([4, 4])
    np.testing.assert_allclose(loaded.distribution.log_prob(x), flow.log_prob(x), rtol=1e-5)


def test_expose_variables_rejects_what_is_not_a_variable():
    flow = FLOWS["realnvp"]()
    with pytest.raises(TypeError, match=r"expose_variables takes created Keras variables"):
        flow.bijector.expose_variables([np.zeros(2)])


# -- names ------------------------------------------------------------------------------------


def test_distribution_has_no_explicit_name():
    flow = FLOWS["realnvp"]()
    assert flow.distribution.parameters["name"] is None
    augmented = FLOWS["realnvp_augmented"]()
    joint = tfd.JointDistributionSequential(
        [augmented.distribution, lambda y: tfd.Independent(tfd.Normal(y, 1.0), 1)])
    assert joint.resolve_graph() == (("y", ()), ("x", ("y",)))


def test_two_flows_in_one_joint_distribution():
    first, second = perturb(FLOWS["realnvp"](), seed=1), perturb(FLOWS["maf"](), seed=2)

    @tfd.JointDistributionCoroutine
    def model():
        yield tfd.JointDistributionCoroutine.Root(first.distribution)
        yield tfd.JointDistributionCoroutine.Root(second.distribution)

    a, b = model.sample(3, seed=0)
    np.testing.assert_allclose(model.log_prob([a, b]), first.log_prob(a) + second.log_prob(b),
                               rtol=1e-5, atol=1e-5)


def test_bijector_in_a_transformed_transition_kernel():
    flow = perturb(FLOWS["realnvp"](), scale=0.1)
    target = tfd.MultivariateNormalDiag(loc=[1.0, -1.0, 0.5, 0.0], scale_diag=[1.0, 2.0, 0.5, 1.0])
    kernel = tfp.mcmc.TransformedTransitionKernel(
        tfp.mcmc.HamiltonianMonteCarlo(target.log_prob, step_size=0.3, num_leapfrog_steps=3),
        bijector=flow.bijector)
    state = tf.constant(normal([4, 4]))
    results = kernel.bootstrap_results(state)
    # The kernel's target on the noise side: log p(f(z)) + log|det df/dz|, z = f^-1(x).
    z = flow.inverse(state)
    np.testing.assert_allclose(
        results.inner_results.accepted_results.target_log_prob,
        target.log_prob(state) + flow.bijector.forward_log_det_jacobian(z, event_ndims=1),
        rtol=1e-4, atol=1e-4)
    samples, accepted = tfp.mcmc.sample_chain(
        num_results=10, current_state=state, kernel=kernel, seed=[3, 4],
        trace_fn=lambda _, r: r.inner_results.is_accepted)
    assert samples.shape == [10, 4, 4] and np.all(np.isfinite(samples))
    assert np.mean(accepted) > 0.3


# -- batch axes in Flow.log_prob ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["realnvp", "realnvp_image", "maf"])
def test_log_prob_takes_extra_batch_axes(name):
    flow = perturb(FLOWS[name]())
    x = normal([2, 3, *flow.event_shape])
    log_prob = flow.log_prob(x)
    assert log_prob.shape == [2, 3]
    flat = flow.log_prob(np.reshape(x, [6, *flow.event_shape]))
    np.testing.assert_allclose(log_prob, np.reshape(flat, [2, 3]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_prob, flow.distribution.log_prob(x), rtol=1e-5, atol=1e-5)


def test_log_prob_broadcasts_a_context_over_extra_batch_axes():
    flow = perturb(FLOWS["realnvp_conditional"]())
    x = normal([2, 3, 4])
    context = normal([3, 3], seed=2)
    full = np.broadcast_to(context, [2, 3, 3])
    expected = np.reshape(flow.log_prob(np.reshape(x, [6, 4]), np.reshape(full, [6, 3])),
                          [2, 3])
    np.testing.assert_allclose(flow.log_prob(x, context), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flow.log_prob(x, full), expected, rtol=1e-5, atol=1e-5)
    # One context vector for everything, and one row for a one-axis batch.
    shared = flow.log_prob(x, context[0])
    np.testing.assert_allclose(shared, flow.log_prob(x, np.broadcast_to(context[0], [2, 3, 3])),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flow.log_prob(x[0], context[:1]), shared[0], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(
        flow.log_prob(x, context),
        flow.distribution.log_prob(x, bijector_kwargs={"context": context}),
        rtol=1e-5, atol=1e-5)


def test_bound_log_prob_takes_extra_batch_axes():
    flow = perturb(FLOWS["realnvp_augmented"]())
    x = normal([2, 3, 2])
    bound = flow.log_prob(x, num_samples=4, seed=7)
    assert bound.shape == [2, 3]
    flat = flow.log_prob(np.reshape(x, [6, 2]), num_samples=4, seed=7)
    np.testing.assert_allclose(bound, np.reshape(flat, [2, 3]), rtol=1e-6)


def test_log_prob_with_extra_batch_axes_in_a_graph():
    flow = perturb(FLOWS["realnvp"]())
    x = normal([2, 3, 4])
    log_prob = tf.function(flow.log_prob,
                           input_signature=[tf.TensorSpec([None, None, 4], tf.float32)])
    np.testing.assert_allclose(log_prob(x), flow.log_prob(x), rtol=1e-5, atol=1e-5)


EXTRA_AXES_ERRORS = [
    ("no batch axis", lambda f: f.log_prob(np.zeros(4, "float32")),
     r"x must have shape \[batch, 4\], got \[4\] \(more leading batch axes are accepted"),
    ("wrong event", lambda f: f.log_prob(np.zeros([2, 3, 5], "float32")),
     r"x must have shape \[batch, 4\], got \[2, 3, 5\]"),
    ("fit keeps one batch axis",
     lambda f: f.fit(np.zeros([2, 3, 4], "float32"), epochs=1, verbose=0),
     r"x must have shape \[batch, 4\], got \[2, 3, 4\]$"),
    ("evaluate keeps one batch axis",
     lambda f: f.evaluate(np.zeros([2, 3, 4], "float32"), verbose=0),
     r"x must have shape \[batch, 4\], got \[2, 3, 4\]$"),
]


@pytest.mark.parametrize("case", EXTRA_AXES_ERRORS, ids=[c[0] for c in EXTRA_AXES_ERRORS])
def test_extra_batch_axes_errors(case):
    _, call, message = case
    flow = FLOWS["realnvp"]()
    flow.compile()
    with pytest.raises(ValueError, match=message):
        call(flow)


CONTEXT_ERRORS = [
    ("rows", [5, 4], [4, 3], r"x: x has 5 rows but context has 4"),
    ("axes", [2, 3, 4], [4, 3], r"the context's batch axes \[4\] do not broadcast to x's "
                                r"batch axes \[2, 3\]"),
    ("more axes", [3, 4], [2, 3, 3], r"the context's batch axes \[2, 3\] do not broadcast"),
    ("width", [2, 3, 4], [2, 3, 5], r"x context must have shape \[batch, 3\], got \[2, 3, 5\]"),
]


@pytest.mark.parametrize("case", CONTEXT_ERRORS, ids=[c[0] for c in CONTEXT_ERRORS])
def test_context_that_does_not_broadcast(case):
    _, x_shape, context_shape, message = case
    flow = FLOWS["realnvp_conditional"]()
    with pytest.raises(ValueError, match=message):
        flow.log_prob(np.zeros(x_shape, "float32"), np.zeros(context_shape, "float32"))


# -- docs/tfp.md, executed --------------------------------------------------------------------


def test_every_doc_example_is_run_here():
    assert list(doc_examples()) == ["variables", "banana", "banana-fit", "funnel", "neutra",
                                    "mixture", "joint", "compositions", "batch"]


@pytest.mark.parametrize("name", ["mixture", "joint", "compositions", "batch"])
def test_doc_example(name):
    run_examples("variables", name)


@pytest.fixture(scope="module")
def banana_surrogates():
    """The banana VI example: a RealNVP and an IAF fitted by fit_surrogate_posterior."""
    return run_examples("variables", "banana", "banana-fit")


@pytest.mark.slow
def test_doc_banana_surrogates_fitted_with_flow_trainable_variables(banana_surrogates):
    # The page passes the flow's own list, literally, as TFP's documentation writes it.
    assert "trainable_variables=flow.trainable_variables," in doc_examples()["banana"]
    for flow in (banana_surrogates["realnvp"], banana_surrogates["iaf"]):
        std = flow.sample(20_000, seed=9).numpy().std(axis=0)
        np.testing.assert_allclose(std, [1.0, 1.5], rtol=0.1)


@pytest.mark.slow
def test_doc_neutra_hmc(banana_surrogates):
    namespace = run_examples("neutra", namespace=dict(banana_surrogates))
    assert namespace["samples"].shape == [300, 32, 2]


@pytest.mark.slow
def test_doc_funnel():
    namespace = run_examples("variables", "banana", "funnel")
    v, x = namespace["funnel_flow"].sample(20_000, seed=9).numpy().T
    # The funnel's shape, not only its moments: x spreads more where v is large.
    assert np.std(x[v > 1]) > 2 * np.std(x[v < -1])
