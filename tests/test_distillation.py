"""Probability density distillation: the reverse-KL estimator against closed forms, training
a RealNVP student from a trained RealNVP teacher, the frozen teacher, extra loss terms, the
NaN guard, seeds and argument checks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from tfp_flows.training import Distiller

tfb = tfp.bijectors
tfd = tfp.distributions


def small_flow(**kwargs):
    return tff.models.RealNVP([2], num_layers=2, hidden_units=[8], **kwargs)


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# -- duck-typed flows with closed-form densities -------------------------------------------

class AffineParams(keras.layers.Layer):
    """The weights of a diagonal affine map: `loc` and `log_scale`."""

    def __init__(self, loc, log_scale):
        super().__init__()
        self.loc = self.add_weight(shape=[len(loc)], name="loc",
                                   initializer=keras.initializers.Constant(loc))
        self.log_scale = self.add_weight(shape=[len(loc)], name="log_scale",
                                         initializer=keras.initializers.Constant(log_scale))
        self.built = True


class AffineBijector(tfb.Bijector):
    """`x = loc + exp(log_scale) * z`, reading the weights of a Keras layer when called.

    Its inverse raises: the Distiller must get the student's density from the forward pass.
    """

    def __init__(self, params):
        parameters = dict(locals())
        self._params = params
        super().__init__(forward_min_event_ndims=1, parameters=parameters, name="affine")

    def _forward(self, z):
        scale = tf.exp(tf.convert_to_tensor(self._params.log_scale))
        return z * scale + tf.convert_to_tensor(self._params.loc)

    def _inverse(self, x):
        raise AssertionError("the student's inverse was called")

    def _forward_log_det_jacobian(self, z):
        return tf.reduce_sum(tf.convert_to_tensor(self._params.log_scale))


class GaussianStudent(keras.Model):
    """A flow that is not a `tff.models.Flow`: `N(loc, diag(exp(log_scale))^2)`."""

    def __init__(self, loc, log_scale):
        super().__init__()
        self.event_shape = [len(loc)]
        self.params = AffineParams(loc, log_scale)
        self.bijector = AffineBijector(self.params)
        base = tfd.Sample(tfd.Normal(0.0, 1.0), [len(loc)])
        self.distribution = tfd.TransformedDistribution(base, self.bijector)
        self.built = True


class GaussianTeacher:
    """Not even a Keras object: `.distribution` and `.event_shape` are all a teacher needs."""

    def __init__(self, loc, scale, dtype=tf.float32):
        self.event_shape = [len(loc)]
        self.bijector = None
        self.distribution = tfd.MultivariateNormalDiag(
            tf.constant(loc, dtype), tf.constant(scale, dtype))


def normal_log_pdf(x, loc, scale):
    return np.sum(-0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi),
                  axis=-1)


def gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    """KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2)), diagonal, summed over dimensions."""
    return float(np.sum(np.log(scale_p / scale_q)
                        + (scale_q ** 2 + (loc_q - loc_p) ** 2) / (2 * scale_p ** 2) - 0.5))


STUDENT_LOC, STUDENT_SCALE = np.array([0.5, -1.0]), np.array([0.5, 2.0])
TEACHER_LOC, TEACHER_SCALE = np.array([1.0, 0.0]), np.array([1.0, 1.5])


def gaussian_pair():
    student = GaussianStudent(STUDENT_LOC, np.log(STUDENT_SCALE))
    return GaussianTeacher(TEACHER_LOC, TEACHER_SCALE), student


# -- the estimator ---------------------------------------------------------------------------

def test_fresh_flows_are_identical_so_the_kl_is_exactly_zero():
    keras.utils.set_random_seed(0)
    distiller = Distiller(small_flow(), small_flow(), num_samples=64)
    values = distiller.estimate(seed=1)
    assert values["kl"] == 0.0
    assert values["log_q"] == values["log_p"]
    # Both are the standard Normal: E[log N(z)] = -D/2 (1 + log 2 pi).
    assert values["log_q"] == pytest.approx(-(1 + math.log(2 * math.pi)), abs=0.5)


def test_log_densities_of_an_affine_student_match_the_closed_form():
    teacher, student = gaussian_pair()
    distiller = Distiller(teacher, student)
    noise = np.random.default_rng(0).normal(size=[16, 2]).astype("float32")
    x, log_q, log_p = distiller.log_densities(noise)
    expected_x = STUDENT_LOC + STUDENT_SCALE * noise
    np.testing.assert_allclose(x, expected_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_q, normal_log_pdf(expected_x, STUDENT_LOC, STUDENT_SCALE),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_p, normal_log_pdf(expected_x, TEACHER_LOC, TEACHER_SCALE),
                               rtol=1e-5, atol=1e-5)


def test_kl_estimate_converges_to_the_analytic_gaussian_kl():
    teacher, student = gaussian_pair()
    distiller = Distiller(teacher, student)
    expected = gaussian_kl(STUDENT_LOC, STUDENT_SCALE, TEACHER_LOC, TEACHER_SCALE)
    # The per-sample term has a standard deviation below 3 nats: 4 standard errors < 0.04.
    assert distiller.estimate(num_samples=100_000, seed=0)["kl"] == pytest.approx(
        expected, abs=0.04)
    assert distiller.estimate(num_samples=64, seed=3) == distiller.estimate(
        num_samples=64, seed=3)


def test_affine_student_learns_the_gaussian_teacher_without_its_inverse():
    keras.utils.set_random_seed(0)
    teacher, student = gaussian_pair()
    distiller = Distiller(teacher, student, num_samples=256)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    history = distiller.fit(epochs=2, steps_per_epoch=100, verbose=0)
    assert history.history["kl"][-1] < 0.05
    np.testing.assert_allclose(np.array(student.params.loc), TEACHER_LOC, atol=0.15)
    np.testing.assert_allclose(np.exp(np.array(student.params.log_scale)), TEACHER_SCALE,
                               rtol=0.15)


def test_only_the_student_is_trainable():
    keras.utils.set_random_seed(0)
    teacher, student = small_flow(), small_flow()
    distiller = Distiller(teacher, student)
    assert teacher.trainable is False and not teacher.trainable_weights
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_weights}


# -- training a RealNVP student from a trained RealNVP teacher ------------------------------

@pytest.fixture(scope="module")
def trained_teacher():
    keras.utils.set_random_seed(0)
    x, _ = tff.datasets.load_toy("two_moons", 4000)
    # Tightly bounded log-scales keep the teacher's density tame off the data: with the
    # default bound (3) a briefly trained teacher gives some standard Normal points log p
    # near -1e7, and the reverse KL estimate is ruled by those rare samples.
    teacher = tff.models.RealNVP([2], num_layers=4, hidden_units=[32, 32], log_scale_bound=1.0)
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3))
    teacher.fit(x, batch_size=256, epochs=8, verbose=0)
    return teacher


@pytest.mark.slow
def test_distillation_lowers_the_kl_and_leaves_the_teacher_alone(trained_teacher, tmp_path):
    keras.utils.set_random_seed(1)
    teacher = trained_teacher
    student = tff.models.RealNVP([2], num_layers=4, hidden_units=[32, 32])
    teacher_before, student_before = weights_of(teacher), weights_of(student)
    distiller = Distiller(teacher, student, num_samples=256)
    initial = distiller.estimate(num_samples=4096, seed=0)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = distiller.fit(epochs=4, steps_per_epoch=75, verbose=0)
    final = distiller.estimate(num_samples=4096, seed=0)

    kl = history.history["kl"]
    assert sorted(history.history) == ["kl", "log_p", "log_q", "loss"]
    assert kl[-1] < kl[0] and history.history["loss"] == kl
    # From about 380 nats to about 0.14 (two moons are hard to cover by reverse KL).
    assert final["kl"] < 0.3 and final["kl"] < initial["kl"] / 100
    assert same_weights(weights_of(teacher), teacher_before)
    assert not same_weights(weights_of(student), student_before)

    # The student is still an ordinary flow: its forward-pass density is its log_prob, it
    # samples, and it saves and reloads on its own.
    noise = np.random.default_rng(0).normal(size=[32, 2]).astype("float32")
    x, log_q, _ = distiller.log_densities(noise)
    np.testing.assert_allclose(log_q, student.log_prob(np.array(x)), rtol=1e-4, atol=1e-4)
    assert student.sample(5, seed=0).shape == (5, 2)
    student.save(tmp_path / "student.keras")
    reloaded = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(reloaded.log_prob(np.array(x)), student.log_prob(np.array(x)),
                               rtol=1e-5, atol=1e-5)


def test_runs_repeat_under_set_random_seed():
    def run():
        keras.utils.set_random_seed(7)
        distiller = Distiller(small_flow(), small_flow(), num_samples=32)
        # A teacher that is not the identity: a shift the student has to learn.
        distiller.teacher.conditioners[0].output_layer.bias.assign(np.full([2], 0.5, "float32"))
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = distiller.fit(epochs=1, steps_per_epoch=5, verbose=0)
        return history.history["kl"], weights_of(distiller.student)

    kl_a, weights_a = run()
    kl_b, weights_b = run()
    assert kl_a == kl_b and kl_a[0] > 0
    assert same_weights(weights_a, weights_b)


# -- extra losses and the NaN guard ----------------------------------------------------------

def test_extra_loss_is_reported_and_added_to_the_loss():
    def mean_square(x, teacher, student):
        return tf.reduce_mean(tf.square(x))

    keras.utils.set_random_seed(0)
    teacher, student = gaussian_pair()
    distiller = Distiller(teacher, student, num_samples=128,
                          extra_losses={"moment": lambda x, t, s: 0.1 * tf.reduce_mean(x),
                                        "mean_square": mean_square})
    values = distiller.estimate(seed=0)
    assert values["loss"] == pytest.approx(
        values["kl"] + values["moment"] + values["mean_square"], rel=1e-5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(epochs=1, steps_per_epoch=3, verbose=0).history
    assert sorted(logs) == ["kl", "log_p", "log_q", "loss", "mean_square", "moment"]
    assert logs["loss"][0] == pytest.approx(
        logs["kl"][0] + logs["moment"][0] + logs["mean_square"][0], rel=1e-5)

    # The term reaches the gradient: a penalty on the student's loc moves loc by exactly
    # -lr * 200 loc more than the KL alone does (both runs draw the same noise).
    def pull_loc(x, teacher, student):
        return 100.0 * tf.reduce_sum(tf.square(student.params.loc))

    locs = {}
    for extra in (None, [pull_loc]):
        teacher, student = gaussian_pair()
        distiller = Distiller(teacher, student, num_samples=128, extra_losses=extra, seed=0)
        distiller.compile(optimizer=keras.optimizers.SGD(1e-3))
        logs = distiller.fit(epochs=1, steps_per_epoch=1, verbose=0).history
        locs[extra is None] = np.array(student.params.loc)
    assert logs["pull_loc"][0] == pytest.approx(100.0 * np.sum(STUDENT_LOC ** 2), rel=1e-5)
    np.testing.assert_allclose(locs[False] - locs[True], -0.2 * STUDENT_LOC, rtol=1e-3,
                               atol=1e-6)


def test_non_finite_loss_stops_training():
    keras.utils.set_random_seed(0)
    distiller = Distiller(small_flow(), small_flow(), num_samples=16,
                          extra_losses={"broken": lambda x, t, s: tf.constant(np.nan)})
    distiller.compile(optimizer="adam")
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        distiller.fit(epochs=2, steps_per_epoch=3, verbose=0)
    assert distiller.stop_training


def test_extra_loss_must_return_a_scalar():
    distiller = Distiller(small_flow(), small_flow(), num_samples=8,
                          extra_losses={"per_sample": lambda x, t, s: tf.reduce_sum(x, -1)})
    with pytest.raises(ValueError, match="extra loss 'per_sample' must return a scalar"):
        distiller.estimate(seed=0)


def test_evaluate_takes_no_data():
    keras.utils.set_random_seed(0)
    distiller = Distiller(small_flow(), small_flow(), num_samples=8)
    distiller.compile(optimizer="adam")
    logs = distiller.evaluate(steps=2, verbose=0, return_dict=True)
    assert logs == {"kl": 0.0, "log_p": logs["log_q"], "log_q": logs["log_q"], "loss": 0.0}


# -- argument checks -------------------------------------------------------------------------

class NotAFlow:
    event_shape = [2]


@pytest.mark.parametrize("teacher, student, error, match", [
    (NotAFlow(), "student", TypeError, "teacher must be a flow.*got NotAFlow"),
    ("teacher", np.zeros(2), TypeError, "student must be a flow.*got ndarray"),
    ("teacher", GaussianTeacher([0.0, 0.0], [1.0, 1.0]), TypeError,
     "student must be a Keras layer"),
    ("teacher", "conditional", ValueError, r"student is a conditional flow \(context_size=3"),
    ("wide", "student", ValueError,
     r"same event shape, got teacher \[3\] and student \[2\]"),
    ("float64", "student", ValueError, "same dtype, got teacher float64 and student float32"),
])
def test_bad_flows_raise(teacher, student, error, match):
    flows = {
        "teacher": lambda: small_flow(),
        "student": lambda: small_flow(),
        "conditional": lambda: small_flow(context_size=3),
        "wide": lambda: tff.models.RealNVP([3], num_layers=2, hidden_units=[8]),
        "float64": lambda: GaussianTeacher([0.0, 0.0], [1.0, 1.0], tf.float64),
    }
    teacher = flows[teacher]() if isinstance(teacher, str) else teacher
    student = flows[student]() if isinstance(student, str) else student
    with pytest.raises(error, match=match):
        Distiller(teacher, student)


def test_teacher_and_student_must_differ():
    flow = small_flow()
    with pytest.raises(ValueError, match="teacher and student are the same flow"):
        Distiller(flow, flow)


def test_frozen_student_raises():
    student = small_flow()
    student.trainable = False
    with pytest.raises(ValueError, match="has no trainable weights"):
        Distiller(small_flow(), student)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_samples": 0}, ValueError, "num_samples must be a positive int, got 0"),
    ({"num_samples": 2.5}, TypeError, "num_samples must be a positive int, got 2.5"),
    ({"seed": "x"}, TypeError, "seed must be an int or None, got 'x'"),
    ({"extra_losses": lambda x, t, s: 0.0}, TypeError, "extra_losses must be a dict"),
    ({"extra_losses": [lambda x, t, s: 0.0]}, ValueError, "has no usable name"),
    ({"extra_losses": {"kl": lambda x, t, s: 0.0}}, ValueError, "name 'kl' is taken"),
    ({"extra_losses": {"term": 1.0}}, TypeError, "extra loss 'term' must be callable"),
])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        Distiller(small_flow(), small_flow(), **kwargs)


def test_fit_and_compile_reject_data_and_losses():
    distiller = Distiller(small_flow(), small_flow(), num_samples=8)
    with pytest.raises(RuntimeError, match=r"call compile\(\) before fit\(\)"):
        distiller.fit(epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="compile\\(\\) takes no loss"):
        distiller.compile(optimizer="adam", loss="mse")
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="Distiller.fit takes no data"):
        distiller.fit(np.zeros([4, 2], "float32"))
    with pytest.raises(ValueError, match="takes no batch_size="):
        distiller.fit(batch_size=32)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int, got 0"):
        distiller.fit(steps_per_epoch=0)


def _banana(count, seed):
    """A curved 2-D density: x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 / 2 - 1, 1/4)."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=count)
    return np.stack([first, 0.5 * first**2 - 1.0 + 0.5 * rng.normal(size=count)],
                    axis=1).astype("float32")


