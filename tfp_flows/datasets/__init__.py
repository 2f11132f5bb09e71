"""Datasets: toy 2-D densities, integer image sets (digits, tfds), plots of 2-D densities."""

from tfp_flows.datasets.images import (
    DIGITS_NUM_BINS,
    dequantize_dataset,
    load_digits,
    load_tfds,
    prepare_tfds,
    tfds_image_shape,
)
from tfp_flows.datasets.plotting import (
    density_grid,
    plot_density,
    plot_image_grid,
    plot_samples,
)
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
    "DIGITS_NUM_BINS",
    "TOY_DATASETS",
    "checkerboard",
    "density_grid",
    "dequantize_dataset",
    "eight_gaussians",
    "load_digits",
    "load_tfds",
    "load_toy",
    "pinwheel",
    "prepare_tfds",
    "plot_density",
    "plot_image_grid",
    "plot_samples",
    "spirals",
    "tfds_image_shape",
    "two_moons",
]
