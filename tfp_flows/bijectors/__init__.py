"""Bijectors (`tfp.bijectors.Bijector` subclasses) of tfp_flows."""

from tfp_flows.bijectors.actnorm import ActNorm, initialize_actnorm
from tfp_flows.bijectors.augmentation import NoiseAffine
from tfp_flows.bijectors.autoregressive import MaskedAutoregressiveFlow, make_transformer
from tfp_flows.bijectors.base import FlowBijector, soft_clamp
from tfp_flows.bijectors.chain import FlowChain
from tfp_flows.bijectors.conv1x1 import InvertibleConv1x1
from tfp_flows.bijectors.coupling import MASKS, AdditiveCoupling, AffineCoupling, Coupling
from tfp_flows.bijectors.grouped_autoregressive import GroupedAutoregressive
from tfp_flows.bijectors.permute import random_permutation, reverse_permutation
from tfp_flows.bijectors.preprocessing import LevelScaling, LogitTransform, Standardize
from tfp_flows.bijectors.scaling import DiagonalScale
from tfp_flows.bijectors.split import SplitChannels
from tfp_flows.bijectors.squeeze import Squeeze
from tfp_flows.bijectors.transformers import (
    AFFINE_SCALES,
    TRANSFORMER_NAMES,
    Additive,
    Affine,
    LogisticMixtureCDF,
    RationalQuadraticSpline,
    Transformer,
    get_transformer,
)

__all__ = [
    "AFFINE_SCALES",
    "MASKS",
    "TRANSFORMER_NAMES",
    "ActNorm",
    "Additive",
    "AdditiveCoupling",
    "Affine",
    "AffineCoupling",
    "Coupling",
    "DiagonalScale",
    "FlowBijector",
    "FlowChain",
    "GroupedAutoregressive",
    "InvertibleConv1x1",
    "LevelScaling",
    "LogisticMixtureCDF",
    "LogitTransform",
    "MaskedAutoregressiveFlow",
    "NoiseAffine",
    "RationalQuadraticSpline",
    "SplitChannels",
    "Squeeze",
    "Standardize",
    "Transformer",
    "get_transformer",
    "initialize_actnorm",
    "make_transformer",
    "random_permutation",
    "reverse_permutation",
    "soft_clamp",
]
