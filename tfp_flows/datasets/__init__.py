"""Datasets: toy 2-D densities, generated 1-D signals, integer image sets (digits, tfds),
plots of 2-D densities.

The image loaders (`tfp_flows.datasets.images`) import TensorFlow, so they load when one of
their names is first used; the toy densities, the signals and the plots need only NumPy (the
`tfp-flows` command reads `TOY_DATASETS` to answer `--help` without TensorFlow).
"""

import importlib
from typing import TYPE_CHECKING

from tfp_flows.datasets.plotting import (
    density_grid,
    plot_density,
    plot_image_grid,
    plot_samples,
)
from tfp_flows.datasets.signals import damped_sinusoids
from tfp_flows.datasets.toy import (
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    load_toy,
    pinwheel,
    spirals,
    two_moons,
)

if TYPE_CHECKING:  # for readers of the source (type checkers, the API docs); see below
    from tfp_flows.datasets.images import (
        DIGITS_NUM_BINS,
        dequantize_dataset,
        load_digits,
        load_tfds,
        prepare_tfds,
        tfds_image_shape,
    )

# The names of `tfp_flows.datasets.images`, bound here when first used.
_IMAGE_NAMES = ("DIGITS_NUM_BINS", "dequantize_dataset", "load_digits", "load_tfds",
                "prepare_tfds", "tfds_image_shape")

__all__ = [
    "DIGITS_NUM_BINS",
    "TOY_DATASETS",
    "checkerboard",
    "damped_sinusoids",
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


def __getattr__(name):
    if name in _IMAGE_NAMES:
        images = importlib.import_module(f"{__name__}.images")
        globals().update({image_name: getattr(images, image_name)
                          for image_name in _IMAGE_NAMES})
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_IMAGE_NAMES})