@pytest.mark.slow
def test_iaf_student_distilled_from_a_maf_teacher_matches_it():
    keras.utils.set_random_seed(0)
    train, test = _banana(8000, seed=0), _banana(2000, seed=1)
    # The parameterisation these numbers were measured with (docs/families/maf.md): the
    # shipped one fits this teacher closer to the data (test NLL 2.17), which this small
    # student then matches less closely in 2,000 steps (KL about 0.1).
    previous = dict(transformer=tff.bijectors.Affine(3.0), kernel_initializer="glorot_uniform",
                    actnorm=False)
    teacher = tff.models.MAF([2], num_layers=2, hidden_units=[32, 32], **previous)
    teacher.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, 20 * (8000 // 256)), global_clipnorm=1.0))
    teacher.fit(train, batch_size=256, epochs=20, verbose=0)
    student = tff.models.IAF([2], num_layers=2, hidden_units=[32, 32], **previous)
    distiller = Distiller(teacher, student, num_samples=512, seed=0)
    distiller.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(2e-3, 2000), global_clipnorm=1.0))
    distiller.fit(epochs=1, steps_per_epoch=2000, verbose=0)

    kl = distiller.estimate(num_samples=20000, seed=1)["kl"]
    teacher_nll = -float(np.mean(teacher.log_prob(test)))
    student_nll = -float(np.mean(student.log_prob(test)))  # the IAF's sequential direction
    print(f"KL(student || teacher) {kl:.4f} nats; test NLL: teacher {teacher_nll:.4f}, "
          f"student {student_nll:.4f} nats (true entropy 2.145)")
    assert kl < 0.05
    assert abs(student_nll - teacher_nll) < 0.1
    # The teacher learned the density (a standard normal would score 2.84 on this data).
    assert teacher_nll < 2.5
