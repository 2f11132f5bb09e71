"""What is not a bijection: dequantization, noise augmentation and their lower-bound densities.

Inference surjections (`InferenceSurjection`: `UniformDequantization`,
`VariationalDequantization`, `NormalAugmentation`, DenseFlow's `CrossUnitBlock`, and
`InferenceChain` composing them with bijectors) link data to the latent a flow models;
`LowerBoundDistribution` is the resulting data distribution, sampled exactly and evaluated
by the ELBO or IWBO (`importance_weighted_bound`).
"""

from tfp_flows.distributions.augmentation import NormalAugmentation
from tfp_flows.distributions.bound import LowerBoundDistribution, importance_weighted_bound
from tfp_flows.distributions.chain import FactorOut, InferenceChain
from tfp_flows.distributions.cross_unit import CrossUnitBlock
from tfp_flows.distributions.dequantization import UniformDequantization, uniform_dequantize
from tfp_flows.distributions.surjection import InferenceSurjection
from tfp_flows.distributions.variational_dequantization import VariationalDequantization

__all__ = ["CrossUnitBlock", "FactorOut", "InferenceChain", "InferenceSurjection",
           "LowerBoundDistribution", "NormalAugmentation",
           "UniformDequantization", "VariationalDequantization", "importance_weighted_bound",
           "uniform_dequantize"]
