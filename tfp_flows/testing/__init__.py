"""The public bijector test kit: `check_bijector` runs the contract every bijector meets."""

from tfp_flows.testing.bijector_checks import (
    DEFAULT_TOLERANCES,
    check_bijector,
    discover_trainable_variables,
)

__all__ = ["DEFAULT_TOLERANCES", "check_bijector", "discover_trainable_variables"]
