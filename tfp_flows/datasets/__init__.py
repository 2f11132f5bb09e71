"""Datasets: toy 2-D densities generated with NumPy, and plots of 2-D densities."""

from tfp_flows.datasets.plotting import density_grid, plot_density, plot_samples
from tfp_flows.datasets.toy import (
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    load_toy,
    pinwheel,
    spirals,
    two_moons,
)

__all__ = [
    "TOY_DATASETS",
    "checkerboard",
    "density_grid",
    "eight_gaussians",
    "load_toy",
    "pinwheel",
    "plot_density",
    "plot_samples",
    "spirals",
    "two_moons",
]
