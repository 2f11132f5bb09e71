"""Coupling-flow builders: NICE (additive) and RealNVP (affine)."""

import keras

from tfp_flows import bijectors, nets
from tfp_flows._validation import check_positive_int
from tfp_flows.models.flow import Flow
from tfp_flows.models.multiscale import multiscale_bijector

__all__ = ["NICE", "RealNVP"]

_CONDITIONERS = ("mlp", "residual")
_PERMUTATIONS = (None, "reverse", "random")


class _CouplingFlow(Flow):
    """Alternating-parity couplings with optional permutations between them."""

    coupling_class = None

    def __init__(self, event_shape, num_layers=4, hidden_units=(256, 256), conditioner="mlp",
                 num_blocks=2, hidden_channels=64, mask=None, permutation=None,
                 num_bins=None, logit_alpha=None, context_size=None, seed=0, **kwargs):
        super().__init__(event_shape, context_size=context_size, **kwargs)
        check_positive_int("num_layers", num_layers)
        if conditioner not in _CONDITIONERS:
            raise ValueError(f"conditioner must be one of {_CONDITIONERS}, got {conditioner!r}")
        if permutation not in _PERMUTATIONS:
            raise ValueError(f"permutation must be one of {_PERMUTATIONS}, got {permutation!r}")
        is_image = len(self.event_shape) == 3
        mask = mask or ("checkerboard" if is_image else "half")
        self.num_layers = num_layers
        self.hidden_units = list(hidden_units) if not isinstance(hidden_units, int) else [
            hidden_units]
        self.conditioner = conditioner
        self.num_blocks = num_blocks
        self.hidden_channels = hidden_channels
        self.mask = mask
        self.permutation = permutation
        self.seed = seed
        steps = self._coupling_steps()
        data_steps = self._data_space_steps(num_bins, logit_alpha)
        self._set_bijectors(data_steps + steps + self._extra_steps())

    def _coupling_steps(self):
        """The couplings (and permutations) in data -> noise order; sets `conditioners`.

        Coupling `i` (parity `i % 2`, conditioner `i`) is the `i`-th from the noise end.
        """
        self.conditioners = [
            self._make_conditioner(self.coupling_class.conditioner_output_size(
                self.event_shape, self.mask, i % 2), i)
            for i in range(self.num_layers)
        ]
        steps = []
        for i, conditioner_layer in enumerate(self.conditioners):
            if i and self.permutation == "reverse":
                steps.append(bijectors.reverse_permutation(self.event_shape[-1],
                                                           name=f"reverse_{i}"))
            elif i and self.permutation == "random":
                steps.append(bijectors.random_permutation(
                    self.event_shape[-1], seed=self.seed + i, name=f"permutation_{i}"))
            steps.append(self._make_coupling(conditioner_layer, self.event_shape, self.mask,
                                             i % 2, f"coupling_{i}"))
        return steps[::-1]

    def _make_conditioner(self, output_size, index):
        name = f"conditioner_{index}"
        if len(self.event_shape) == 3:
            return nets.ConvResNet(self.hidden_channels, self.num_blocks, output_size,
                                   dtype=self.dtype_policy, name=name)
        if self.conditioner == "residual":
            return nets.ResidualMLP(self.hidden_units[0], self.num_blocks, output_size,
                                    dtype=self.dtype_policy, name=name)
        return nets.MLP(self.hidden_units, output_size, dtype=self.dtype_policy, name=name)

    def _make_coupling(self, conditioner_layer, shape, mask, parity, name):
        return self.coupling_class(conditioner_layer, shape, mask=mask, parity=parity,
                                   conditional=self.conditional, context_size=self.context_size,
                                   name=name)

    def _extra_steps(self):
        """Bijectors between the couplings and the base noise (data -> noise order)."""
        return []

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "hidden_units": list(self.hidden_units),
            "conditioner": self.conditioner,
            "num_blocks": self.num_blocks,
            "hidden_channels": self.hidden_channels,
            "mask": self.mask,
            "permutation": self.permutation,
            "num_bins": self.num_bins,
            "logit_alpha": self.logit_alpha,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="tfp_flows")
