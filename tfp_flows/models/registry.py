"""The family registry, as `tfp_flows.models` exports it (defined in `tfp_flows._registry`).

The table lives outside `tfp_flows.models` because importing this package imports
TensorFlow, and the `tfp-flows` command reads the table without it (to answer `--help`).
See `tfp_flows._registry` for the table, `Family` and how a family is added.
"""

from tfp_flows._registry import (
    DATA_KINDS,
    FAMILIES,
    SETTINGS,
    Family,
    get_family,
    register_family,
    temporary_family,
)

__all__ = [
    "DATA_KINDS",
    "FAMILIES",
    "SETTINGS",
    "Family",
    "get_family",
    "register_family",
    "temporary_family",
]
