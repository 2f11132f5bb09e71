"""The NanoFlow builder: Glow-style steps whose couplings (or, on vectors, masked
autoregressive transforms) share one density estimator."""

import keras

from tfp_flows import _validation, bijectors, nets
from tfp_flows.models._sharing import SHARINGS, SharedTrunkSteps
from tfp_flows.models.flow import Flow
from tfp_flows.models.multiscale import multiscale_bijector
from tfp_flows.nets._validation import check_units

__all__ = ["SCHEMES", "SHARINGS", "NanoFlow"]

# Which entries of a step condition which: a coupling's kept half, or (vectors only) the
# dimensions before each one in a MADE order.
SCHEMES = ("coupling", "autoregressive")


@keras.saving.register_keras_serializable(package="tfp_flows")
class NanoFlow(SharedTrunkSteps, Flow):
    """NanoFlow: `K` flow steps whose couplings share one estimator, told apart by a
    flow indication embedding.

    Each step is Glow's, in the data -> noise direction: ActNorm, an invertible 1x1
    convolution (a learned invertible linear map of the features of a vector), and a
    coupling `y_b = tau(x_b; theta_k(x_a))` whose kept half `x_a` is the first half of the
    channels, as in the original code (the 1x1 convolutions mix which entries are kept).
    The coupling's conditioner is `theta_k(x_a) = P_k(g(x_a; e_k))`: `g` is one trunk
    shared by the steps (a `nets.ConvTrunk` per level for images, as in the original; one
    `nets.MLPTrunk` for vectors), `P_k` the step's zero-initialised 1x1 projection and
    `e_k` its flow indication embedding (`nets.SharedTrunkConditioner`). `sharing` selects
    the paper's variants:

    - `"none"`: `K` independent trunks and projections (Glow's layout, the baseline);
    - `"naive"`: one trunk and one projection serve every step of a level, no embedding
      (NanoFlow-naive);
    - `"decomposed"`: one trunk, a projection per step (NanoFlow-decomp);
    - `"nanoflow"`: decomposed plus a per-step embedding, entering the trunk as
      `embedding="concat"` (a learned map `[H, W, E]`, or vector `[E]`, appended to the
      trunk's input), `"bias"` (a vector `[E]` the trunk projects to a bias of each hidden
      layer) or `"gate"` (a multiplicative gate on every hidden unit, initialised to one),
      or a list of them (the original image model is `["concat", "gate"]`).

    With a trunk of `T` parameters and per-step parts of `p` parameters (projection plus
    embedding), a level's conditioners hold `K T + K p` parameters with `sharing="none"`
    and `T + K p` otherwise (`T + p` with `"naive"`), so long flows are cheap.

    On vectors, `scheme="autoregressive"` makes each step ActNorm, the invertible linear
    map and a masked autoregressive transform (`tff.bijectors.MaskedAutoregressiveFlow`,
    MAF): `y_i = tau^{-1}(x_i; theta_{k,i}(x_{<i}))` in the density direction, with
    `theta_k(x) = P_k(g(x; e_k))` where `g` is one shared `nets.MADETrunk` (masked hidden
    layers) and `P_k` the step's zero-initialised `nets.MaskedStepProjection`, so the
    parameters of dimension `i` read only the dimensions before it. Every step uses the
    trunk's left-to-right order; the learned linear maps between them (random rotations
    at initialisation) change which directions come first. The density takes one trunk
    pass per step, sampling `D` passes per step, with the step's embedding terms computed
    once per sampling call.

    Images follow Glow's multi-scale structure (`multiscale_bijector`): `num_levels`
    levels of squeeze, `num_steps` steps, a learned split prior (an affine coupling with a
    zero-initialised 3x3 convolution, the original's `Split2d`) and a factor-out of half
    of the channels. Vectors are one stack of `num_steps` steps. With `num_bins=K` the
    chain ends with `LevelScaling(K)` (and `LogitTransform` with `logit_alpha`), so the
    density and `bits_per_dim` are those of the dequantized discrete data.

    Reference: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280.

    Args:
        event_shape: `[H, W, C]` with `H` and `W` divisible by `2 ** num_levels`, or `[D]`
            with `D >= 2`.
        num_levels: number of levels `L` (images).
        num_steps: steps `K` per level.
        hidden_channels: width of the conv trunks (images).
        num_blocks: residual blocks of the conv trunks (images).
        hidden_units: hidden widths of the MLP (or MADE) trunk (vectors).
        sharing: `"none"`, `"naive"`, `"decomposed"` or `"nanoflow"`.
        embedding: with `sharing="nanoflow"`, `"concat"` (the default), `"bias"`,
            `"gate"` or a list of them; must stay `None` with the other variants.
        embedding_channels: size `E` of a `"concat"` or `"bias"` embedding.
        transformer: the couplings' elementwise map: `"affine"`, `"additive"`, `"spline"`,
            `"logistic_mixture"` or any `tff.bijectors.Transformer` (see
            `tff.bijectors.Coupling`).
        lu: LU-parameterised 1x1 convolutions (else plain kernels).
        split_prior: learned Gaussian prior for each factored-out half (images).
        num_bins: number of discrete values per dimension of the data (`None`: the flow
            models continuous data as given).
        logit_alpha: with `num_bins`, model the logit of the data scaled to `[0, 1)`.
        seed: seed of the 1x1 convolutions' random orthogonal initialisation.
        scheme: `"coupling"` (Glow's affine-coupling layout, any data) or
            `"autoregressive"` (MAF steps over a shared MADE trunk, vectors only).
        coupling_scale: the scale of the steps' `"affine"` transformer (see
            `tff.bijectors.Affine`): `"sigmoid"`, Glow's, which lets a step barely grow
            the values it passes towards the noise (no compounding blow-ups on images
            unlike the training ones), or `"exp"`, a soft-clamped `exp` letting each step
            grow them by up to `e^3`. Ignored for other transformers.
        **kwargs: `name`, `dtype` (and `dequantization`) of `Flow`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a bad event shape or an argument out of range, an `embedding` with a
            `sharing` other than `"nanoflow"`, `scheme="autoregressive"` on images, or a
            `context_size` (no conditional form).

    Example:
        >>> flow = NanoFlow([8, 8, 1], num_levels=2, num_steps=4, hidden_channels=8)
        >>> flow.sample(2, seed=0).shape
        TensorShape([2, 8, 8, 1])
        >>> len(flow.trunks)  # one shared trunk per level
        2
        >>> maf = NanoFlow([3], num_steps=4, hidden_units=[16], scheme="autoregressive")
        >>> type(maf.trunks[0]).__name__, len(maf.trunks)
        ('MADETrunk', 1)
    """

    def __init__(self, event_shape, num_levels=2, num_steps=8, hidden_channels=32,
                 num_blocks=1, hidden_units=(64, 64), sharing="nanoflow", embedding=None,
                 embedding_channels=8, transformer="affine", lu=True, split_prior=True,
                 num_bins=None, logit_alpha=None, seed=0, scheme="coupling",
                 coupling_scale="sigmoid", **kwargs):
        super().__init__(event_shape, **kwargs)
        if self.context_size is not None:
            raise ValueError(f"NanoFlow has no conditional form; got context_size="
                             f"{self.context_size}")
        self.num_levels = _validation.check_positive_int("num_levels", num_levels)
        self.num_steps = _validation.check_positive_int("num_steps", num_steps)
        self.hidden_channels = _validation.check_positive_int("hidden_channels",
                                                              hidden_channels)
        self.num_blocks = _validation.check_positive_int("num_blocks", num_blocks)
        self.hidden_units = check_units("hidden_units", hidden_units)
        self._init_sharing(sharing, embedding, embedding_channels, default_embedding="concat")
        if isinstance(transformer, dict):  # a Transformer serialized by get_config
            transformer = bijectors.get_transformer(transformer)
        self.coupling_scale = _validation.check_choice("coupling_scale", coupling_scale,
                                                       bijectors.AFFINE_SCALES)
        self._transformer = (bijectors.Affine(scale=self.coupling_scale)
                             if isinstance(transformer, str) and transformer == "affine"
                             else bijectors.get_transformer(transformer))
        self.transformer = transformer
        self.lu = _validation.check_bool("lu", lu)
        self.split_prior = _validation.check_bool("split_prior", split_prior)
        self.seed = _validation.check_int("seed", seed)
        self.scheme = _validation.check_choice("scheme", scheme, SCHEMES)
        self.is_image = len(self.event_shape) == 3
        if self.is_image and self.scheme == "autoregressive":
            raise ValueError(f"scheme='autoregressive' models vectors (event_shape [D]), got "
                             f"event_shape {self.event_shape}; images take "
                             f"scheme='coupling'")
        if self.is_image:
            size = 2 ** self.num_levels
            if self.event_shape[0] % size or self.event_shape[1] % size:
                raise ValueError(f"NanoFlow with num_levels={num_levels} needs height and "
                                 f"width divisible by {size}, got event_shape "
                                 f"{self.event_shape}")
        elif self.event_shape[0] < 2:
            raise ValueError(f"NanoFlow on vectors needs event_shape [D] with D >= 2, got "
                             f"{self.event_shape}")
        # Keras tracks the layers in these lists; a shared trunk (or projection) is in
        # `trunks` (`projections`) once and referenced by each of its steps' conditioners.
        self.actnorms, self.kernels, self.priors = [], [], []
        self.trunks, self.projections, self.conditioners = [], [], []
        if self.is_image:
            steps = [multiscale_bijector(
                self.event_shape, self.num_levels, self._level_steps,
                factor_out_prior=self._split_prior if self.split_prior else None)]
        else:
            steps = self._level_steps(self.event_shape, None)
        self._set_bijectors(self._data_space_steps(num_bins, logit_alpha) + steps)

    def _trunk(self, name):
        concat, bias = self._trunk_channels()
        if self.is_image:
            trunk = nets.ConvTrunk(self.hidden_channels, self.num_blocks, concat_channels=concat,
                                   bias_channels=bias, dtype=self.dtype_policy, name=name)
        elif self.scheme == "autoregressive":
            trunk = nets.MADETrunk(self.event_shape[0], self.hidden_units,
                                   concat_channels=concat, bias_channels=bias,
                                   dtype=self.dtype_policy, name=name)
        else:
            trunk = nets.MLPTrunk(self.hidden_units, concat_channels=concat, bias_channels=bias,
                                  dtype=self.dtype_policy, name=name)
        self.trunks.append(trunk)
        return trunk

    def _projection(self, output_channels, trunk, name):
        """A zero-initialised projection from `trunk`'s features: masked by its degrees for a
        MADE trunk (`output_channels` is then the parameters per dimension)."""
        if self.scheme != "autoregressive":
            return super()._projection(output_channels, trunk, name)
        projection = nets.MaskedStepProjection(output_channels, trunk.input_order,
                                               trunk.feature_degrees,
                                               dtype=self.dtype_policy, name=name)
        self.projections.append(projection)
        return projection

    def _level_steps(self, shape, level):
        """The `num_steps` steps on `shape` (of `level`, `None` for vectors), data -> noise."""
        prefix = "" if level is None else f"level_{level}_"
        output = (self._transformer.num_params if self.scheme == "autoregressive"
                  else bijectors.Coupling.conditioner_output_size(shape, self._transformer))
        conditioners = self._step_conditioners(output, prefix)
        return [bijector for k, conditioner in enumerate(conditioners)
                for bijector in self._step(shape, f"{prefix}step_{k}", conditioner)]

    def _step(self, shape, name, conditioner):
        """ActNorm, 1x1 convolution and coupling (or MAF), in data -> noise order."""
        actnorm = nets.ActNormParams(shape[-1], dtype=self.dtype_policy, name=f"{name}_actnorm")
        kernel = nets.Conv1x1Kernel(shape[-1], lu=self.lu, seed=self.seed + len(self.kernels),
                                    dtype=self.dtype_policy, name=f"{name}_conv1x1")
        self.actnorms.append(actnorm)
        self.kernels.append(kernel)
        if self.scheme == "autoregressive":
            transform = bijectors.MaskedAutoregressiveFlow(
                conditioner, shape, transformer=self._transformer,
                name=f"{name}_autoregressive")
        else:
            transform = bijectors.Coupling(conditioner, shape, self._transformer, mask="half",
                                           parity=0, name=f"{name}_coupling")
        return [bijectors.ActNorm(actnorm, shape, name=f"{name}_actnorm"),
                bijectors.InvertibleConv1x1(kernel, shape, name=f"{name}_conv1x1"), transform]

    def _split_prior(self, shape, level):
        """The learned prior of the half `level` factors out: `Split2d`'s zero 3x3 conv."""
        name = f"level_{level}_prior"
        conditioner = nets.StepProjection(
            bijectors.AffineCoupling.conditioner_output_size(shape), kernel_size=3,
            dtype=self.dtype_policy, name=f"{name}_conditioner")
        self.priors.append(conditioner)
        return bijectors.AffineCoupling(conditioner, shape, name=name)

    def get_config(self):
        config = super().get_config()
        config.pop("context_size", None)
        return {
            **config,
            "num_levels": self.num_levels,
            "num_steps": self.num_steps,
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "hidden_units": list(self.hidden_units),
            **self._sharing_config(),
            "transformer": (self.transformer if isinstance(self.transformer, str)
                            else keras.saving.serialize_keras_object(self.transformer)),
            "lu": self.lu,
            "split_prior": self.split_prior,
            "num_bins": self.num_bins,
            "logit_alpha": self.logit_alpha,
            "seed": self.seed,
            "scheme": self.scheme,
            "coupling_scale": self.coupling_scale,
        }

    @classmethod
    def from_config(cls, config):
        # A config without `coupling_scale` was saved when the "affine" transformer's scale
        # was always the soft-clamped exponential.
        return super().from_config({"coupling_scale": "exp", **config})