class NICE(_CouplingFlow):
    """NICE: additive couplings and a learned diagonal rescaling.

    `x = h_K(...h_1(exp(s) * z))`: the base noise is rescaled elementwise (the only
    volume change, `log|det| = sum(s)`), then passes through `num_layers` additive
    couplings of alternating parity.

    Reference: Dinh, Krueger, Bengio, "NICE: Non-linear Independent Components
    Estimation", arXiv:1410.8516.

    Args:
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        num_layers: number of couplings.
        hidden_units: MLP widths of each conditioner (vector events).
        conditioner: `"mlp"` or `"residual"` (a residual MLP of width `hidden_units[0]`).
        num_blocks: residual blocks (residual MLP or conv ResNet).
        hidden_channels: conv ResNet width (image events).
        mask: `"half"` (default for vectors) or `"checkerboard"` (default for images).
        permutation: `None`, `"reverse"` or `"random"` between couplings.
        num_bins: number of discrete values per dimension of the data (`None`: the flow
            models continuous data as given).
        logit_alpha: with `num_bins`, model the logit of the data scaled to `[0, 1)` with
            margin `alpha` instead of the data centred on 0.
        context_size: context vector size for a conditional flow.
        seed: seed of the random permutations.
        **kwargs: `name`, `dtype` of the Keras model.

    Example:
        >>> flow = NICE([2], num_layers=2, hidden_units=[16])
        >>> flow.log_prob([[0.0, 0.0]]).shape
        TensorShape([1])
    """

    coupling_class = bijectors.AdditiveCoupling

    def _extra_steps(self):
        self.scale = nets.LogScale(self.event_shape, dtype=self.dtype_policy, name="scale")
        return [bijectors.DiagonalScale(self.scale, self.event_shape, name="scale")]


