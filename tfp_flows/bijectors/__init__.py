"""Bijectors (`tfp.bijectors.Bijector` subclasses) of tfp_flows."""

from tfp_flows.bijectors.base import FlowBijector, soft_clamp
from tfp_flows.bijectors.chain import FlowChain
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling, Coupling
from tfp_flows.bijectors.permute import random_permutation, reverse_permutation
from tfp_flows.bijectors.scaling import DiagonalScale

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "DiagonalScale",
    "FlowBijector",
    "FlowChain",
    "random_permutation",
    "reverse_permutation",
    "soft_clamp",
]
