"""Probability density distillation: fit a student flow to a frozen teacher by reverse KL."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import _replicas
from tfp_flows._validation import check_int, check_positive_int
from tfp_flows.training.callbacks import NaNGuard

__all__ = ["Distiller"]

tfb = tfp.bijectors
tfd = tfp.distributions

# Metrics every Distiller reports; extra loss terms may not take these names.
_METRIC_NAMES = ("loss", "kl", "log_q", "log_p")

# `keras.Model.fit` arguments about data, meaningless when the student's samples are the data.
_DATA_ARGUMENTS = ("batch_size", "validation_data", "validation_split", "validation_steps",
                   "validation_batch_size", "validation_freq", "shuffle", "class_weight",
                   "sample_weight")


def _check_flow(flow, role):
    """Returns the event shape of a duck-typed flow, raising if `flow` is not one."""
    if not isinstance(getattr(flow, "distribution", None), tfd.Distribution) or not hasattr(
            flow, "event_shape"):
        raise TypeError(
            f"{role} must be a flow: an object with `.distribution` (a tfd.Distribution), "
            f"`.bijector` and `.event_shape`, such as tff.models.RealNVP([2]); got "
            f"{type(flow).__name__}")
    try:
        event_shape = [int(d) for d in tf.TensorShape(flow.event_shape).as_list()]
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{role}.event_shape must be a list of ints, got {flow.event_shape!r}") from error
    if getattr(flow, "conditional", False):
        raise ValueError(
            f"{role} is a conditional flow (context_size="
            f"{getattr(flow, 'context_size', None)!r}); Distiller supports unconditional "
            f"flows only")
    return event_shape


def _check_student(student):
    """Checks what the reparameterised estimator needs; returns the student's base."""
    if not isinstance(student, keras.layers.Layer):
        raise TypeError(
            f"student must be a Keras layer or model (a flow such as tff.models.RealNVP) so "
            f"its weights can be trained; got {type(student).__name__}")
    bijector = getattr(student, "bijector", None)
    if not isinstance(bijector, tfb.Bijector):
        raise TypeError(
            f"student.bijector must be a tfp.bijectors.Bijector mapping base noise to data, "
            f"got {type(bijector).__name__}")
    distribution = student.distribution
    # Duck-typed: tfd.TransformedDistribution builds instances of private subclasses.
    base = getattr(distribution, "distribution", None)
    if getattr(distribution, "bijector", None) is not bijector or not isinstance(
            base, tfd.Distribution):
        raise TypeError(
            f"student.distribution must be a tfd.TransformedDistribution of base noise "
            f"through student.bijector, got {type(distribution).__name__}")
    if base.reparameterization_type != tfd.FULLY_REPARAMETERIZED:
        raise ValueError(
            f"the student's base distribution must be reparameterised (gradients flow "
            f"through its samples), got {base.name} with {base.reparameterization_type}")
    if base.event_shape.rank is None:
        raise ValueError(f"the student's base distribution {base.name} has unknown event rank")
    if not student.trainable or not student.trainable_weights:
        raise ValueError(
            f"student {student.name!r} has no trainable weights (trainable="
            f"{student.trainable}); nothing could be distilled into it")
    return base


def _named_losses(extra_losses):
    """Returns `{name: callable}` from a dict, or a list of named callables."""
    if extra_losses is None:
        return {}
    if isinstance(extra_losses, dict):
        items = list(extra_losses.items())
    elif isinstance(extra_losses, list | tuple):
        items = [(getattr(fn, "__name__", None), fn) for fn in extra_losses]
    else:
        raise TypeError(
            f"extra_losses must be a dict {{name: callable}} or a list of named functions, got "
            f"{type(extra_losses).__name__}")
    named = {}
    for name, fn in items:
        if not callable(fn):
            raise TypeError(f"extra loss {name!r} must be callable, got {type(fn).__name__}")
        if not isinstance(name, str) or not name or name.startswith("<"):
            raise ValueError(
                f"extra loss {fn!r} has no usable name ({name!r}); pass extra_losses as a dict "
                f"{{name: callable}}")
        if name in _METRIC_NAMES or name in named:
            raise ValueError(
                f"extra loss name {name!r} is taken; names must be unique and differ from "
                f"{list(_METRIC_NAMES)}")
        named[name] = fn
    return named


