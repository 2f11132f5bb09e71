"""Flow models users build: the `Flow` base class, the family builders and their registry."""

from tfp_flows.models.autoregressive import IAF, MAF
from tfp_flows.models.coupling_flows import NICE, RealNVP
from tfp_flows.models.denseflow import DenseFlow
from tfp_flows.models.flow import Flow
from tfp_flows.models.flowpp import FlowPlusPlus
from tfp_flows.models.glow import Glow
from tfp_flows.models.multiscale import CREATION_ORDERS, multiscale_bijector
from tfp_flows.models.nanoflow import SCHEMES, SHARINGS, NanoFlow
from tfp_flows.models.registry import (
    DATA_KINDS,
    FAMILIES,
    SETTINGS,
    Family,
    get_family,
    register_family,
    temporary_family,
)
from tfp_flows.models.waveflow import NanoWaveFlow

__all__ = ["CREATION_ORDERS", "DATA_KINDS", "FAMILIES", "IAF", "MAF", "NICE", "SCHEMES",
           "SETTINGS", "SHARINGS", "DenseFlow", "Family", "Flow", "FlowPlusPlus", "Glow",
           "NanoFlow", "NanoWaveFlow", "RealNVP", "get_family", "multiscale_bijector",
           "register_family",
           "temporary_family"]
