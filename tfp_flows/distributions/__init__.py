"""What is not a bijection: dequantization of discrete data."""

from tfp_flows.distributions.dequantization import uniform_dequantize

__all__ = ["uniform_dequantize"]
