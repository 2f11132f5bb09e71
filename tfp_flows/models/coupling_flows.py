"""Coupling-flow builders: NICE (additive) and RealNVP (affine)."""

import keras

from tfp_flows import bijectors, nets
from tfp_flows.models.flow import Flow, check_positive_int

__all__ = ["NICE", "RealNVP"]

_CONDITIONERS = ("mlp", "residual")
_PERMUTATIONS = (None, "reverse", "random")


class _CouplingFlow(Flow):
    """Alternating-parity couplings with optional permutations between them."""

    coupling_class = None

    def __init__(self, event_shape, num_layers=4, hidden_units=(256, 256), conditioner="mlp",
                 num_blocks=2, hidden_channels=64, mask=None, permutation=None,
                 context_size=None, seed=0, **kwargs):
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
        self.conditioners = [
            self._make_conditioner(self.coupling_class.conditioner_output_size(
                self.event_shape, mask, i % 2), i)
            for i in range(num_layers)
        ]
        steps = []
        for i, conditioner_layer in enumerate(self.conditioners):
            if i and permutation == "reverse":
                steps.append(bijectors.reverse_permutation(self.event_shape[-1],
                                                           name=f"reverse_{i}"))
            elif i and permutation == "random":
                steps.append(bijectors.random_permutation(
                    self.event_shape[-1], seed=seed + i, name=f"permutation_{i}"))
            steps.append(self._make_coupling(conditioner_layer, mask, i % 2, i))
        self._set_bijectors(self._extra_steps() + steps)

    def _make_conditioner(self, output_size, index):
        name = f"conditioner_{index}"
        if len(self.event_shape) == 3:
            return nets.ConvResNet(self.hidden_channels, self.num_blocks, output_size,
                                   dtype=self.dtype_policy, name=name)
        if self.conditioner == "residual":
            return nets.ResidualMLP(self.hidden_units[0], self.num_blocks, output_size,
                                    dtype=self.dtype_policy, name=name)
        return nets.MLP(self.hidden_units, output_size, dtype=self.dtype_policy, name=name)

    def _make_coupling(self, conditioner_layer, mask, parity, index):
        return self.coupling_class(conditioner_layer, self.event_shape, mask=mask, parity=parity,
                                   conditional=self.conditional, name=f"coupling_{index}")

    def _extra_steps(self):
        """Bijectors applied to the base noise before the couplings."""
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
    """RealNVP: affine couplings with bounded log-scales (single scale).

    Each coupling maps `x_b -> x_b * exp(s(x_a)) + t(x_a)` with the mask choosing `x_a`;
    parities alternate so every entry is transformed.

    Reference: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803.

    Args:
        event_shape: `[D]` for vectors or `[H, W, C]` for images.
        num_layers: number of couplings.
        hidden_units: MLP widths of each conditioner (vector events).
        log_scale_bound: bound of the soft-clamped log-scales.
        **kwargs: the keyword arguments below, and `name`, `dtype` of the Keras model.

    Keyword Args:
        conditioner: `"mlp"` or `"residual"`.
        num_blocks: residual blocks (residual MLP or conv ResNet).
        hidden_channels: conv ResNet width (image events).
        mask: `"half"` (default for vectors) or `"checkerboard"` (default for images).
        permutation: `None`, `"reverse"` or `"random"` between couplings.
        context_size: context vector size for a conditional flow.
        seed: seed of the random permutations.

    Example:
        >>> flow = RealNVP([2], num_layers=2, hidden_units=[16])
        >>> flow.sample(3, seed=0).shape
        TensorShape([3, 2])
    """

    coupling_class = bijectors.AffineCoupling

    def __init__(self, event_shape, num_layers=8, hidden_units=(256, 256), log_scale_bound=3.0,
                 **kwargs):
        self.log_scale_bound = log_scale_bound
        super().__init__(event_shape, num_layers=num_layers, hidden_units=hidden_units,
                         **kwargs)

    def _make_coupling(self, conditioner_layer, mask, parity, index):
        return bijectors.AffineCoupling(
            conditioner_layer, self.event_shape, mask=mask, parity=parity,
            conditional=self.conditional, log_scale_bound=self.log_scale_bound,
            name=f"coupling_{index}")

    def get_config(self):
        return {**super().get_config(), "log_scale_bound": self.log_scale_bound}