@keras.saving.register_keras_serializable(package="tfp_flows")
class RealNVP(_CouplingFlow):
    """RealNVP: affine couplings with bounded log-scales, single- or multi-scale.

    Each coupling maps `x_b -> x_b * exp(s(x_a)) + t(x_a)` with the mask choosing `x_a`;
    parities alternate so every entry is transformed.

    With `num_scales=None` the flow is a stack of `num_layers` couplings on the event as
    given (vectors or images). With `num_scales=S` (images only) it is the paper's
    multi-scale architecture (section 3.6). In the data -> noise direction each scale but
    the last runs 3 checkerboard couplings, squeezes `[h, w, c] -> [h/2, w/2, 4c]`, runs 3
    channel-wise ("half" mask) couplings, then factors out half of the channels: only the
    first `2c` go on to the next scale. The last scale runs 4 checkerboard couplings.
    Parities alternate within each group. Each scale is one shape-preserving bijector (it
    unsqueezes at the end), so the noise has the data's event shape and a standard Normal
    base, and the factored-out halves are modelled by that base. The recursion is the one
    Glow shares (`tfp_flows.models.multiscale.multiscale_bijector`): scale `i` is the chain
    `level_{i}` of `level_{i}_checkerboard_{j}`, `level_{i}_squeeze`,
    `level_{i}_channel_{j}`, `level_{i}_split` and `level_{i}_unsqueeze`.

    With `num_bins=K` the chain ends with `LevelScaling(K, centered=True)`: the density is
    over dequantized data in `[0, K)`, so the reported NLL and `bits_per_dim` are those of
    the discrete data. With `logit_alpha` as well, the data are scaled to `[0, 1)` and
    logit-transformed (RealNVP's preprocessing, `alpha = 0.05` in the paper) instead.

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803.

    Args:
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        num_layers: number of couplings of a single-scale flow. With `num_scales` the
            number of couplings is fixed by the architecture (`6 (S - 1) + 4`) and
            `num_layers` must keep its default.
        hidden_units: MLP widths of each conditioner (vector events).
        log_scale_bound: bound of the soft-clamped log-scales.
        num_scales: `None` (single scale) or the number of scales `S >= 1` of a
            multi-scale image flow; `H` and `W` must be divisible by `2 ** (S - 1)`.
        **kwargs: the keyword arguments below, and `name`, `dtype` of the Keras model.

    Keyword Args:
        conditioner: `"mlp"` or `"residual"`.
        num_blocks: residual blocks (residual MLP or conv ResNet).
        hidden_channels: conv ResNet width (image events).
        mask: `"half"` (default for vectors) or `"checkerboard"` (default for images);
            fixed by the architecture with `num_scales`.
        permutation: `None`, `"reverse"` or `"random"` between couplings (single scale
            only).
        num_bins: number of discrete values per dimension of the data (`None`: the flow
            models continuous data as given).
        logit_alpha: with `num_bins`, model the logit of the data scaled to `[0, 1)` with
            margin `alpha` instead of the data centred on 0.
        context_size: context vector size for a conditional flow.
        seed: seed of the random permutations.

    Raises:
        ValueError: `num_scales` is not `None` or a positive int, is given for a vector
            event, does not divide the image, or comes with a non-default `num_layers`,
            a `"half"` mask or a permutation; `num_bins` is not an int >= 2;
            `logit_alpha` is given without `num_bins`.

    Example:
        >>> flow = RealNVP([2], num_layers=2, hidden_units=[16])
        >>> flow.sample(3, seed=0).shape
        TensorShape([3, 2])
        >>> import numpy as np
        >>> images = RealNVP([4, 4, 1], num_scales=2, hidden_channels=4, num_blocks=1)
        >>> images.log_prob(np.zeros([2, 4, 4, 1], "float32")).shape
        TensorShape([2])
    """

    coupling_class = bijectors.AffineCoupling

    def __init__(self, event_shape, num_layers=8, hidden_units=(256, 256), log_scale_bound=3.0,
                 num_scales=None, **kwargs):
        if num_scales is not None:
            check_positive_int("num_scales", num_scales)
        self.log_scale_bound = log_scale_bound
        self.num_scales = num_scales
        super().__init__(event_shape, num_layers=num_layers, hidden_units=hidden_units,
                         **kwargs)

    def _make_coupling(self, conditioner_layer, shape, mask, parity, name):
        return bijectors.AffineCoupling(
            conditioner_layer, shape, mask=mask, parity=parity, conditional=self.conditional,
            context_size=self.context_size, log_scale_bound=self.log_scale_bound, name=name)

    def _coupling_steps(self):
        if self.num_scales is None:
            return super()._coupling_steps()
        self._check_multiscale()
        self.conditioners = []
        return [multiscale_bijector(
            self.event_shape, self.num_scales, self._channel_couplings,
            steps_before_squeeze=self._checkerboard_couplings, squeeze_last_level=False)]

    def _check_multiscale(self):
        if len(self.event_shape) != 3:
            raise ValueError(f"num_scales needs an image event_shape [H, W, C], got "
                             f"{self.event_shape}")
        size = 2 ** (self.num_scales - 1)
        if self.event_shape[0] % size or self.event_shape[1] % size:
            raise ValueError(f"RealNVP with num_scales={self.num_scales} needs height and width "
                             f"divisible by {size}, got event_shape {self.event_shape}")
        if self.num_layers != 8:
            raise ValueError(f"num_layers does not apply with num_scales (each scale has a "
                             f"fixed number of couplings); leave it at its default, got "
                             f"num_layers={self.num_layers}")
        if self.mask != "checkerboard":
            raise ValueError(f"num_scales fixes the masks (checkerboard, then channel-wise); "
                             f"got mask={self.mask!r}")
        if self.permutation is not None:
            raise ValueError(f"num_scales takes no permutation between couplings, got "
                             f"permutation={self.permutation!r}")

    def _affine(self, shape, mask, parity, name):
        conditioner = nets.ConvResNet(
            self.hidden_channels, self.num_blocks,
            bijectors.AffineCoupling.conditioner_output_size(shape, mask, parity),
            dtype=self.dtype_policy, name=f"{name}_conditioner")
        self.conditioners.append(conditioner)
        return self._make_coupling(conditioner, shape, mask, parity, name)

    def _checkerboard_couplings(self, shape, level):
        """Before the squeeze of a scale (data -> noise): 3 couplings, 4 on the last scale."""
        count = 4 if level + 1 == self.num_scales else 3
        return [self._affine(shape, "checkerboard", i % 2, f"level_{level}_checkerboard_{i}")
                for i in range(count)]

    def _channel_couplings(self, shape, level):
        """After the squeeze of a scale (data -> noise): 3 channel-wise couplings."""
        if level + 1 == self.num_scales:
            return []  # the last scale does not squeeze
        return [self._affine(shape, "half", i % 2, f"level_{level}_channel_{i}")
                for i in range(3)]

    def get_config(self):
        return {**super().get_config(), "log_scale_bound": self.log_scale_bound,
                "num_scales": self.num_scales}
