"""The Flow base model: a `keras.Model` around a `tfd.TransformedDistribution`."""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import bijectors
from tfp_flows.bijectors import FlowChain
from tfp_flows.bijectors.base import check_event_shape
from tfp_flows.models._data import check_array, check_dataset, describe
from tfp_flows.training import BitsPerDim, NaNGuard

__all__ = ["Flow"]

tfd = tfp.distributions


def check_positive_int(name, value):
    """Returns `value` if it is a positive Python int (not a bool), else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _accelerator_present():
    return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())


class Flow(keras.Model):
    """Base class of every flow model: owns the conditioners, builds the distribution once.

    Subclasses create their Keras layers in `__init__`, keep them as attributes (so Keras
    tracks, trains and saves them) and call `self._set_bijectors(bijectors)` with the
    bijectors in the order they act on base noise (base -> data). The resulting
    `distribution` is an ordinary `tfd.TransformedDistribution` over a standard Normal.

    `compile()` needs no loss: training minimises the negative log-likelihood (nats per
    example, reported as `loss`) and reports `bits_per_dim`. `fit(x)` takes data without
    targets; a conditional flow takes `fit(x, context=c)`.

    Args:
        event_shape: shape of one example, `[D]` or `[H, W, C]`.
        context_size: size of the context vector of a conditional flow, or `None`.
        **kwargs: passed to `keras.Model` (`name`, `dtype`).
    """

    def __init__(self, event_shape, context_size=None, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = check_event_shape(event_shape)
        if context_size is not None and (
                isinstance(context_size, bool) or not isinstance(context_size, int)
                or context_size < 1):
            raise ValueError(f"context_size must be a positive int or None, got {context_size!r}")
        self.context_size = context_size
        self.num_dims = int(np.prod(self.event_shape))
        self.bits_per_dim_tracker = BitsPerDim(self.num_dims)
        self._compiled_functions = {}

    # -- construction ----------------------------------------------------------------------

    def _set_bijectors(self, bijectors):
        """Builds the chain, base and distribution, then creates every weight."""
        dtype = self.dtype
        self.bijector = FlowChain(list(reversed(bijectors)), name="flow")
        base = tfd.Sample(
            tfd.Normal(tf.constant(0.0, dtype), tf.constant(1.0, dtype)),
            sample_shape=self.event_shape, name="base")
        self.distribution = tfd.TransformedDistribution(base, self.bijector, name=self.name)
        context = None if self.context_size is None else tf.zeros([1, self.context_size], dtype)
        self._log_prob(tf.zeros([1, *self.event_shape], dtype), context)
        self.built = True

    def _data_space_steps(self, num_bins, logit_alpha):
        """The last bijectors (base -> data order) mapping model space to the data's space.

        With `num_bins=K` the data are dequantized levels in `[0, K)`: `LevelScaling` maps
        them to `[-1/2, 1/2)`, or, with `logit_alpha`, to `[0, 1)` followed by
        `LogitTransform(logit_alpha)`. Every log-det counts, so the density (and
        `bits_per_dim`) is that of the dequantized data. Sets `num_bins` and `logit_alpha`.
        """
        if num_bins is not None and (isinstance(num_bins, bool) or not isinstance(num_bins, int)
                                     or num_bins < 2):
            raise ValueError(f"num_bins must be None or an int >= 2, got {num_bins!r}")
        if logit_alpha is not None and num_bins is None:
            raise ValueError("logit_alpha needs num_bins: the logit transform acts on data "
                             "scaled to [0, 1)")
        self.num_bins = num_bins
        self.logit_alpha = logit_alpha
        steps = []
        if logit_alpha is not None:
            steps.append(bijectors.LogitTransform(self.event_shape, logit_alpha,
                                                  name="logit_transform"))
        if num_bins is not None:
            steps.append(bijectors.LevelScaling(num_bins, self.event_shape,
                                                centered=logit_alpha is None))
        return steps

    @property
    def conditional(self):
        """Whether this flow takes a `context` tensor."""
        return self.context_size is not None

    def _bijector_kwargs(self, context):
        return {} if context is None else {"context": context}

    def _log_prob(self, x, context):
        return self.distribution.log_prob(x, bijector_kwargs=self._bijector_kwargs(context))

    # -- Keras training --------------------------------------------------------------------

    def call(self, inputs, training=False):
        """Returns `log_prob` of `inputs` (a tensor, or a dict with `x` and `context`)."""
        # Keras casts inputs to the compute dtype (float16 under mixed precision); the
        # density and its log-dets are computed in the variable dtype (float32).
        if isinstance(inputs, dict):
            context = inputs.get("context")
            return self._log_prob(tf.cast(inputs["x"], self.dtype),
                                  None if context is None else tf.cast(context, self.dtype))
        return self._log_prob(tf.cast(inputs, self.dtype), None)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training by negative log-likelihood; takes Keras' other arguments.

        Raises:
            ValueError: if a `loss` or `metrics` is given: flows train by likelihood and
                report `loss` (NLL in nats) and `bits_per_dim` themselves.
        """
        if loss is not None:
            raise ValueError(
                f"Flow models train by negative log-likelihood; compile() takes no loss, "
                f"got loss={loss!r}")
        if metrics:
            raise ValueError(
                f"Flow models report loss and bits_per_dim; compile() takes no metrics, got "
                f"metrics={metrics!r}")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        config.pop("metrics", None)
        self.compile(**config)
        if self.built:
            # Create the optimizer's variables so its saved state can be restored.
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        log_prob = y_pred
        if sample_weight is None:
            nll = -tf.reduce_mean(log_prob)
        else:
            weight = tf.cast(tf.reshape(sample_weight, [-1]), log_prob.dtype)
            nll = -tf.reduce_sum(weight * log_prob) / tf.maximum(tf.reduce_sum(weight), 1e-12)
        for extra in self.losses:
            nll = nll + tf.cast(tf.reduce_sum(extra), nll.dtype)
        return nll

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.bits_per_dim_tracker.update_state(y_pred, sample_weight)
        return self.get_metrics_result()

    def _data_specs(self):
        specs = {"x": self.event_shape}
        if self.conditional:
            specs["context"] = [self.context_size]
        return specs

    def _prepare(self, x, context, name):
        """Checks `x` (and `context`) and packs them the way `call` expects."""
        if isinstance(x, tf.data.Dataset):
            if context is not None:
                raise ValueError(
                    f"{name}: pass the context inside the dataset ((x, context) elements), "
                    "not as a separate argument")
            return check_dataset(x, self._data_specs(), self.dtype)
        x = check_array(x, self.event_shape, self.dtype, name)
        if not self.conditional:
            if context is not None:
                raise ValueError(
                    f"{name}: this flow is not conditional but got a context, "
                    f"{describe(context)}")
            return x
        if context is None:
            raise ValueError(
                f"{name}: this flow is conditional and needs a context of shape "
                f"[batch, {self.context_size}], got None")
        context = check_array(context, [self.context_size], self.dtype, f"{name} context")
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name}: x has {x.shape[0]} rows but context has {context.shape[0]}")
        return {"x": x, "context": context}

    def _prepare_validation(self, validation_data):
        if validation_data is None:
            return None
        if isinstance(validation_data, tf.data.Dataset):
            return self._prepare(validation_data, None, "validation_data")
        if self.conditional:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise ValueError(
                    f"validation_data of a conditional flow must be (x, context), got "
                    f"{describe(validation_data)}")
            return (self._prepare(validation_data[0], validation_data[1], "validation_data"),)
        return (self._prepare(validation_data, None, "validation_data"),)

    def fit(self, x=None, y=None, *, context=None, validation_data=None, callbacks=None,
            **kwargs):
        """Trains by maximum likelihood on `x` (an array, a tensor or a `tf.data.Dataset`).

        Data is checked before training starts: a wrong shape or dtype, or NaN/Inf
        values, raise `ValueError`/`TypeError`; a non-finite loss during training stops it
        with `FloatingPointError`. Other keyword arguments are those of `keras.Model.fit`.

        Args:
            x: training data, `[N, *event_shape]`, or a dataset of batches (for a
                conditional flow, of `(x, context)` pairs).
            y: must be `None` (flows have no targets).
            context: `[N, context_size]` conditioning data of a conditional flow.
            validation_data: data like `x` (`(x, context)` for a conditional flow).
            callbacks: Keras callbacks; a `NaNGuard` is added.
        """
        if y is not None:
            raise ValueError(f"Flow.fit learns from x alone and takes no targets y, got "
                             f"y={describe(y)}; pass conditioning data as context=")
        if not self.compiled:
            raise RuntimeError("call compile() before fit()")
        data = self._prepare(x, context, "x")
        if isinstance(data, tf.data.Dataset):
            # A dataset is shuffled (or not) by its own pipeline; Keras warns otherwise.
            kwargs.setdefault("shuffle", False)
        callbacks = list(callbacks or [])
        if not any(isinstance(c, NaNGuard) for c in callbacks):
            callbacks.append(NaNGuard())
        return super().fit(data, validation_data=self._prepare_validation(validation_data),
                           callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, *, context=None, **kwargs):
        """Returns the mean NLL (and bits per dim) of `x`, like `keras.Model.evaluate`."""
        if kwargs.get("_use_cached_eval_dataset"):
            # fit() evaluating validation data it has already checked.
            return super().evaluate(x, y, **kwargs)
        if y is not None:
            raise ValueError(f"Flow.evaluate takes no targets y, got y={describe(y)}")
        return super().evaluate(self._prepare(x, context, "x"), **kwargs)

    # -- inference -------------------------------------------------------------------------

    # Inference methods that use XLA even on a CPU, where it measured faster for this family
    # (docs/benchmarks.md); a subclass lists them by name ("log_prob", "sample", ...).
    _xla_on_cpu = ()

    def _compiled(self, name, fn, specs):
        """A cached `tf.function` with batch-polymorphic signature (no retracing).

        XLA is used where an accelerator is present; on CPU plain graphs measured faster
        (docs/benchmarks.md), the same choice Keras makes for `fit` with `jit_compile="auto"`,
        except for the methods a subclass names in `_xla_on_cpu`.
        """
        if name not in self._compiled_functions:
            self._compiled_functions[name] = tf.function(
                fn, input_signature=specs,
                jit_compile=_accelerator_present() or name in self._xla_on_cpu)
        return self._compiled_functions[name]

    def _spec(self, trailing, dtype=None):
        return tf.TensorSpec([None, *trailing], dtype or self.dtype)

    def _run(self, name, fn, x, context):
        """Runs `fn(x[, context])` compiled when eager, inline when already in a graph."""
        if not tf.executing_eagerly():
            return fn(x, context)
        if context is None:
            return self._compiled(name, lambda x: fn(x, None),
                                  [self._spec(self.event_shape)])(x)
        specs = [self._spec(self.event_shape), self._spec([self.context_size])]
        return self._compiled(name, fn, specs)(x, context)

    def log_prob(self, x, context=None):
        """Log-density of `x` (`[batch, *event_shape]`) -> `[batch]`, in nats."""
        inputs = self._prepare(x, context, "x")
        x, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        return self._run("log_prob", self._log_prob, x, context)

    def _forward(self, z, context=None):
        return self.bijector.forward(z, **self._bijector_kwargs(context))

    def _inverse(self, x, context=None):
        return self.bijector.inverse(x, **self._bijector_kwargs(context))

    def forward(self, z, context=None):
        """Maps base noise `z` to data space (the sampling direction)."""
        inputs = self._prepare(z, context, "z")
        z, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        return self._run("forward", self._forward, z, context)

    def inverse(self, x, context=None):
        """Maps data `x` to base noise (the normalising direction)."""
        inputs = self._prepare(x, context, "x")
        x, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        return self._run("inverse", self._inverse, x, context)

    def _sample(self, count, seed, temperature, context=None):
        noise = tf.random.stateless_normal(
            tf.concat([[count], self.event_shape], axis=0), seed=seed, dtype=self.dtype)
        if context is not None:
            context = tf.broadcast_to(context, [count, self.context_size])
        return self._forward(noise * tf.cast(temperature, self.dtype), context)

    def sample(self, n, temperature=1.0, seed=None, context=None):
        """Draws `n` samples `[n, *event_shape]`, from base noise scaled by `temperature`.

        Args:
            n: number of samples.
            temperature: standard deviation of the base noise (`T < 1` gives smoother
                samples, as in Glow).
            seed: an int for reproducible samples, or `None`.
            context: a conditional flow's context, `[context_size]` (shared) or
                `[n, context_size]`.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if (isinstance(temperature, bool)
                or not isinstance(temperature, int | float | np.integer | np.floating)
                or not temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        seed = tf.constant([seed, 0], tf.int32)
        if self.conditional:
            if context is None:
                raise ValueError(
                    f"this flow is conditional: sample() needs a context of shape "
                    f"[{self.context_size}] or [n, {self.context_size}], got None")
            if not tf.is_tensor(context):
                context = np.asarray(context)
            if len(context.shape) == 1:
                context = context[None]
            context = check_array(context, [self.context_size], self.dtype, "context")
            if context.shape[0] not in (1, n):
                raise ValueError(
                    f"context must have 1 or n={n} rows, got {context.shape[0]}")
        elif context is not None:
            raise ValueError(
                f"this flow is not conditional but got a context, {describe(context)}")
        specs = [tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32),
                 tf.TensorSpec([], self.dtype)]
        args = [tf.constant(int(n)), seed, tf.constant(temperature, self.dtype)]
        if context is None:
            return self._compiled("sample", lambda *a: self._sample(*a, None), specs)(*args)
        specs.append(self._spec([self.context_size]))
        return self._compiled("sample", self._sample, specs)(*args, context)

    # -- export ----------------------------------------------------------------------------

    def export(self, filepath, format="tf_saved_model", verbose=False, **kwargs):
        """Writes a SavedModel with `log_prob`, `sample`, `forward` and `inverse` endpoints.

        The directory loads with `tf.saved_model.load(filepath)` in a process that never
        imports tfp_flows. Endpoints (conditional flows take a `context` argument last):

        - `log_prob(x)` -> `[batch]`
        - `sample(count, seed, temperature)` -> `[count, *event_shape]` (int32 `count` and
          `seed`, float `temperature`)
        - `forward(z)` -> `x`, `inverse(x)` -> `z`

        The model is written to a temporary directory beside `filepath` and moved into place
        only when complete, so a crash never leaves a half-written export, and an existing
        export at `filepath` is replaced only by a complete one.
        """
        if format != "tf_saved_model":
            raise ValueError(f"Flow.export writes format='tf_saved_model', got {format!r}")
        filepath = os.fspath(filepath)
        parent = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(parent, exist_ok=True)
        archive = keras.export.ExportArchive()
        archive.track(self)
        x_spec = self._spec(self.event_shape)
        context_spec = [self._spec([self.context_size])] if self.conditional else []

        def with_context(fn):
            return fn if self.conditional else lambda value: fn(value, None)

        archive.add_endpoint("log_prob", with_context(self._log_prob), [x_spec, *context_spec])
        archive.add_endpoint("forward", with_context(self._forward), [x_spec, *context_spec])
        archive.add_endpoint("inverse", with_context(self._inverse), [x_spec, *context_spec])
        sample_specs = [tf.TensorSpec([], tf.int32, name="count"),
                        tf.TensorSpec([], tf.int32, name="seed"),
                        tf.TensorSpec([], self.dtype, name="temperature")]

        def sample(count, seed, temperature, context=None):
            return self._sample(count, tf.stack([seed, 0]), temperature, context)

        archive.add_endpoint("sample", sample, sample_specs + context_spec)
        staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
        try:
            archive.write_out(staging, verbose=verbose, **kwargs)
            # mkdtemp makes the directory private (0700); give it the usual permissions.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)
            if os.path.isdir(filepath):
                old = tempfile.mkdtemp(prefix=".replaced-", dir=parent)
                os.rename(filepath, os.path.join(old, "model"))
                os.rename(staging, filepath)
                shutil.rmtree(old)
            else:
                os.rename(staging, filepath)
        finally:
            if os.path.isdir(staging):
                shutil.rmtree(staging)
        return filepath

    # -- config ----------------------------------------------------------------------------

    def get_config(self):
        return {**super().get_config(), "event_shape": list(self.event_shape),
                "context_size": self.context_size}
