"""The DenseFlow builder: dense blocks of Glow-like units widened by cross-unit coupling."""

import keras
import tensorflow_probability as tfp

from tfp_flows import _validation, bijectors, distributions, nets
from tfp_flows.models.flow import Flow

__all__ = ["DenseFlow"]

AUGMENTATIONS = ("cross_unit", "unconditional")
DEQUANTIZATIONS = ("variational", "uniform", None)


def _per_block(name, value, num_blocks):
    """An int for every block, or one int per block -> a tuple of `num_blocks` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (_validation.check_positive_int(name, value),) * num_blocks
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be an int or {num_blocks} ints (one per block), got "
                        f"{value!r}")
    values = list(value)
    if len(values) != num_blocks:
        raise ValueError(f"{name} must be an int or {num_blocks} ints (one per block), got "
                         f"{value!r}")
    return tuple(_validation.check_positive_int(f"{name} entries", v) for v in values)


@keras.saving.register_keras_serializable(package="tfp_flows")
class DenseFlow(Flow):
    """DenseFlow: dense blocks of flow units, widened by noise between units.

    In the data -> noise direction the data's levels are dequantized (a learned
    `VariationalDequantization`, or uniform noise), scaled to `[-1/2, 1/2)` (or
    logit-transformed with `logit_alpha`) and squeezed
    to `[H/2, W/2, 4C]`; then each block `b` runs `units_per_block[b]` units, and between
    blocks the representation is squeezed and half of its channels are factored out (to
    the standard Normal base, as in the original). A unit is `modules_per_unit[b]` Glow-like
    modules: ActNorm, invertible 1x1 convolution and an affine coupling (log-scale
    `2 tanh(s / 2)`) whose conditioner is a `nets.DenseAttentionNet` (a dense block fused
    with Nystrom self-attention). After every unit but a block's last, the cross-unit
    coupling appends `growth_rate` noise channels `mu + sigma * e` with `(mu, log_sigma)`
    computed by a small zero-initialised conv net (`nets.CrossUnitParams`) from the
    block's previous representations (`CrossUnitBlock`), so the representation grows by
    `growth_rate` channels per unit. A final ActNorm gives the last representation a
    learned per-channel mean and scale (the original's `ConvNormal2d` base).

    The noise makes DenseFlow a bound flow: it trains on the one-sample ELBO over the
    dequantization noise and every augmentation noise together, and
    `log_prob(x, num_samples=k)` is the importance-weighted bound over all of them (64
    samples by default); samples are exact, one pass from the base noise with the noise
    channels dropped. Its latent, the flow's `latent_event_shape`, is the vector of
    everything factored out and the last representation (`InferenceChain`), larger than
    the data by the noise channels.

    `growth_rate=0` is the plain flow of the same units; `augmentation="unconditional"`
    appends standard Normal noise instead (the augmented-flow baseline the paper improves
    on). The paper's DenseFlow-74-10 (CIFAR-10, 2.98 bits/dim) is
    `DenseFlow([32, 32, 3], units_per_block=(6, 4, 1), modules_per_unit=(5, 6, 20),
    filters=48, growth_rate=10, dense_depth=7, dense_growth=64)`; the defaults are sized
    for the 8x8 digits on a CPU.

    Reference: Grcic, Grubisic, Segvic, "Densely connected normalizing flows",
    arXiv:2106.04627; the original code is matejgrcic/DenseFlow.

    Args:
        event_shape: `[H, W, C]`, `H` and `W` divisible by `2 ** num_blocks`.
        num_bins: number of levels of the discrete data (256 for 8-bit images); `None`
            for continuous data, modelled as given (with `dequantization=None`).
        growth_rate: noise channels `k` appended after each unit but a block's last (0:
            none).
        augmentation: `"cross_unit"` (learned, conditioned on the previous
            representations) or `"unconditional"` (standard Normal noise).
        attention: whether the coupling networks have the Nystrom attention branch.
        dequantization: `"variational"`, `"uniform"`, or `None` (continuous data).
        units_per_block: units of each block, a list (its length is the number of
            blocks) or an int for every one of `num_blocks` blocks.
        num_blocks: number of blocks; `None`: the length of `units_per_block`, or 2 when it
            is an int.
        modules_per_unit: modules per unit, an int or one per block.
        filters: narrow width of the coupling networks, an int or one per block.
        dense_depth: layers of each coupling network's dense block.
        dense_growth: channels each of those layers adds.
        landmarks: landmarks of the Nystrom attention.
        dropout: dropout rate of the coupling networks, in `[0, 1)`.
        dequantizer_steps: couplings of the variational dequantizer's flow.
        dequantizer_filters: width of its conditioners.
        logit_alpha: `None` (the data scaled to `[-1/2, 1/2)`, as the original) or the
            margin of a logit transform of the data scaled to `[0, 1)` (RealNVP's).
        num_eval_samples: default `k` of `log_prob` and `evaluate`; `None`: 64 with a
            learned `q` (variational dequantization or cross-unit coupling), else 1.
        seed: seed of the 1x1 convolutions' random orthogonal initialisation.
        **kwargs: `name`, `dtype` of the Keras model.

    Example:
        >>> flow = DenseFlow([4, 4, 1], num_bins=17, growth_rate=2, units_per_block=(2,),
        ...                  modules_per_unit=1, filters=8, dense_depth=1, dense_growth=4,
        ...                  dequantization="uniform")
        >>> flow.sample(2, seed=0).shape, flow.latent_event_shape
        (TensorShape([2, 4, 4, 1]), [24])
    """

    def __init__(self, event_shape, num_bins=256, growth_rate=4, augmentation="cross_unit",
                 attention=True, dequantization="variational", units_per_block=(3, 2),
                 num_blocks=None, modules_per_unit=2, filters=32, dense_depth=3,
                 dense_growth=16, landmarks=4, dropout=0.0, dequantizer_steps=2,
                 dequantizer_filters=16, logit_alpha=None, num_eval_samples=None, seed=0,
                 **kwargs):
        super().__init__(event_shape, num_eval_samples=num_eval_samples, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(f"DenseFlow needs an image event_shape [H, W, C], got "
                             f"{event_shape!r}")
        if self.context_size is not None:
            raise ValueError(f"DenseFlow has no conditional form; got context_size="
                             f"{self.context_size}")
        _validation.check_int("num_bins", num_bins, minimum=2, allow_none=True)
        if (num_bins is None) != (dequantization is None):
            raise ValueError(
                f"discrete data (num_bins) and dequantization go together: got "
                f"num_bins={num_bins} and dequantization={dequantization!r}")
        self.growth_rate = _validation.check_int("growth_rate", growth_rate, minimum=0)
        self.augmentation = _validation.check_choice("augmentation", augmentation,
                                                     AUGMENTATIONS)
        self.attention = _validation.check_bool("attention", attention)
        self.dequantization_kind = _validation.check_choice("dequantization", dequantization,
                                                            DEQUANTIZATIONS)
        _validation.check_positive_int("num_blocks", num_blocks, allow_none=True)
        if isinstance(units_per_block, int) and not isinstance(units_per_block, bool):
            num_blocks = 2 if num_blocks is None else num_blocks
        elif isinstance(units_per_block, str) or not hasattr(units_per_block, "__iter__"):
            raise TypeError(f"units_per_block must be an int or a list of ints (units of "
                            f"each block), got {units_per_block!r}")
        elif num_blocks is None:
            num_blocks = len(list(units_per_block))
        self.units_per_block = _per_block("units_per_block", units_per_block, num_blocks)
        self.num_blocks = num_blocks
        self.modules_per_unit = _per_block("modules_per_unit", modules_per_unit, num_blocks)
        self.filters = _per_block("filters", filters, num_blocks)
        # The config keeps the form given (an int, or a list of one per block).
        self._configured = {key: value if isinstance(value, int) else list(value)
                            for key, value in (("units_per_block", units_per_block),
                                               ("modules_per_unit", modules_per_unit),
                                               ("filters", filters))}
        self.dense_depth = _validation.check_positive_int("dense_depth", dense_depth)
        self.dense_growth = _validation.check_positive_int("dense_growth", dense_growth)
        self.landmarks = _validation.check_positive_int("landmarks", landmarks)
        self.dropout = _validation.check_number("dropout", dropout, minimum=0.0, maximum=1.0,
                                                exclusive_maximum=True)
        self.dequantizer_steps = _validation.check_positive_int("dequantizer_steps",
                                                                dequantizer_steps)
        self.dequantizer_filters = _validation.check_positive_int("dequantizer_filters",
                                                                  dequantizer_filters)
        self.seed = _validation.check_int("seed", seed)
        size = 2 ** num_blocks
        if self.event_shape[0] % size or self.event_shape[1] % size:
            raise ValueError(f"DenseFlow with {num_blocks} blocks needs height and width "
                             f"divisible by {size}, got event_shape {self.event_shape}")
        self.actnorms, self.kernels, self.conditioners, self.noise_nets = [], [], [], []
        chain = distributions.InferenceChain(self._stages(num_bins, logit_alpha),
                                             self.event_shape,
                                             name=f"{self.name}_chain")
        self.event_shape = list(chain.latent_event_shape)
        self._set_bijectors([], surjection=chain)

    def _stages(self, num_bins, logit_alpha):
        """Dequantization, scaling, squeeze, then the blocks with transitions between."""
        image_shape = list(self.event_shape)
        data_space = self._data_space_steps(num_bins, logit_alpha)
        if self.dequantization_kind is None:
            dequantizer = []
        elif self.dequantization_kind == "uniform":
            dequantizer = [distributions.UniformDequantization(num_bins, image_shape)]
        else:
            dequantizer = [distributions.VariationalDequantization(
                num_bins, image_shape, num_steps=self.dequantizer_steps,
                filters=self.dequantizer_filters, blocks=1, heads=1, attention=False,
                dropout=self.dropout, dtype=self.dtype_policy.name,
                name=f"{self.name}_dequantization")]
        stages = [*dequantizer, *data_space,
                  tfp.bijectors.Invert(bijectors.Squeeze(image_shape), name="squeeze")]
        shape = bijectors.Squeeze(image_shape).output_event_shape
        for index in range(len(self.units_per_block)):
            block = self._block(shape, index)
            stages.append(block)
            shape = list(block.latent_event_shape)
            if index + 1 < len(self.units_per_block):
                squeeze = bijectors.Squeeze(shape)
                stages.append(tfp.bijectors.Invert(squeeze, name=f"block_{index}_squeeze"))
                shape = squeeze.output_event_shape
                stages.append(distributions.FactorOut(shape[-1] // 2))
                shape = [*shape[:-1], shape[-1] // 2]
        stages.append(self._actnorm(shape, "base"))
        return stages

    def _actnorm(self, shape, name):
        params = nets.ActNormParams(shape[-1], dtype=self.dtype_policy, name=f"{name}_actnorm")
        self.actnorms.append(params)
        return bijectors.ActNorm(params, shape, name=f"{name}_actnorm")

    def _module(self, shape, block, name, parity):
        """ActNorm, 1x1 convolution and affine coupling, in data -> noise order."""
        kernel = nets.Conv1x1Kernel(shape[-1], seed=self.seed + len(self.kernels),
                                    dtype=self.dtype_policy, name=f"{name}_conv1x1")
        conditioner = nets.DenseAttentionNet(
            self.filters[block], self.dense_depth, self.dense_growth,
            bijectors.AffineCoupling.conditioner_output_size(shape, "half", parity),
            # Attention over a single position is the identity on values: none on 1x1 maps.
            attention=self.attention and shape[0] * shape[1] > 1,
            landmarks=self.landmarks, dropout=self.dropout,
            dtype=self.dtype_policy, name=f"{name}_conditioner")
        self.kernels.append(kernel)
        self.conditioners.append(conditioner)
        # The original's log-scale 2 tanh(s / 2) is the soft clamp with bound 2.
        return [self._actnorm(shape, name),
                bijectors.InvertibleConv1x1(kernel, shape, name=f"{name}_conv1x1"),
                bijectors.AffineCoupling(conditioner, shape, mask="half", parity=parity,
                                         log_scale_bound=2.0, name=f"{name}_coupling")]

    def _block(self, shape, block):
        """The units of `block` on `shape`, with the noise between them."""
        input_shape, units, augmentations = list(shape), [], []
        grow = self.growth_rate > 0
        for index in range(self.units_per_block[block]):
            name = f"block_{block}_unit_{index}"
            if index and grow:
                params_net = None
                if self.augmentation == "cross_unit":
                    params_net = nets.CrossUnitParams(self.growth_rate,
                                                      dtype=self.dtype_policy,
                                                      name=f"{name}_noise_params")
                    self.noise_nets.append(params_net)
                augmentations.append(distributions.NormalAugmentation(
                    shape, self.growth_rate, params_net=params_net, name=f"{name}_noise"))
                shape = augmentations[-1].latent_event_shape
            members = [bijector for k in range(self.modules_per_unit[block])
                       for bijector in self._module(shape, block, f"{name}_module_{k}",
                                                    k % 2)]
            units.append(bijectors.FlowChain(members, name=name))
        return distributions.CrossUnitBlock(units, augmentations, input_shape,
                                            name=f"block_{block}")

    def get_config(self):
        config = super().get_config()
        config.pop("context_size", None)
        return {
            **config,
            # The data's shape: the flow's latent is the chain's vector.
            "event_shape": list(self.event_shape),
            "num_bins": self.num_bins,
            "growth_rate": self.growth_rate,
            "augmentation": self.augmentation,
            "attention": self.attention,
            "dequantization": self.dequantization_kind,
            "units_per_block": self._configured["units_per_block"],
            "num_blocks": self.num_blocks,
            "modules_per_unit": self._configured["modules_per_unit"],
            "filters": self._configured["filters"],
            "dense_depth": self.dense_depth,
            "dense_growth": self.dense_growth,
            "landmarks": self.landmarks,
            "dropout": self.dropout,
            "dequantizer_steps": self.dequantizer_steps,
            "dequantizer_filters": self.dequantizer_filters,
            "logit_alpha": self.logit_alpha,
            "seed": self.seed,
        }