class Distiller(keras.Model):
    """Probability density distillation: trains `student` to match a frozen `teacher`.

    Minimises the reverse KL divergence from the student `q` to the teacher `p`,

        KL(q || p) = E_{x ~ q}[log q(x) - log p(x)],

    estimated from `num_samples` reparameterised student samples per step: base noise
    `z` is drawn from the student's base distribution, `x = student.bijector.forward(z)`
    and `log q(x) = log base(z) - log|det dx/dz|`, taken from that same forward pass. The
    student's inverse is never run, so an inverse autoregressive (IAF) student, whose
    inverse is sequential, trains at the cost of its parallel sampling pass; the teacher
    only evaluates `teacher.distribution.log_prob(x)`, one parallel pass for a masked
    autoregressive (MAF) teacher. This is the training of Parallel WaveNet's student.

    The teacher is frozen (`teacher.trainable = False` is set on it, and stays set; set it
    back to train the teacher again): gradients flow through it into the student, whose
    weights alone are updated. Teacher and student are duck-typed: objects with
    `.distribution`, `.bijector` and `.event_shape` (any `tff.models.Flow`); the teacher
    may be anything whose `.distribution` is a `tfd.Distribution` over the same events.

    Train with `compile(optimizer)` and `fit(epochs=..., steps_per_epoch=...)`, which needs
    no data. `fit` reports `loss` (the KL plus any extra terms), `kl`, `log_q` (mean log
    density of the samples under the student, i.e. minus its entropy estimate) and `log_p`
    (their mean log density under the teacher), all in nats per example, and each extra
    term under its name. A non-finite loss stops training with `FloatingPointError`. The
    noise is drawn from a Keras `SeedGenerator`, so runs repeat under
    `keras.utils.set_random_seed`. Without training, `evaluate(steps=...)` averages the
    same values over fresh samples, `estimate(num_samples, seed)` returns them as floats
    from one batch, and `log_densities(noise)` gives the per-sample terms.

    Extra loss terms: each is a callable `fn(x, teacher, student) -> scalar tensor`, where
    `x` are this step's student samples `[num_samples, *event_shape]`, differentiable with
    respect to the student's weights. The value is added to the loss as returned (scale it
    inside `fn`) and reported under the term's name. Van den Oord et al. add such terms
    (a power or spectral loss) to the KL.

    Under a `tf.distribute` strategy (build teacher, student and Distiller, and compile,
    inside `strategy.scope()`), `num_samples` is the number of samples of the whole step:
    every replica draws the step's noise from the same seed and keeps its own share of the
    rows, so the replicas together evaluate exactly the samples one device would, and the
    update and the reported values are those of one device. Each extra loss term sees only
    its replica's samples; the terms are averaged over the replicas weighted by their
    sample counts (exact for a term that is a mean over samples). `num_samples` must be
    at least the number of replicas.

    The Distiller is a training wrapper and is not itself saved: save or export the
    student (`student.save(...)`, `student.export(...)`), which stays an ordinary flow.

    Reference: van den Oord et al., "Parallel WaveNet: Fast High-Fidelity Speech
    Synthesis", arXiv:1711.10433.

    Args:
        teacher: the trained flow to distil; frozen by this constructor.
        student: the flow to train, a Keras model whose `distribution` is its
            `bijector` applied to a reparameterised base distribution.
        num_samples: student samples drawn per training step.
        extra_losses: `None`, a dict `{name: fn}` or a list of named functions
            `fn(x, teacher, student) -> scalar` added to the KL.
        seed: int seed of the noise, or `None` to draw it from Python's `random` (which
            `keras.utils.set_random_seed` seeds).
        **kwargs: passed to `keras.Model` (`name`).

    Raises:
        TypeError: `teacher` or `student` is not a flow, or the student is not a Keras
            layer, or `extra_losses` is not a dict or list of callables.
        ValueError: the event shapes or dtypes differ, teacher and student are the same
            flow or share weights, a flow is conditional, the student has no trainable
            weights, `num_samples` is not a positive int, or an extra loss has no name or
            a taken one.

    Example:
        >>> import keras
        >>> import tfp_flows as tff
        >>> keras.utils.set_random_seed(0)
        >>> x, _ = tff.datasets.load_toy("two_moons", 640)
        >>> teacher = tff.models.RealNVP([2], num_layers=2, hidden_units=[16])
        >>> teacher.compile(optimizer="adam")
        >>> _ = teacher.fit(x, batch_size=128, epochs=1, verbose=0)
        >>> student = tff.models.RealNVP([2], num_layers=2, hidden_units=[16])
        >>> distiller = tff.training.Distiller(teacher, student, num_samples=64)
        >>> distiller.compile(optimizer="adam")
        >>> history = distiller.fit(epochs=1, steps_per_epoch=5, verbose=0)
        >>> sorted(history.history)
        ['kl', 'log_p', 'log_q', 'loss']
        >>> student.sample(3).shape
        TensorShape([3, 2])
    """

    def __init__(self, teacher, student, num_samples=256, extra_losses=None, seed=None,
                 **kwargs):
        kwargs.setdefault("name", "distiller")
        super().__init__(**kwargs)
        teacher_shape = _check_flow(teacher, "teacher")
        student_shape = _check_flow(student, "student")
        teacher_bijector = getattr(teacher, "bijector", None)
        if teacher is student or (
                teacher_bijector is not None and teacher_bijector is getattr(
                    student, "bijector", None)):
            raise ValueError(
                "teacher and student are the same flow; distil into a separate student")
        base = _check_student(student)
        if teacher_shape != student_shape:
            raise ValueError(
                f"teacher and student must have the same event shape, got teacher "
                f"{teacher_shape} and student {student_shape}")
        teacher_dtype = tf.as_dtype(teacher.distribution.dtype)
        student_dtype = tf.as_dtype(student.distribution.dtype)
        if teacher_dtype != student_dtype:
            raise ValueError(
                f"teacher and student densities must have the same dtype, got teacher "
                f"{teacher_dtype.name} and student {student_dtype.name}")
        teacher_weights = {id(w) for w in getattr(teacher, "weights", [])}
        shared = [w.path for w in student.trainable_weights if id(w) in teacher_weights]
        if shared:
            raise ValueError(
                f"teacher and student share weights {shared}; training the student would "
                f"change the teacher")
        self.num_samples = check_positive_int("num_samples", num_samples)
        check_int("seed", seed, allow_none=True)
        self._extra_losses = _named_losses(extra_losses)
        if isinstance(teacher, keras.layers.Layer):
            teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.event_shape = student_shape
        self._event_ndims = base.event_shape.rank
        self._seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self._trackers = [keras.metrics.Mean(name=name)
                          for name in (*_METRIC_NAMES, *self._extra_losses)]
        self._estimate_function = None
        self.built = True

    # -- the estimator ---------------------------------------------------------------------

    def log_densities(self, noise):
        """Maps base noise through the student; returns `(x, log_q, log_p)`.

        `x = student.bijector.forward(noise)`; `log_q` and `log_p` (`[n]` each) are the
        log-densities of `x` under the student (from the forward pass's log-det) and the
        teacher. `mean(log_q - log_p)` over noise drawn from the student's base is the KL
        estimate that training minimises.

        Args:
            noise: base noise `[n, *event_shape]`.
        """
        base = self.student.distribution.distribution
        noise = tf.convert_to_tensor(noise, base.dtype)
        x = self.student.bijector.forward(noise)
        # TFP's bijector cache returns the log-det computed by the forward call above.
        log_det = self.student.bijector.forward_log_det_jacobian(
            noise, event_ndims=self._event_ndims)
        log_q = base.log_prob(noise) - log_det
        log_p = self.teacher.distribution.log_prob(x)
        return x, log_q, log_p

    def _loss_terms(self, count, seed, rows=None):
        """The loss and every reported value, from `count` samples drawn with `seed`.

        `rows`, a `(start, size)` pair, keeps only those rows of the samples (one
        replica's share of a distributed step).
        """
        noise = self.student.distribution.distribution.sample(count, seed=seed)
        if rows is not None:
            noise = noise[rows[0]:rows[0] + rows[1]]
        x, log_q, log_p = self.log_densities(noise)
        kl = tf.reduce_mean(log_q - log_p)
        values = {"loss": kl, "kl": kl, "log_q": tf.reduce_mean(log_q),
                  "log_p": tf.reduce_mean(log_p)}
        loss = kl
        for name, fn in self._extra_losses.items():
            value = tf.convert_to_tensor(fn(x, self.teacher, self.student))
            if value.shape.rank != 0:
                raise ValueError(
                    f"extra loss {name!r} must return a scalar, got shape {value.shape}")
            value = tf.cast(value, kl.dtype)
            values[name] = value
            loss = loss + value
        values["loss"] = loss
        return values

    def _next_seed(self):
        return tf.cast(self._seed_generator.next(), tf.int32)

    # -- Keras training --------------------------------------------------------------------

    @property
    def metrics(self):
        # Only the Distiller's own trackers: the flows' metrics (bits_per_dim) and Keras'
        # compiled loss tracker have no meaning here.
        return list(self._trackers)

    def _record(self, values, weight=None):
        for tracker in self._trackers:
            tracker.update_state(values[tracker.name], weight)
        return _replicas.step_logs(
            {tracker.name: tracker.result() for tracker in self._trackers})

    def _step_terms(self):
        """This replica's values of one step, and its share of the step's samples.

        The share is `None` outside a multi-replica step; otherwise the values are means
        over the replica's rows of the step's samples, the fraction of the samples they
        cover being the share.
        """
        seed = self._next_seed()
        context = _replicas.replica_context()
        if context is None:
            return self._loss_terms(self.num_samples, seed), None
        # The same seed on every replica: each keeps its own rows of one device's samples.
        start, size = _replicas.replica_share(self.num_samples, context)
        values = self._loss_terms(self.num_samples, seed, rows=(start, size))
        return values, tf.cast(size, values["loss"].dtype)

    def _record_step(self, values, size):
        # Weighted by the replica's sample count, the trackers' sums over the replicas
        # are the means over all of the step's samples.
        return self._record(values) if size is None else self._record(values, size)

    def train_step(self, data):
        del data  # a placeholder: the student's samples are the data
        variables = self.student.trainable_weights
        with tf.GradientTape() as tape:
            values, size = self._step_terms()
            loss = values["loss"]
            if size is not None:
                # tf.distribute sums the replicas' gradients: each contributes its share.
                loss = loss * size / tf.cast(self.num_samples, loss.dtype)
            loss = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._record_step(values, size)

    def test_step(self, data):
        del data
        return self._record_step(*self._step_terms())

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training by reverse KL; takes Keras' other arguments.

        Raises:
            ValueError: if a `loss` or `metrics` is given: the loss is the KL (plus the
                constructor's `extra_losses`) and the metrics are fixed.
        """
        if loss is not None:
            raise ValueError(
                f"Distiller trains by reverse KL; compile() takes no loss (add terms with "
                f"extra_losses=), got loss={loss!r}")
        if metrics:
            raise ValueError(
                f"Distiller reports loss, kl, log_q, log_p and its extra losses; compile() "
                f"takes no metrics, got metrics={metrics!r}")
        super().compile(optimizer=optimizer, **kwargs)

    def _placeholder_data(self, name, x, y, kwargs):
        if x is not None or y is not None:
            raise ValueError(
                f"Distiller.{name} takes no data: each step draws num_samples="
                f"{self.num_samples} samples from the student; got x={type(x).__name__}, "
                f"y={type(y).__name__}")
        for key in _DATA_ARGUMENTS:
            if key in kwargs:
                raise ValueError(
                    f"Distiller.{name} takes no {key}=: each step draws num_samples="
                    f"{self.num_samples} samples from the student (set it in the constructor)")
        if not self.compiled:
            raise RuntimeError(f"call compile() before {name}()")
        replicas = self.distribute_strategy.num_replicas_in_sync
        if replicas == 1:
            # Keras iterates over data; one dummy element per step drives the loop.
            return tf.data.Dataset.from_tensors(tf.zeros([], tf.float32)).repeat()
        if self.num_samples < replicas:
            raise ValueError(
                f"Distiller.{name}: num_samples={self.num_samples} samples per step cannot "
                f"be shared by the {replicas} replicas of the tf.distribute strategy; use "
                f"num_samples >= {replicas}")
        # tf.distribute splits a batch: one dummy element per replica, every worker
        # iterating over all of them.
        data = tf.data.Dataset.from_tensors(tf.zeros([replicas], tf.float32)).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return data.with_options(options)

    def fit(self, x=None, y=None, *, epochs=1, steps_per_epoch=100, callbacks=None, **kwargs):
        """Trains the student for `epochs` epochs of `steps_per_epoch` steps; needs no data.

        Each step draws `num_samples` fresh student samples. A `NaNGuard` is added to the
        callbacks: a non-finite loss raises `FloatingPointError`. Other keyword arguments
        (`verbose`, `initial_epoch`) are those of `keras.Model.fit`.

        Returns:
            The Keras `History`, with `loss`, `kl`, `log_q`, `log_p` and the extra losses.

        Raises:
            ValueError: data (`x`, `y`, `batch_size`, `validation_data`, ...) is given,
                or `steps_per_epoch` is not a positive int.
            RuntimeError: `compile()` was not called.
        """
        data = self._placeholder_data("fit", x, y, kwargs)
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
        callbacks = list(callbacks or [])
        if not any(isinstance(c, NaNGuard) for c in callbacks):
            callbacks.append(NaNGuard())
        return super().fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                           callbacks=callbacks, shuffle=False, **kwargs)

    def evaluate(self, x=None, y=None, *, steps=10, **kwargs):
        """Averages the reported values over `steps` batches of fresh student samples.

        Takes no data; other keyword arguments are those of `keras.Model.evaluate`
        (`verbose`, `return_dict`).
        """
        data = self._placeholder_data("evaluate", x, y, kwargs)
        return super().evaluate(data, steps=check_positive_int("steps", steps), **kwargs)

    def estimate(self, num_samples=None, seed=None):
        """Estimates the KL (and the other reported values) from one fresh batch, no training.

        Args:
            num_samples: number of student samples; defaults to the constructor's.
            seed: an int for a reproducible estimate, or `None`.

        Returns:
            A dict of Python floats: `loss`, `kl`, `log_q`, `log_p` and the extra losses.
        """
        count = self.num_samples if num_samples is None else check_positive_int(
            "num_samples", num_samples)
        check_int("seed", seed, allow_none=True)
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        if self._estimate_function is None:
            self._estimate_function = tf.function(
                self._loss_terms,
                input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)])
        values = self._estimate_function(tf.constant(count, tf.int32),
                                         tf.constant([seed, 0], tf.int32))
        return {name: float(value) for name, value in values.items()}
