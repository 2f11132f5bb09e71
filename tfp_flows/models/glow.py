"""The Glow builder: multi-scale flow of ActNorm, invertible 1x1 convolutions and couplings."""

import keras

from tfp_flows import bijectors, nets
from tfp_flows._validation import check_bool, check_choice, check_positive_int
from tfp_flows.models.flow import Flow
from tfp_flows.models.multiscale import multiscale_bijector

__all__ = ["Glow"]

_COUPLINGS = {"affine": bijectors.AffineCoupling, "additive": bijectors.AdditiveCoupling}
_CONDITIONERS = ("glow", "resnet")


@keras.saving.register_keras_serializable(package="tfp_flows")
class Glow(Flow):
    """Glow: `num_levels` levels of `num_steps` (ActNorm, 1x1 conv, coupling) steps.

    In the data -> noise direction each level squeezes `[H, W, C] -> [H/2, W/2, 4C]`, runs
    its steps (ActNorm, invertible 1x1 convolution, affine or additive coupling with a
    zero-initialised conv conditioner), then factors out half of the channels: with
    `split_prior=True` the factored-out half `z_2` is normalised by a learned Gaussian
    conditioned on the kept half, `eps_2 = (z_2 - mu(z_1)) * exp(-log_sigma(z_1))` (an
    affine coupling, so the flow stays one bijector chain), and the kept half `z_1` goes
    through the next level; the last level has no split. The pieces are unsqueezed back, so
    the noise has the data's event shape and a standard Normal base. The recursion is the
    one RealNVP shares (`tfp_flows.models.multiscale.multiscale_bijector`): level `i` is the
    chain `level_{i}` of `level_{i}_squeeze`, the steps `level_{i}_step_{k}_actnorm`,
    `..._conv1x1`, `..._coupling`, then `level_{i}_prior`, `level_{i}_split` and
    `level_{i}_unsqueeze`, in data -> noise order.

    The conditioners (of the couplings and of the split priors) are, with
    `conditioner="glow"`, the paper's network `nets.GlowConvNet(hidden_channels, ...)`: a
    3x3 convolution, ReLU, a 1x1 convolution, ReLU, a zero-initialised 3x3 convolution, with
    ActNorm after each hidden convolution, as in the original code (`hidden_channels=512`
    is the paper's width). `conditioner="resnet"` gives each of them a
    `nets.ConvResNet(hidden_channels, num_blocks, ...)` instead, a conv ResNet of
    `num_blocks` residual blocks (the only conditioner before there was a choice).

    The affine couplings' scales are, with `coupling_scale="sigmoid"`, the paper's: in the
    data -> noise direction a coupling multiplies by `sigmoid(s_raw + 2) / sigmoid(2)`
    (normalised so a fresh coupling is the identity), so it can shrink its input but
    hardly grow it (by at most 1.135), and the ActNorms do the normalising. With
    `coupling_scale="exp"` (the only scale before there was a choice) each coupling may
    grow it by up to `e^log_scale_bound`; over many couplings that growth compounds on
    images unlike the training ones, whose NLL can reach `1e10` bits/dim and more (see
    `tff.bijectors.Affine`). The split priors keep the `"exp"` scale: their output leaves
    the flow, nothing compounds it.

    With `num_bins=K` the chain ends with `LevelScaling(K, centered=True)`: the density is
    over dequantized data in `[0, K)` (for example `uniform_dequantize`d 8-bit images with
    `K = 256`), so the reported NLL and `bits_per_dim` are those of the discrete data. With
    `logit_alpha` as well, the data are scaled to `[0, 1)` and logit-transformed instead.

    Reference: Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    arXiv:1807.03039.

    Args:
        event_shape: `[H, W, C]` with `H` and `W` divisible by `2 ** num_levels`.
        num_levels: number of levels `L`.
        num_steps: steps `K` per level.
        hidden_channels: width of the conditioners (their hidden convolutions).
        num_blocks: residual blocks per conditioner with `conditioner="resnet"`; the
            paper's network has none and does not read it.
        coupling: `"affine"` or `"additive"`.
        lu: LU-parameterised 1x1 convolutions (else plain kernels).
        split_prior: learned Gaussian prior for each factored-out half.
        num_bins: number of discrete values per dimension of the data (`None`: the flow
            models continuous data as given).
        logit_alpha: with `num_bins`, model the logit of the data scaled to `[0, 1)`
            (RealNVP's `LogitTransform`, margin `alpha`) instead of the data centred on 0.
        log_scale_bound: bound of the soft-clamped log-scales of the couplings (with
            `coupling_scale="sigmoid"`, of their shrinking side only) and split priors.
        context_size: context vector size for a conditional flow.
        seed: seed of the 1x1 convolutions' random orthogonal initialisation.
        conditioner: `"glow"` (the paper's network, `nets.GlowConvNet`) or `"resnet"`
            (`nets.ConvResNet`), for the couplings and the split priors.
        coupling_scale: `"sigmoid"` (the paper's) or `"exp"`, the scale of the affine
            couplings (see above and `tff.bijectors.Affine`).
        conditioner_actnorm: with `conditioner="glow"`, an ActNorm after each hidden
            convolution of the conditioners (openai/glow's code); `False` gives those
            convolutions biases instead (normflows' `GlowBlock` default).
        **kwargs: `name`, `dtype` of the Keras model.

    Example:
        >>> flow = Glow([8, 8, 1], num_levels=2, num_steps=1, hidden_channels=8)
        >>> flow.sample(2, seed=0).shape
        TensorShape([2, 8, 8, 1])
    """

    def __init__(self, event_shape, num_levels=2, num_steps=8, hidden_channels=128,
                 num_blocks=1, coupling="affine", lu=True, split_prior=True, num_bins=None,
                 logit_alpha=None, log_scale_bound=3.0, context_size=None, seed=0,
                 conditioner="glow", coupling_scale="sigmoid", conditioner_actnorm=True,
                 **kwargs):
        super().__init__(event_shape, context_size=context_size, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(f"Glow needs an image event_shape [H, W, C], got {event_shape!r}")
        self.num_levels = check_positive_int("num_levels", num_levels)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.conditioner = check_choice("conditioner", conditioner, _CONDITIONERS)
        self.coupling_scale = check_choice("coupling_scale", coupling_scale,
                                           bijectors.AFFINE_SCALES)
        self.conditioner_actnorm = check_bool("conditioner_actnorm", conditioner_actnorm)
        size = 2 ** self.num_levels
        if self.event_shape[0] % size or self.event_shape[1] % size:
            raise ValueError(f"Glow with num_levels={num_levels} needs height and width "
                             f"divisible by {size}, got event_shape {self.event_shape}")
        if coupling not in _COUPLINGS:
            raise ValueError(f"coupling must be one of {sorted(_COUPLINGS)}, got {coupling!r}")
        self.coupling = coupling
        self.lu = bool(lu)
        self.split_prior = bool(split_prior)
        self.log_scale_bound = log_scale_bound
        self.seed = seed
        self.actnorms, self.kernels, self.conditioners, self.priors = [], [], [], []
        # Glow creates its layers in sampling order (deepest level first, last step first),
        # as it always has: the order of `weights`, of checkpoints and of the 1x1 kernels'
        # seeds stays the same.
        level_0 = multiscale_bijector(
            self.event_shape, self.num_levels, self._level_steps,
            factor_out_prior=self._split_prior if self.split_prior else None,
            creation_order="noise_to_data")
        self._set_bijectors(self._data_space_steps(num_bins, logit_alpha) + [level_0])

    def _conditioner_layer(self, output_channels, name):
        if self.conditioner == "resnet":
            return nets.ConvResNet(self.hidden_channels, self.num_blocks, output_channels,
                                   dtype=self.dtype_policy, name=name)
        return nets.GlowConvNet(self.hidden_channels, output_channels,
                                actnorm=self.conditioner_actnorm, dtype=self.dtype_policy,
                                name=name)

    def _coupling(self, coupling_class, shape, parity, name, conditioners, scale="exp"):
        conditioner = self._conditioner_layer(
            coupling_class.conditioner_output_size(shape, "half", parity),
            f"{name}_conditioner")
        conditioners.append(conditioner)
        extra = {}
        if coupling_class is bijectors.AffineCoupling:
            extra.update(log_scale_bound=self.log_scale_bound, scale=scale)
        return coupling_class(conditioner, shape, mask="half", parity=parity,
                              conditional=self.conditional, context_size=self.context_size,
                              name=name, **extra)

    def _step(self, shape, name, parity):
        """One Glow step in data -> noise order: ActNorm, 1x1 conv, coupling."""
        actnorm = nets.ActNormParams(shape[-1], dtype=self.dtype_policy, name=f"{name}_actnorm")
        kernel = nets.Conv1x1Kernel(shape[-1], lu=self.lu, seed=self.seed + len(self.kernels),
                                    dtype=self.dtype_policy, name=f"{name}_conv1x1")
        self.actnorms.append(actnorm)
        self.kernels.append(kernel)
        return [
            bijectors.ActNorm(actnorm, shape, name=f"{name}_actnorm"),
            bijectors.InvertibleConv1x1(kernel, shape, name=f"{name}_conv1x1"),
            self._coupling(_COUPLINGS[self.coupling], shape, parity, f"{name}_coupling",
                           self.conditioners, scale=self.coupling_scale),
        ]

    def _level_steps(self, shape, level):
        """The `num_steps` steps of `level` on its squeezed `shape`, in data -> noise order."""
        # Created last step first, the sampling order the builder asks for.
        steps = [self._step(shape, f"level_{level}_step_{k}", k % 2)
                 for k in reversed(range(self.num_steps))]
        return [bijector for step in reversed(steps) for bijector in step]

    def _split_prior(self, shape, level):
        """The learned prior of the half that `level` factors out (an affine coupling)."""
        return self._coupling(bijectors.AffineCoupling, shape, 0, f"level_{level}_prior",
                              self.priors)

    def get_config(self):
        return {
            **super().get_config(),
            "num_levels": self.num_levels,
            "num_steps": self.num_steps,
            "hidden_channels": self.hidden_channels,
            "num_blocks": self.num_blocks,
            "coupling": self.coupling,
            "lu": self.lu,
            "split_prior": self.split_prior,
            "num_bins": self.num_bins,
            "logit_alpha": self.logit_alpha,
            "log_scale_bound": self.log_scale_bound,
            "seed": self.seed,
            "conditioner": self.conditioner,
            "coupling_scale": self.coupling_scale,
            "conditioner_actnorm": self.conditioner_actnorm,
        }

    @classmethod
    def from_config(cls, config):
        # A config without `conditioner` was saved when ConvResNet was the only one, one
        # without `coupling_scale` when the couplings' scales were soft-clamped exponentials.
        return super().from_config({"conditioner": "resnet", "coupling_scale": "exp", **config})
