"""Keras 3 layers that compute flow parameters. They own every variable of a flow."""

from tfp_flows.nets.actnorm import ActNormParams
from tfp_flows.nets.conv1x1 import Conv1x1Kernel
from tfp_flows.nets.conv_resnet import ConvResNet
from tfp_flows.nets.denseflow import CrossUnitParams, DenseAttentionNet, NystromAttention
from tfp_flows.nets.flowpp import GatedConvAttentionNet, GatedConvContextNet
from tfp_flows.nets.glow_net import GlowConvNet
from tfp_flows.nets.made import MADE, ORDERINGS, fan_in_uniform
from tfp_flows.nets.mlp import MLP, ResidualMLP
from tfp_flows.nets.nanoflow import (
    EMBEDDINGS,
    ConvTrunk,
    MADETrunk,
    MaskedStepProjection,
    MLPTrunk,
    SharedTrunkConditioner,
    StepProjection,
    embedding_kinds,
)
from tfp_flows.nets.scale import LogScale
from tfp_flows.nets.waveflow import CausalConvTrunk

__all__ = ["EMBEDDINGS", "MADE", "MLP", "ORDERINGS", "ActNormParams", "CausalConvTrunk",
           "Conv1x1Kernel", "ConvResNet", "ConvTrunk", "CrossUnitParams", "DenseAttentionNet",
           "GatedConvAttentionNet", "GatedConvContextNet", "GlowConvNet", "LogScale",
           "MADETrunk", "MLPTrunk", "MaskedStepProjection", "NystromAttention", "ResidualMLP",
           "SharedTrunkConditioner", "StepProjection", "embedding_kinds", "fan_in_uniform"]
