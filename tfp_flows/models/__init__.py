"""Flow models users build: the `Flow` base class, the family builders and their registry."""

from tfp_flows.models.autoregressive import IAF, MAF
from tfp_flows.models.coupling_flows import NICE, RealNVP
from tfp_flows.models.flow import Flow
from tfp_flows.models.glow import Glow
from tfp_flows.models.registry import (
    FAMILIES,
    Family,
    get_family,
    register_family,
    temporary_family,
)

__all__ = ["FAMILIES", "IAF", "MAF", "NICE", "Family", "Flow", "Glow", "RealNVP",
           "get_family", "register_family", "temporary_family"]
