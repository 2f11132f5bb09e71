"""Flow models users build: the `Flow` base class and the family builders."""

from tfp_flows.models.autoregressive import IAF, MAF
from tfp_flows.models.coupling_flows import NICE, RealNVP
from tfp_flows.models.flow import Flow
from tfp_flows.models.glow import Glow

__all__ = ["IAF", "MAF", "NICE", "Flow", "Glow", "RealNVP"]
