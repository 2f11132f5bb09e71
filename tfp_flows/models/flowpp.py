"""The Flow++ builder: logistic-mixture CDF couplings with attention conditioners."""

import keras

from tfp_flows import _validation, bijectors, distributions, nets
from tfp_flows.models.flow import Flow
from tfp_flows.models.multiscale import multiscale_bijector

__all__ = ["FlowPlusPlus"]

COUPLINGS = ("logistic_mixture", "affine")
DEQUANTIZATIONS = ("variational", "uniform", None)


@keras.saving.register_keras_serializable(package="tfp_flows")
class FlowPlusPlus(Flow):
    """Flow++: mixture-of-logistics CDF couplings, attention conditioners, variational
    dequantization.

    The paper's CIFAR-10 layout, in the data -> noise direction: the data's levels are
    dequantized (by a learned `q(u | x)` or uniform noise), scaled to `[0, 1)` and
    logit-transformed (margin `logit_alpha`, the original's `ImgProc`), then each of the
    `num_levels` levels runs

    1. `num_steps[0]` checkerboard couplings on `[H, W, C]`,
    2. a squeeze to `[H/2, W/2, 4C]`,
    3. `num_steps[1]` channel couplings and `num_steps[2]` checkerboard couplings,
    4. on every level but the last, a factor-out of half of the channels (the next level
       runs on the kept half),

    through the shared multi-scale builder (`multiscale_bijector`), which unsqueezes back
    so the noise has the data's shape. Every coupling is preceded by a per-element ActNorm
    (`ActNormParams(spatial_shape=...)`, the original's `Norm`) and an invertible 1x1
    convolution (the original's `Pointwise`), and its conditioner is a
    `nets.GatedConvAttentionNet`. Couplings alternate which half they transform. On a
    1x1 map (the deepest level of a small image) checkerboard couplings split channels
    instead and the conditioners have no attention (over one position it is the identity
    on values). The
    default `(4, 2, 3)` with one level is the paper's CIFAR-10 layout.

    The default sizes suit small images on a CPU (the 8x8 digits train in minutes). The
    paper's CIFAR-10 model (31M parameters) is
    `FlowPlusPlus([32, 32, 3], num_components=32, filters=96, blocks=10, dropout=0.2,
    dequantizer_steps=4)`.

    The paper's ablations are one argument each: `dequantization="uniform"`,
    `coupling="affine"` (RealNVP's affine transformer instead of `LogisticMixtureCDF`),
    `attention=False` (gated convolutions only).

    A flow with variational dequantization is a bound flow: it trains on the one-sample
    ELBO, `log_prob(x, num_samples=k)` is the importance-weighted bound (IWBO) with `k`
    samples of `q` (the paper reports k = 4096; `num_eval_samples` sets the default of
    `log_prob` and `evaluate`), and `bits_per_dim` is that of the discrete data.

    Reference: Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative
    Models with Variational Dequantization and Architecture Design", arXiv:1902.00275.

    Args:
        event_shape: `[H, W, C]`, `H` and `W` divisible by `2 ** num_levels` (and the
            checkerboard needs `H * W >= 2`).
        num_bins: number of levels of the discrete data (256 for 8-bit images); `None`
            for continuous data, modelled as given (with `dequantization=None`).
        dequantization: `"variational"` (a learned `VariationalDequantization`),
            `"uniform"`, or `None` (continuous data, `num_bins=None`).
        coupling: `"logistic_mixture"` (`LogisticMixtureCDF`) or `"affine"`.
        attention: whether the conditioners have self-attention sublayers.
        num_components: mixture components `K` of the logistic-mixture transformer.
        filters: width `F` of the conditioners.
        blocks: gated blocks per conditioner.
        heads: attention heads (dividing `filters`).
        dropout: dropout rate of the conditioners, in `[0, 1)`.
        num_levels: number of levels.
        num_steps: `(checkerboard, channel, checkerboard)` coupling counts of a level:
            before its squeeze, then after it; an int `n` is `(n, n, n)`.
        dequantizer_steps: couplings of the variational dequantizer's flow.
        dequantizer_filters: width of its conditioners (default: `filters`).
        dequantizer_blocks: gated blocks of its conditioners.
        logit_alpha: margin of the logit transform (the original's 0.05).
        num_eval_samples: default `k` of `log_prob` and `evaluate` (1: the ELBO); `None`:
            the dequantizer's default (64 importance samples for variational, 1 for
            uniform).
        seed: seed of the 1x1 convolutions' random orthogonal initialisation.
        **kwargs: `name`, `dtype` of the Keras model.

    Example:
        >>> flow = FlowPlusPlus([4, 4, 1], num_bins=17, num_components=2, filters=8,
        ...                     blocks=1, heads=2, num_steps=(1, 1, 1), dequantizer_steps=1)
        >>> flow.sample(2, seed=0).shape
        TensorShape([2, 4, 4, 1])
    """

    def __init__(self, event_shape, num_bins=256, dequantization="variational",
                 coupling="logistic_mixture", attention=True, num_components=4, filters=32,
                 blocks=2, heads=4, dropout=0.0, num_levels=1, num_steps=(4, 2, 3),
                 dequantizer_steps=2, dequantizer_filters=None, dequantizer_blocks=2,
                 logit_alpha=0.05, num_eval_samples=None, seed=0, **kwargs):
        super().__init__(event_shape, num_eval_samples=num_eval_samples, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(f"FlowPlusPlus needs an image event_shape [H, W, C], got "
                             f"{event_shape!r}")
        if self.context_size is not None:
            raise ValueError(f"FlowPlusPlus has no conditional form (the context feeds the "
                             f"dequantizer's own couplings); got context_size="
                             f"{self.context_size}")
        self.dequantization_kind = _validation.check_choice(
            "dequantization", dequantization, DEQUANTIZATIONS)
        self.coupling = _validation.check_choice("coupling", coupling, COUPLINGS)
        self.attention = _validation.check_bool("attention", attention)
        self.num_components = _validation.check_positive_int("num_components",
                                                             num_components)
        self.filters = _validation.check_positive_int("filters", filters)
        self.blocks = _validation.check_positive_int("blocks", blocks)
        self.heads = _validation.check_positive_int("heads", heads)
        self.dropout = _validation.check_number("dropout", dropout, minimum=0.0,
                                                maximum=1.0, exclusive_maximum=True)
        self.num_levels = _validation.check_positive_int("num_levels", num_levels)
        self.num_steps = _check_steps(num_steps)
        # The config keeps the form given (an int or three ints).
        self._num_steps_config = (num_steps if isinstance(num_steps, int)
                                  else list(self.num_steps))
        self.dequantizer_steps = _validation.check_positive_int("dequantizer_steps",
                                                                dequantizer_steps)
        self.dequantizer_filters = _validation.check_positive_int(
            "dequantizer_filters", dequantizer_filters, allow_none=True)
        self.dequantizer_blocks = _validation.check_positive_int("dequantizer_blocks",
                                                                 dequantizer_blocks)
        self.seed = _validation.check_int("seed", seed)
        if self.attention and self.filters % self.heads:
            raise ValueError(f"heads={heads} must divide filters={filters}")
        self.transformer = (bijectors.LogisticMixtureCDF(self.num_components)
                            if self.coupling == "logistic_mixture" else bijectors.Affine())
        self.actnorms, self.kernels, self.conditioners = [], [], []
        level_0 = multiscale_bijector(self.event_shape, self.num_levels, self._squeezed_steps,
                                      steps_before_squeeze=self._full_steps)
        surjection = self._dequantizer(num_bins)
        if num_bins is None:
            logit_alpha = None
        self._set_bijectors(self._data_space_steps(num_bins, logit_alpha) + [level_0],
                            surjection=surjection)

    def _dequantizer(self, num_bins):
        _validation.check_int("num_bins", num_bins, minimum=2, allow_none=True)
        if (num_bins is None) != (self.dequantization_kind is None):
            raise ValueError(
                f"discrete data (num_bins) and dequantization go together: got "
                f"num_bins={num_bins} and dequantization={self.dequantization_kind!r}")
        if self.dequantization_kind is None:
            return None
        if self.dequantization_kind == "uniform":
            return distributions.UniformDequantization(num_bins, self.event_shape)
        return distributions.VariationalDequantization(
            num_bins, self.event_shape, num_steps=self.dequantizer_steps,
            filters=self.dequantizer_filters or self.filters, blocks=self.dequantizer_blocks,
            components=self.num_components, heads=self.heads, dropout=self.dropout,
            attention=self.attention, transformer=self.transformer,
            dtype=self.dtype_policy.name, name=f"{self.name}_dequantization")

    def _step(self, shape, name, mask, parity):
        """ActNorm, 1x1 convolution and coupling, in data -> noise order."""
        actnorm = nets.ActNormParams(shape[-1], spatial_shape=shape[:-1],
                                     dtype=self.dtype_policy, name=f"{name}_actnorm")
        kernel = nets.Conv1x1Kernel(shape[-1], seed=self.seed + len(self.kernels),
                                    dtype=self.dtype_policy, name=f"{name}_conv1x1")
        conditioner = nets.GatedConvAttentionNet(
            self.filters, self.blocks,
            bijectors.Coupling.conditioner_output_size(shape, self.transformer, mask, parity),
            heads=self.heads, dropout=self.dropout,
            # Attention over a single position is the identity on values: none on 1x1 maps.
            attention=self.attention and shape[0] * shape[1] > 1,
            dtype=self.dtype_policy, name=f"{name}_conditioner")
        self.actnorms.append(actnorm)
        self.kernels.append(kernel)
        self.conditioners.append(conditioner)
        return [bijectors.ActNorm(actnorm, shape, name=f"{name}_actnorm"),
                bijectors.InvertibleConv1x1(kernel, shape, name=f"{name}_conv1x1"),
                bijectors.Coupling(conditioner, shape, self.transformer, mask=mask,
                                   parity=parity, name=f"{name}_coupling")]

    def _couplings(self, shape, level, first, count, mask):
        if mask == "checkerboard" and shape[0] * shape[1] == 1:
            # A checkerboard over one pixel keeps or changes everything: split channels.
            mask = "half"
        # Parities alternate within each group, starting from 0 (the original's TupleFlip).
        steps = [self._step(shape, f"level_{level}_step_{first + k}", mask, k % 2)
                 for k in range(count)]
        return [bijector for step in steps for bijector in step]

    def _full_steps(self, shape, level):
        return self._couplings(shape, level, 0, self.num_steps[0], "checkerboard")

    def _squeezed_steps(self, shape, level):
        first = self.num_steps[0]
        return (self._couplings(shape, level, first, self.num_steps[1], "half")
                + self._couplings(shape, level, first + self.num_steps[1],
                                  self.num_steps[2], "checkerboard"))

    def get_config(self):
        config = super().get_config()
        config.pop("context_size", None)
        return {
            **config,
            "num_bins": self.num_bins,
            "dequantization": self.dequantization_kind,
            "coupling": self.coupling,
            "attention": self.attention,
            "num_components": self.num_components,
            "filters": self.filters,
            "blocks": self.blocks,
            "heads": self.heads,
            "dropout": self.dropout,
            "num_levels": self.num_levels,
            "num_steps": self._num_steps_config,
            "dequantizer_steps": self.dequantizer_steps,
            "dequantizer_filters": self.dequantizer_filters,
            "dequantizer_blocks": self.dequantizer_blocks,
            "logit_alpha": self.logit_alpha,
            "seed": self.seed,
        }


def _check_steps(num_steps):
    if isinstance(num_steps, int) and not isinstance(num_steps, bool):
        return (_validation.check_positive_int("num_steps", num_steps),) * 3
    if isinstance(num_steps, str) or not hasattr(num_steps, "__iter__"):
        raise TypeError(f"num_steps must be three ints (checkerboard, channel, checkerboard), "
                        f"got {num_steps!r}")
    steps = list(num_steps)
    if len(steps) != 3:
        raise ValueError(f"num_steps must be three ints (checkerboard, channel, "
                         f"checkerboard), got {num_steps!r}")
    steps = [_validation.check_int("num_steps entries", n, minimum=0) for n in steps]
    if not sum(steps):
        raise ValueError(f"num_steps must have at least one coupling, got {num_steps!r}")
    return tuple(steps)
