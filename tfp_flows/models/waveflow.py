"""NanoFlow on sequences: WaveFlow's grouped autoregressive steps sharing one estimator."""

import keras
import tensorflow_probability as tfp

from tfp_flows import _validation, bijectors, nets
from tfp_flows.models._sharing import SharedTrunkSteps
from tfp_flows.models.flow import Flow

__all__ = ["NanoWaveFlow"]

tfb = tfp.bijectors


def _squeeze_to_rows(length, num_groups):
    """The bijector whose forward maps a signal `[T]` to WaveFlow's `[h, T / h, 1]` image.

    Column `j` holds the `h` adjacent samples `x[j h], ..., x[j h + h - 1]` from top to
    bottom, so row `i` is every `h`-th sample from `x[i]` (WaveFlow's `squeeze_to_2d`).
    """
    width = length // num_groups
    return tfb.Chain([tfb.Reshape([num_groups, width, 1], event_shape_in=[num_groups, width]),
                      tfb.Transpose(perm=[1, 0]),
                      tfb.Reshape([width, num_groups], event_shape_in=[length])],
                     name="squeeze_to_rows")


@keras.saving.register_keras_serializable(package="tfp_flows")
class NanoWaveFlow(SharedTrunkSteps, Flow):
    """NanoFlow on 1-D signals: WaveFlow's grouped autoregressive steps, whose
    conditioners share one causal estimator told apart by flow indication embeddings.

    A signal `x` of `T` samples is squeezed, as in WaveFlow, into an `h x (T / h)` image
    `X` whose columns hold `h` adjacent samples (`X[i, j] = x[j h + i]`), so row `i` is
    every `h`-th sample. Each of the `K` steps is a grouped autoregressive transform over
    the `h` rows (`tff.bijectors.GroupedAutoregressive`): in the data -> noise direction
    `Z_i = tau^{-1}(X_i; theta_k(X_{<i}))`, all rows in one pass, with the affine
    transformer WaveFlow's `Z_i = sigma_i(X_{<i}) X_i + mu_i(X_{<i})`. Sampling inverts
    it row by row: `h` conditioner passes per step. Between steps the row order is
    reversed (WaveFlow reverses it before every step, the first included), so each row is
    conditioned on the rows on either side of it somewhere in the flow. The latent image
    is unsqueezed back to `[T]` (the base is a standard Normal on `[T]`).

    The step conditioners are NanoFlow's, `theta_k(X) = P_k(g(X; e_k))`: `g` is a
    `tff.nets.CausalConvTrunk` (WaveFlow's WaveNet-like estimator, whose row `i` sees rows
    `< i` only), `P_k` the step's zero-initialised 1x1 projection (so a fresh flow is the
    identity) and `e_k` its embedding (`tff.nets.SharedTrunkConditioner`). `sharing` and
    `embedding` mean what they mean for `NanoFlow`: `"none"` (a trunk and a projection
    per step: WaveFlow), `"naive"`, `"decomposed"` or `"nanoflow"`, whose embedding is by
    default `["bias", "gate"]`, as NanoFlow's audio model (an embedding vector projected to
    a bias of every gated convolution by a shared matrix, and per-step gates).

    `h = 2` makes every step a coupling of the even and odd samples' rows, `h = T` a fully
    autoregressive flow (WaveNet-like, `T` passes per step to sample); WaveFlow's `h` is
    8 to 64.

    References: Lee, Kim, Yoon, "NanoFlow: Scalable Normalizing Flows with Sublinear
    Parameter Complexity", arXiv:2006.06280; Ping, Peng, Zhao, Song, "WaveFlow: A Compact
    Flow-based Model for Raw Audio", arXiv:1912.01219.

    Args:
        event_shape: `[T]`, `T` divisible by `num_groups`.
        num_groups: the number `h >= 2` of rows (groups) of the squeezed signal.
        num_steps: number of steps `K`.
        hidden_channels: width of the trunks.
        num_blocks: gated residual blocks of the trunks.
        kernel_size: kernel height and width of the trunks' blocks.
        sharing: `"none"`, `"naive"`, `"decomposed"` or `"nanoflow"`.
        embedding: with `sharing="nanoflow"`, `"concat"`, `"bias"`, `"gate"` or a list of
            them (`None`: `["bias", "gate"]`); must stay `None` with the other variants.
        embedding_channels: size `E` of a `"concat"` or `"bias"` embedding.
        transformer: the steps' elementwise map: `"affine"`, `"additive"`, `"spline"`,
            `"logistic_mixture"` or any `tff.bijectors.Transformer`.
        **kwargs: `name`, `dtype` of `Flow`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an event shape that is not `[T]` with `T` divisible by `num_groups`,
            an argument out of range, an `embedding` with a `sharing` other than
            `"nanoflow"`, or a `context_size` (no conditional form).

    Example:
        >>> flow = NanoWaveFlow([32], num_groups=4, num_steps=2, hidden_channels=8)
        >>> flow.sample(3, seed=0).shape
        TensorShape([3, 32])
        >>> len(flow.trunks), len(flow.projections)  # one trunk, a projection per step
        (1, 2)
    """

    def __init__(self, event_shape, num_groups=8, num_steps=8, hidden_channels=32,
                 num_blocks=3, kernel_size=3, sharing="nanoflow", embedding=None,
                 embedding_channels=8, transformer="affine", **kwargs):
        super().__init__(event_shape, **kwargs)
        if self.context_size is not None:
            raise ValueError(f"NanoWaveFlow has no conditional form; got context_size="
                             f"{self.context_size}")
        self.num_groups = _validation.check_int("num_groups", num_groups, minimum=2)
        if len(self.event_shape) != 1 or self.event_shape[0] % self.num_groups:
            raise ValueError(f"NanoWaveFlow needs event_shape [T] with T divisible by "
                             f"num_groups={self.num_groups}, got {self.event_shape}")
        self.num_steps = _validation.check_positive_int("num_steps", num_steps)
        self.hidden_channels = _validation.check_positive_int("hidden_channels",
                                                              hidden_channels)
        self.num_blocks = _validation.check_positive_int("num_blocks", num_blocks)
        self.kernel_size = _validation.check_positive_int("kernel_size", kernel_size)
        self._init_sharing(sharing, embedding, embedding_channels,
                           default_embedding=["bias", "gate"])
        if isinstance(transformer, dict):  # a Transformer serialized by get_config
            transformer = bijectors.get_transformer(transformer)
        self._transformer = bijectors.get_transformer(transformer)
        self.transformer = transformer
        length = self.event_shape[0]
        self.image_shape = [self.num_groups, length // self.num_groups, 1]
        self.trunks, self.projections, self.conditioners = [], [], []
        conditioners = self._step_conditioners(
            bijectors.GroupedAutoregressive.conditioner_output_size(self.image_shape,
                                                                    self._transformer))
        reverse = list(range(self.num_groups - 1, -1, -1))
        steps = []
        for k, conditioner in enumerate(conditioners):
            if k:
                steps.append(tfb.Permute(reverse, axis=-3, name=f"step_{k}_reverse_rows"))
            steps.append(bijectors.GroupedAutoregressive(
                conditioner, self.image_shape, self._transformer,
                name=f"step_{k}_autoregressive"))
        to_rows = _squeeze_to_rows(length, self.num_groups)
        self._set_bijectors([tfb.Invert(to_rows), *steps, to_rows])

    def _trunk(self, name):
        concat, bias = self._trunk_channels()
        trunk = nets.CausalConvTrunk(self.hidden_channels, self.num_blocks, self.kernel_size,
                                     concat_channels=concat, bias_channels=bias,
                                     dtype=self.dtype_policy, name=name)
        self.trunks.append(trunk)
        return trunk

    def get_config(self):
        config = super().get_config()
        config.pop("context_size", None)
        return {
            **config,
            "num_groups": self.num_groups,
            "num_steps": self.num_steps,
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "kernel_size": self.kernel_size,
            **self._sharing_config(),
            "transformer": (self.transformer if isinstance(self.transformer, str)
                            else keras.saving.serialize_keras_object(self.transformer)),
        }
