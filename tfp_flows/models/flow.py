"""The Flow base model: a `keras.Model` around a `tfd.TransformedDistribution`."""

import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import _replicas, _validation, bijectors, distributions, nets
from tfp_flows._atomic import staged
from tfp_flows.bijectors import FlowChain
from tfp_flows.bijectors.base import check_event_shape
from tfp_flows.models._data import Support, check_array, check_dataset, describe
from tfp_flows.models._variables import ModuleVariables
from tfp_flows.training import BitsPerDim, NaNGuard

__all__ = ["Flow"]

tfd = tfp.distributions


def _accelerator_present():
    return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())


class Flow(ModuleVariables, keras.Model):
    """Base class of every flow model: owns the conditioners, builds the distribution once.

    Subclasses create their Keras layers in `__init__`, keep them as attributes (so Keras
    tracks, trains and saves them) and call `self._set_bijectors(bijectors)` with the
    bijectors in data -> noise order, the order data meets them in `log_prob` and the
    order of `tfb.Chain`'s list (the convention of every bijector list in
    `tfp_flows.models`). The resulting `distribution` is an ordinary
    `tfd.TransformedDistribution` over a standard Normal.

    `compile()` needs no loss: training minimises the negative log-likelihood (nats per
    example, reported as `loss`) and reports `bits_per_dim`. `fit(x)` takes data without
    targets; a conditional flow takes `fit(x, context=c)`.

    **Variables.** `trainable_weights` lists the Keras variables (Keras trains and saves
    them); `trainable_variables`, the `tf.Module` name TFP uses, lists the `tf.Variable`s
    behind them in the same order, so that
    `tfp.vi.fit_surrogate_posterior(..., trainable_variables=flow.trainable_variables)`
    and `tf.GradientTape` work with them as with any `tf.Variable`s (see docs/tfp.md).

    **Bound flows.** A flow may model its data through an inference surjection
    (`tfp_flows.distributions.InferenceSurjection`: dequantization, noise augmentation):
    the bijectors model a latent `z`, and the data are `x = decode(z)`. Its density is
    then a bound: training minimises the negative one-sample ELBO
    `-(log p_flow(z) - log q(z | x))`, `z ~ q(z | x)`; `log_prob(x, num_samples=k)` is the
    importance-weighted bound (IWBO), a stochastic lower bound on `log p(x)` that tightens
    with `k`; sampling stays exact (`decode` of a flow sample). `log_prob_estimator` says
    which estimator `log_prob` and `evaluate` use. See docs/bounds.md.

    Args:
        event_shape: shape of one example, `[D]` or `[H, W, C]`; with a `surjection`, the
            shape the bijectors act on (the surjection's `latent_event_shape`), while the
            flow's `event_shape` becomes that of the data.
        context_size: size of the context vector of a conditional flow, or `None`.
        dequantization: `None` (the data are continuous, or already dequantized),
            `"uniform"` or `"variational"`: the flow takes the discrete data itself
            (integers in `[0, num_bins)`, needs `num_bins`) and dequantizes it with
            `UniformDequantization` or with a learned `VariationalDequantization` (Flow++;
            its default sizes suit small images, pass `surjection=` for others), so
            `log_prob` is a bound on the log-probability of the discrete data.
        surjection: an `InferenceSurjection` (e.g. `NormalAugmentation`, or a
            `VariationalDequantization` of custom size) between the data and the flow's
            event shape, or `None`. A discrete surjection may come with the flow's
            `num_bins`, which must then equal its own.
        num_eval_samples: default number `k` of importance samples of `log_prob` and
            `evaluate` for a bound flow; `None`: the surjection's
            `default_num_eval_samples` (1, the ELBO and training objective, for fixed
            `q`s; 64 for variational dequantization).
        standardize: `None`, or a `tff.bijectors.Standardize` (or its `get_config()` dict)
            put at the data end: the flow models `(x - mean) / std` and counts the log-det,
            so its density stays that of `x` (continuous data without `num_bins` or a
            surjection).
        **kwargs: passed to `keras.Model` (`name`, `dtype`).
    """

    def __init__(self, event_shape, context_size=None, dequantization=None, surjection=None,
                 num_eval_samples=None, standardize=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(standardize, dict):
            standardize = bijectors.Standardize(**standardize)
        if standardize is not None and not isinstance(standardize, bijectors.Standardize):
            raise TypeError(f"standardize must be None or a tfp_flows.bijectors.Standardize, "
                            f"got {type(standardize).__name__}")
        self.standardize = standardize
        self.event_shape = check_event_shape(event_shape)
        self.context_size = _validation.check_positive_int("context_size", context_size,
                                                           allow_none=True)
        self.dequantization = _validation.check_choice(
            "dequantization", dequantization, (None, "uniform", "variational"))
        if isinstance(surjection, dict):
            surjection = keras.saving.deserialize_keras_object(surjection)
        if surjection is not None:
            if not isinstance(surjection, distributions.InferenceSurjection):
                raise TypeError(f"surjection must be an InferenceSurjection or None, got "
                                f"{type(surjection).__name__}")
            if dequantization is not None:
                raise ValueError(f"pass either dequantization or surjection, got "
                                 f"dequantization={dequantization!r} and {surjection!r}")
            if surjection.latent_event_shape != self.event_shape:
                raise ValueError(
                    f"the surjection's latent_event_shape {surjection.latent_event_shape} "
                    f"must equal the flow's event_shape {self.event_shape}")
        self._surjection_argument = surjection
        self._num_eval_samples_argument = _validation.check_positive_int(
            "num_eval_samples", num_eval_samples, allow_none=True)
        # Resolved by _set_bijectors once the surjection is known.
        self.num_eval_samples = self._num_eval_samples_argument or 1
        self.surjection = None
        self.latent_event_shape = self.event_shape
        self.num_dims = int(np.prod(self.event_shape))
        self.bits_per_dim_tracker = BitsPerDim(self.num_dims)
        self._compiled_functions = {}

    # -- construction ----------------------------------------------------------------------

    def _set_bijectors(self, bijectors, surjection=None):
        """Builds the chain, base and distribution, then creates every weight.

        Args:
            bijectors: the bijectors in data -> noise order (`tfb.Chain`'s order); they
                act on the flow's `event_shape` as the builder passed it.
            surjection: an `InferenceSurjection` between the data and that shape, for a
                family that builds its own (a learned `q` keeps its Keras layers in
                `surjection.layers`, which the model tracks). `None` uses the
                `dequantization`/`surjection` arguments of the constructor, if any.
        """
        dtype = self.dtype
        surjection = self._resolve_surjection(surjection)
        if self.standardize is not None:
            if surjection is not None or getattr(self, "num_bins", None) is not None:
                raise ValueError("standardize needs continuous data: it cannot be combined "
                                 "with num_bins, dequantization or a surjection")
            if self.standardize.event_shape != self.event_shape:
                raise ValueError(f"standardize has the shape {self.standardize.event_shape}, "
                                 f"which must be the event_shape {self.event_shape}")
            bijectors = [self.standardize, *bijectors]
        self.bijector = FlowChain(list(bijectors), name="flow")
        base = tfd.Sample(
            tfd.Normal(tf.constant(0.0, dtype), tf.constant(1.0, dtype)),
            sample_shape=self.event_shape, name="base")
        # No explicit name: TFP takes an explicit name as the component's name in a
        # JointDistribution, which then clashes with the name a model refers to it by
        # (`JointDistributionSequential([flow.distribution, lambda z: ...])`).
        latent = tfd.TransformedDistribution(base, self.bijector)
        self.latent_distribution = latent
        self.latent_event_shape = list(self.event_shape)
        if surjection is None:
            self.distribution = latent
        else:
            self.surjection = surjection
            if self._num_eval_samples_argument is None:
                self.num_eval_samples = surjection.default_num_eval_samples
            # Keras tracks only Keras layers: q's layers become attributes of the model.
            self.surjection_layers = list(surjection.layers)
            # Training noise: stateless draws from a tracked seed, one per step, so runs
            # are reproducible under keras.utils.set_random_seed.
            self.noise_seed_generator = keras.random.SeedGenerator(name="noise_seed")
            self.event_shape = list(surjection.event_shape)
            self.num_dims = int(np.prod(self.event_shape))
            self.bits_per_dim_tracker.num_dims = self.num_dims
            self.distribution = distributions.LowerBoundDistribution(
                latent, surjection, num_samples=self.num_eval_samples)
        self.bits_per_dim_tracker.estimator = self.log_prob_estimator
        context = None if self.context_size is None else tf.zeros([1, self.context_size], dtype)
        self._log_prob(tf.zeros([1, *self.latent_event_shape], dtype), context)
        if surjection is not None:
            # Creates the weights the surjection computes with (q's, and those of the
            # bijectors inside an InferenceChain), so that a loaded model has variables to
            # restore them into.
            surjection.encode(tf.zeros([1, *self.event_shape], dtype), seed=0, context=context)
        self.built = True
        # TFP finds variables through tf.Module attributes (distribution.trainable_variables,
        # tfp.vi's default); the bijectors use every weight but those of q's layers.
        surjection_weights = {id(w) for layer in getattr(self, "surjection_layers", [])
                              for w in layer.weights}
        self.bijector.expose_variables(
            [w for w in self.weights if id(w) not in surjection_weights])

    def _resolve_surjection(self, surjection):
        if surjection is not None:
            if not isinstance(surjection, distributions.InferenceSurjection):
                raise TypeError(f"surjection must be an InferenceSurjection or None, got "
                                f"{type(surjection).__name__}")
            if self.dequantization is not None or self._surjection_argument is not None:
                raise ValueError(
                    f"{type(self).__name__} builds its own surjection ({surjection!r}); it "
                    f"takes no dequantization= or surjection= argument")
            return surjection
        num_bins = getattr(self, "num_bins", None)
        if self.dequantization is not None:
            if num_bins is None:
                raise ValueError(
                    f"dequantization={self.dequantization!r} needs num_bins (the number of "
                    f"levels of the discrete data), got num_bins=None")
            if self.dequantization == "uniform":
                return distributions.UniformDequantization(num_bins, self.event_shape)
            return distributions.VariationalDequantization(
                num_bins, self.event_shape, dtype=self.dtype_policy.name)
        surjection = self._surjection_argument
        if surjection is not None and num_bins is not None:
            # The flow's num_bins scales the dequantized latent in [0, num_bins): it fits a
            # dequantizing surjection of the same levels, and nothing else.
            if not surjection.discrete:
                raise ValueError(
                    f"num_bins={num_bins} acts on the flow's latent; it cannot be combined "
                    f"with surjection={surjection!r}, whose data are continuous")
            if surjection.num_bins != num_bins:
                raise ValueError(
                    f"the flow's num_bins={num_bins} does not match the surjection's "
                    f"num_bins={surjection.num_bins} ({surjection!r})")
        return surjection

    @property
    def log_prob_estimator(self):
        """What `log_prob` and `evaluate` compute, for reports: `"exact"` for a bijective
        flow; for a bound flow `"elbo"` (`num_eval_samples=1`) or `"iwbo(k=K)"`."""
        if self.surjection is None:
            return "exact"
        return "elbo" if self.num_eval_samples == 1 else f"iwbo(k={self.num_eval_samples})"

    def _latent_support(self):
        """Values the flow's bijective density accepts, from `num_bins`/`logit_alpha`.

        `num_bins` bounds the latent only where the latent is the (dequantized) data: a
        surjection whose latent has another shape (noise appended, or an InferenceChain's
        Gaussian vector) puts no bound on it.
        """
        num_bins = getattr(self, "num_bins", None)
        if num_bins is None or list(self.latent_event_shape) != list(self.event_shape):
            return None
        logit_alpha = getattr(self, "logit_alpha", None)
        reason = f"num_bins={num_bins}"
        if logit_alpha is not None:
            reason += f" and logit_alpha={logit_alpha}"
        # With alpha = 0 the logit of 0 is -inf: the support is open at 0.
        return Support(0.0, float(num_bins), open_low=logit_alpha == 0, reason=reason)

    def _data_support(self):
        """Values the flow's data may take (checked in fit/log_prob/evaluate)."""
        if self.surjection is None:
            return self._latent_support()
        if self.surjection.discrete:
            reason = (f"{self.dequantization} dequantization" if self.dequantization
                      else type(self.surjection).__name__)
            return Support(0.0, float(self.surjection.num_bins), integers=True,
                           reason=f"{reason}, num_bins={self.surjection.num_bins}")
        return None

    def _data_space_steps(self, num_bins, logit_alpha):
        """The first bijectors (data -> noise order) mapping the data's space to model space.

        With `num_bins=K` the data are dequantized levels in `[0, K)`: `LevelScaling` maps
        them to `[-1/2, 1/2)`, or, with `logit_alpha`, to `[0, 1)` followed by
        `LogitTransform(logit_alpha)`. Every log-det counts, so the density (and
        `bits_per_dim`) is that of the dequantized data. Sets `num_bins` and `logit_alpha`.
        """
        _validation.check_int("num_bins", num_bins, minimum=2, allow_none=True)
        if logit_alpha is not None and num_bins is None:
            raise ValueError("logit_alpha needs num_bins: the logit transform acts on data "
                             "scaled to [0, 1)")
        self.num_bins = num_bins
        self.logit_alpha = logit_alpha
        steps = []
        if num_bins is not None:
            steps.append(bijectors.LevelScaling(num_bins, self.event_shape,
                                                centered=logit_alpha is None))
        if logit_alpha is not None:
            steps.append(bijectors.LogitTransform(self.event_shape, logit_alpha,
                                                  name="logit_transform"))
        return steps

    @property
    def conditional(self):
        """Whether this flow takes a `context` tensor."""
        return self.context_size is not None

    def _bijector_kwargs(self, context):
        return {} if context is None else {"context": context}

    def _log_prob(self, x, context):
        """Exact log-density of the flow's own event (the latent of a bound flow)."""
        return self.latent_distribution.log_prob(
            x, bijector_kwargs=self._bijector_kwargs(context))

    def _bound(self, x, context, num_samples, seed):
        """IWBO of data `x` with `num_samples` samples and stateless `seed` (bound flows)."""
        return distributions.importance_weighted_bound(
            self._log_prob, self.surjection, x, num_samples, seed=seed, context=context)

    # -- Keras training --------------------------------------------------------------------

    def call(self, inputs, training=False):
        """Returns `log_prob` of `inputs` (a tensor, or a dict with `x` and `context`)."""
        # Keras casts inputs to the compute dtype (float16 under mixed precision); the
        # density and its log-dets are computed in the variable dtype (float32).
        if isinstance(inputs, dict):
            context = inputs.get("context")
            x = tf.cast(inputs["x"], self.dtype)
            context = None if context is None else tf.cast(context, self.dtype)
        else:
            x, context = tf.cast(inputs, self.dtype), None
        if self.surjection is None:
            return self._log_prob(x, context)
        # A bound flow trains on the one-sample ELBO and evaluates the IWBO with
        # num_eval_samples samples (the ELBO again by default).
        # Under tf.distribute every replica reads the same seed and draws its own noise.
        seed = _replicas.replica_seed(self.noise_seed_generator.next())
        return self._bound(x, context, 1 if training else self.num_eval_samples, seed)

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
            self.optimizer.build(self.trainable_weights)

    def _build_optimizer(self):
        """Creates the optimizer's variables before `fit` traces its step.

        Keras creates them inside the first trace otherwise, and `tf.function` traces a
        function that creates variables twice: building them first halved the time to the
        first training step of a Glow. Layers not built yet (a flow whose conditioners
        build on their first call) leave it to Keras.
        """
        if (self.optimizer is not None and not self.optimizer.built
                and all(layer.built for layer in self._flatten_layers())):
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _actnorms(self):
        return [layer for layer in self._flatten_layers()
                if isinstance(layer, nets.ActNormParams)]

    def _distributed(self):
        """Whether training runs under a `tf.distribute` strategy, where every step carries
        the ActNorms' initialisation itself (`ActNormParams.maybe_initialize_from`)."""
        return (tf.distribute.has_strategy()
                or self.distribute_strategy is not tf.distribute.get_strategy())

    def make_train_function(self, force=False):
        """Keras' training step, traced anew when some ActNorm is not initialised but a step
        exists already: that step may have been traced with every ActNorm initialised, so
        without initialisation branches (a flow trained, then given a fresh flow's weights),
        and `train_on_batch` would train them from the identity; a later `fit` would then
        initialise them over what they learnt. The new step initialises them first, as a
        fresh flow's first step does. Under a `tf.distribute` strategy every step initialises
        them anyway.
        """
        if (self.train_function is not None and not force and not self._distributed()
                and any(layer.built and not layer.initialized_now()
                        for layer in self._actnorms())):
            force = True
        return super().make_train_function(force)

    def _initialize_actnorms(self, data, fit_kwargs):
        """Runs the flow once in training mode on one training batch when it has ActNorm
        layers not initialised yet, so they initialise from it before `fit` traces its
        step, which then has no initialisation branches (this cut a Glow's time to its
        first step by ~2 s). The batch is `fit`'s batch size of the training rows (those
        `validation_split` leaves): random rows, or with `shuffle=False` the first ones; of
        a dataset, its first element. Under a `tf.distribute` strategy the step
        initialises them itself.
        """
        actnorms = self._actnorms()
        if (not actnorms or self._distributed()
                or all(layer.built and layer.initialized_now() for layer in actnorms)):
            return
        if isinstance(data, tf.data.Dataset):
            batch = keras.utils.unpack_x_y_sample_weight(next(iter(data.take(1))))[0]
        else:
            rows = int(tf.nest.flatten(data)[0].shape[0])
            rows -= int(rows * float(fit_kwargs.get("validation_split") or 0.0))
            size = min(rows, int(fit_kwargs.get("batch_size") or 32))
            if fit_kwargs.get("shuffle", True):
                # NumPy's generator, so that Keras' and TF's random streams are untouched.
                index = np.sort(np.random.default_rng(0).choice(rows, size, replace=False))
            else:
                index = np.arange(size)
            batch = tf.nest.map_structure(lambda t: tf.gather(t, index), data)
        self(batch, training=True)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The mean negative log-likelihood of the batch, `y_pred` being its `log_prob`.

        Under a `tf.distribute` strategy each replica returns its share of the mean over
        the global batch (see `tfp_flows._replicas.global_mean_loss`), so the
        update and the reported `loss` are those of one device given the whole batch.
        """
        log_prob = y_pred
        if sample_weight is None:
            weighted, weight = log_prob, tf.shape(log_prob)[0]
        else:
            weight = tf.cast(tf.reshape(sample_weight, [-1]), log_prob.dtype)
            weighted = weight * log_prob
            weight = tf.reduce_sum(weight)
        nll = _replicas.global_mean_loss(-tf.reduce_sum(weighted), weight,
                                         tf.shape(log_prob)[0])
        for extra in self.losses:
            nll = nll + _replicas.per_replica(tf.cast(tf.reduce_sum(extra), nll.dtype))
        return nll

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.bits_per_dim_tracker.update_state(y_pred, sample_weight)
        return _replicas.step_logs(self.get_metrics_result())

    def _data_specs(self, shape=None):
        specs = {"x": self.event_shape if shape is None else shape}
        if self.conditional:
            specs["context"] = [self.context_size]
        return specs

    def _prepare(self, x, context, name, space="data", extra_batch_dims=False):
        """Checks `x` (and `context`) and packs them the way `call` expects.

        `space` says what `x` is: `"data"` (checked against the data's shape and support),
        `"latent"` (the flow's own event, e.g. dequantized levels) or `"noise"` (base
        noise, shape-checked only). With `extra_batch_dims` (`log_prob`), `x` may have
        several batch axes and `context` any batch axes that broadcast to them (none: one
        context for every example); otherwise both are `[batch, ...]` with equal rows.
        """
        if space == "data":
            shape, support = self.event_shape, self._data_support()
        else:
            shape = self.latent_event_shape
            support = self._latent_support() if space == "latent" else None
        if isinstance(x, tf.data.Dataset):
            if context is not None:
                raise ValueError(
                    f"{name}: pass the context inside the dataset ((x, context) elements), "
                    "not as a separate argument")
            return check_dataset(x, self._data_specs(shape), self.dtype, support=support)
        x = check_array(x, shape, self.dtype, name, support=support,
                        extra_batch_dims=extra_batch_dims)
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
        if extra_batch_dims:
            if not tf.is_tensor(context):
                context = np.asarray(context)
            if len(context.shape) == 1:  # one context for the whole batch
                context = context[None]
        context = check_array(context, [self.context_size], self.dtype, f"{name} context",
                              extra_batch_dims=extra_batch_dims)
        if not extra_batch_dims and context.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name}: x has {x.shape[0]} rows but context has {context.shape[0]}")
        if extra_batch_dims:
            _check_broadcast(name, x.shape[:x.shape.rank - len(shape)], context.shape[:-1])
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

        Data is checked before training starts: a wrong shape or dtype, NaN/Inf values, or
        values outside the flow's support (`[0, num_bins)` for a flow with `num_bins`;
        integers in `[0, num_bins)` for a flow with a dequantizer) raise
        `ValueError`/`TypeError` (a dataset is checked batch by batch as it streams); a
        non-finite loss during training stops it with `FloatingPointError`. Other keyword
        arguments are those of `keras.Model.fit`.

        A bound flow (see the class docstring) minimises the negative one-sample ELBO, with
        fresh noise `z ~ q(z | x)` at every step; its `loss` is that bound.

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
        data = _non_empty(self._prepare(x, context, "x"), "fit")
        if isinstance(data, tf.data.Dataset):
            # A dataset is shuffled (or not) by its own pipeline; Keras warns otherwise.
            kwargs.setdefault("shuffle", False)
        callbacks = list(callbacks or [])
        if not any(isinstance(c, NaNGuard) for c in callbacks):
            callbacks.append(NaNGuard())
        self._initialize_actnorms(data, kwargs)
        self._build_optimizer()
        return super().fit(data, validation_data=self._prepare_validation(validation_data),
                           callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, *, context=None, **kwargs):
        """Returns the mean NLL (and bits per dim) of `x`, like `keras.Model.evaluate`.

        For a bound flow the NLL is that of the estimator named by `log_prob_estimator`
        (the IWBO with `num_eval_samples` samples; the ELBO by default): an upper bound on
        the exact NLL, and so are the reported bits per dim.
        """
        if kwargs.get("_use_cached_eval_dataset"):
            # fit() evaluating validation data it has already checked.
            return super().evaluate(x, y, **kwargs)
        if y is not None:
            raise ValueError(f"Flow.evaluate takes no targets y, got y={describe(y)}")
        return super().evaluate(_non_empty(self._prepare(x, context, "x"), "evaluate"),
                                **kwargs)

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
        """Runs `fn(x[, context])` compiled when eager, inline when already in a graph.

        `x` has the flow's own event shape (`latent_event_shape`).
        """
        if not tf.executing_eagerly():
            return fn(x, context)
        if context is None:
            return self._compiled(name, lambda x: fn(x, None),
                                  [self._spec(self.latent_event_shape)])(x)
        specs = [self._spec(self.latent_event_shape), self._spec([self.context_size])]
        return self._compiled(name, fn, specs)(x, context)

    def log_prob(self, x, context=None, *, num_samples=None, seed=None):
        """Log-density of `x` (`[..., *event_shape]`) -> `[...]`, in nats.

        For a bound flow this is the importance-weighted bound (IWBO)
        `log (1/k) sum_i p_flow(z_i) / q(z_i | x)`, `z_i ~ q(z | x)`: a stochastic lower
        bound on `log p(x)` whose expectation is non-decreasing in `k = num_samples` and
        tends to `log p(x)` (Burda et al., arXiv:1509.00519). `k = 1` is the ELBO, the
        training objective. The `k` samples are drawn in one vectorised pass (the batch is
        tiled `k` times), so memory grows as `k * batch`. A flow with a dequantizer takes
        the discrete data (integers in `[0, num_bins)`, integer or float dtype) and bounds
        their log-probability. For a bijective flow the density is exact and `num_samples`
        and `seed` change nothing.

        Like `distribution.log_prob`, it takes any number (at least one) of batch axes:
        `x` of shape `[4, 3, *event_shape]` gives `[4, 3]` (`fit` and `evaluate` take
        `[batch, *event_shape]`).

        Args:
            x: data, `[..., *event_shape]` with at least one batch axis.
            context: a conditional flow's context, `[..., context_size]`, whose batch axes
                broadcast to those of `x` (`[context_size]`: one context for all).
            num_samples: `k`, a positive int; `None` uses `num_eval_samples` (set in the
                constructor, else the surjection's default: 1, or 64 for variational
                dequantization).
            seed: an int for a reproducible bound, or `None`.
        """
        if num_samples is not None:
            num_samples = _validation.check_positive_int("num_samples", num_samples)
        _check_seed(seed)
        inputs = self._prepare(x, context, "x", extra_batch_dims=True)
        x, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        x, context, batch_shape = self._flatten_batch(x, context)
        log_prob = self._flat_log_prob(x, context, num_samples, seed)
        return log_prob if batch_shape is None else tf.reshape(log_prob, batch_shape)

    def _flatten_batch(self, x, context):
        """`x` as `[batch, *event_shape]` and `context` broadcast to its rows.

        Returns `(x, context, batch_shape)`, `batch_shape` being `x`'s batch axes when
        there were several (to reshape results with), else `None`.
        """
        event_rank = len(self.event_shape)
        batch_shape = None
        if x.shape.rank != event_rank + 1:
            batch_shape = tf.shape(x)[:tf.rank(x) - event_rank]
            x = tf.reshape(x, [-1, *self.event_shape])
        if context is not None and (batch_shape is not None or context.shape.rank != 2
                                    or context.shape[0] != x.shape[0]):
            rows = tf.shape(x)[:1] if batch_shape is None else batch_shape
            context = tf.reshape(
                tf.broadcast_to(context, tf.concat([rows, [self.context_size]], 0)),
                [-1, self.context_size])
        return x, context, batch_shape

    def _flat_log_prob(self, x, context, num_samples, seed):
        if self.surjection is None:
            return self._run("log_prob", self._log_prob, x, context)
        num_samples = num_samples or self.num_eval_samples
        seed = _seed_pair(seed)

        def bound(x, seed, context):
            return self._bound(x, context, num_samples, seed)

        if not tf.executing_eagerly():
            return bound(x, seed, context)
        # k is static in each compiled function (one per k), so tiling has static
        # multiples and compiles under XLA too.
        specs = [self._spec(self.event_shape), tf.TensorSpec([2], tf.int32)]
        name = f"log_prob_k{num_samples}"
        if context is None:
            return self._compiled(name, lambda x, s: bound(x, s, None), specs)(x, seed)
        specs.append(self._spec([self.context_size]))
        return self._compiled(name, bound, specs)(x, seed, context)

    def elbo(self, x, context=None, *, seed=None):
        """The one-sample evidence lower bound `log p_flow(z) - log q(z | x)`, `z ~ q(z|x)`.

        Equal to `log_prob(x, num_samples=1)` (the same value for the same `seed`), and to
        the exact `log_prob(x)` for a bijective flow.
        """
        return self.log_prob(x, context, num_samples=1, seed=seed)

    def _forward(self, z, context=None):
        return self.bijector.forward(z, **self._bijector_kwargs(context))

    def _inverse(self, x, context=None):
        return self.bijector.inverse(x, **self._bijector_kwargs(context))

    def forward(self, z, context=None):
        """Maps base noise `z` to data space (the sampling direction).

        For a bound flow both ends are the flow's own event shape: `forward` stops at the
        latent (apply `flow.surjection.decode` to reach the data).
        """
        inputs = self._prepare(z, context, "z", space="noise")
        z, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        return self._run("forward", self._forward, z, context)

    def inverse(self, x, context=None):
        """Maps data `x` to base noise (the normalising direction).

        For a bound flow `x` is a latent (e.g. dequantized levels), the bijective part.
        """
        inputs = self._prepare(x, context, "x", space="latent")
        x, context = (inputs["x"], inputs["context"]) if self.conditional else (inputs, None)
        return self._run("inverse", self._inverse, x, context)

    def _sample(self, count, seed, temperature, context=None):
        noise = tf.random.stateless_normal(
            tf.concat([[count], self.latent_event_shape], axis=0), seed=seed, dtype=self.dtype)
        if context is not None:
            context = tf.broadcast_to(context, [count, self.context_size])
        latent = self._forward(noise * tf.cast(temperature, self.dtype), context)
        if self.surjection is None:
            return latent
        return self.surjection.decode(latent, context=context)

    def sample(self, n, temperature=1.0, seed=None, context=None):
        """Draws `n` samples `[n, *event_shape]`, from base noise scaled by `temperature`.

        Sampling is exact and one pass for every flow: a bound flow decodes its flow's
        sample (a dequantizer flow returns integer levels, as floats).

        Args:
            n: number of samples.
            temperature: standard deviation of the base noise (`T < 1` gives smoother
                samples, as in Glow).
            seed: an int for reproducible samples, or `None`.
            context: a conditional flow's context, `[context_size]` (shared) or
                `[n, context_size]`.
        """
        _validation.check_positive_int("n", n)
        if (tf.is_tensor(temperature) or isinstance(temperature, np.ndarray)) and \
                temperature.shape == () and tf.as_dtype(temperature.dtype).is_floating and \
                tf.executing_eagerly():
            temperature = float(temperature)  # a scalar tensor or array holding a number
        _validation.check_positive_number("temperature", temperature)
        _validation.check_int("seed", seed, allow_none=True)
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

        - `log_prob(x)` -> `[batch]`; for a bound flow `log_prob(x, num_samples, seed)`
          (int32 scalars) -> the IWBO with `num_samples` samples, equal to
          `flow.log_prob(x, num_samples=k, seed=s)` for the same seed.
        - `sample(count, seed, temperature)` -> `[count, *event_shape]` (int32 `count` and
          `seed`, float `temperature`)
        - `forward(z)` -> `x`, `inverse(x)` -> `z` (for a bound flow, between base noise
          and the latent)

        The model is written to a temporary directory beside `filepath` and moved into place
        only when complete, so a crash never leaves a half-written export, and an existing
        export at `filepath` is replaced only by a complete one.
        """
        if format != "tf_saved_model":
            raise ValueError(f"Flow.export writes format='tf_saved_model', got {format!r}")
        filepath = os.fspath(filepath)
        archive = keras.export.ExportArchive()
        archive.track(self)
        x_spec = self._spec(self.event_shape)
        latent_spec = self._spec(self.latent_event_shape)
        context_spec = [self._spec([self.context_size])] if self.conditional else []

        def with_context(fn):
            return fn if self.conditional else lambda value: fn(value, None)

        if self.surjection is None:
            archive.add_endpoint("log_prob", with_context(self._log_prob),
                                 [x_spec, *context_spec])
        else:
            def bound(x, num_samples, seed, context=None):
                return self._bound(x, context, num_samples, tf.stack([seed, 0]))

            archive.add_endpoint(
                "log_prob", bound,
                [x_spec, tf.TensorSpec([], tf.int32, name="num_samples"),
                 tf.TensorSpec([], tf.int32, name="seed"), *context_spec])
        archive.add_endpoint("forward", with_context(self._forward),
                             [latent_spec, *context_spec])
        archive.add_endpoint("inverse", with_context(self._inverse),
                             [latent_spec, *context_spec])
        sample_specs = [tf.TensorSpec([], tf.int32, name="count"),
                        tf.TensorSpec([], tf.int32, name="seed"),
                        tf.TensorSpec([], self.dtype, name="temperature")]

        def sample(count, seed, temperature, context=None):
            return self._sample(count, tf.stack([seed, 0]), temperature, context)

        archive.add_endpoint("sample", sample, sample_specs + context_spec)
        with staged(filepath) as staging:
            archive.write_out(staging, verbose=verbose, **kwargs)
        return filepath

    # -- config ----------------------------------------------------------------------------

    def get_config(self):
        config = {**super().get_config(),
                  # The shape the builder built its bijectors for (the latent of a bound flow).
                  "event_shape": list(self.latent_event_shape),
                  "context_size": self.context_size}
        if self.dequantization is not None:
            config["dequantization"] = self.dequantization
        if self._surjection_argument is not None:
            config["surjection"] = keras.saving.serialize_keras_object(
                self._surjection_argument)
        if self._num_eval_samples_argument is not None:
            config["num_eval_samples"] = self._num_eval_samples_argument
        if self.standardize is not None:
            config["standardize"] = self.standardize.get_config()
        return config


def _non_empty(data, method):
    """`data` (as `_prepare` returns it) unless it is an array of zero examples."""
    x = data["x"] if isinstance(data, dict) else data
    if not isinstance(data, tf.data.Dataset) and x.shape[0] == 0:
        raise ValueError(f"Flow.{method} got x with 0 examples (shape {x.shape.as_list()}); "
                         "pass at least one")
    return data


def _check_broadcast(name, x_batch, context_batch):
    """Raises ValueError unless the context's batch axes broadcast to those of `x`."""
    x_batch, context_batch = x_batch.as_list(), context_batch.as_list()
    if len(x_batch) == len(context_batch) == 1:
        fits = context_batch[0] in (None, 1) or x_batch[0] in (None, context_batch[0])
        if not fits:
            raise ValueError(
                f"{name}: x has {x_batch[0]} rows but context has {context_batch[0]} (a "
                f"context has one row per example, or one row for all)")
        return
    fits = len(context_batch) <= len(x_batch) and all(
        c is None or x is None or c in (1, x)
        for c, x in zip(reversed(context_batch), reversed(x_batch), strict=False))
    if not fits:
        raise ValueError(
            f"{name}: the context's batch axes {context_batch} do not broadcast to x's "
            f"batch axes {x_batch}")


def _check_seed(seed):
    _validation.check_int("seed", seed, allow_none=True)


def _seed_pair(seed):
    """`None` or an int -> an int32 `[seed, 0]` stateless seed (`None` draws one)."""
    _check_seed(seed)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return tf.constant([int(seed), 0], tf.int32)
