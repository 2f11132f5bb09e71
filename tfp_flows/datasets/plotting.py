"""PNG figures of 2-D densities and samples, and image grids, drawn with Matplotlib's Agg.

Matplotlib is imported when a figure is drawn, not when `tfp_flows` is imported, and the
figures never touch `pyplot`'s global state (safe in scripts, tests and headless servers).
Files are written to a temporary name and moved into place, so an existing figure is
replaced only by a complete one.
"""

import os

import numpy as np

from tfp_flows._atomic import staged
from tfp_flows._validation import check_int, check_positive_int

__all__ = ["density_grid", "plot_density", "plot_image_grid", "plot_samples"]


def _figure(num_axes, bounds):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Panels keep equal axis scales; size the figure to their aspect ratio.
    (x_min, x_max), (y_min, y_max) = bounds
    height = float(np.clip(5.0 * (y_max - y_min) / (x_max - x_min), 2.5, 6.0)) + 0.5
    figure = Figure(figsize=(5 * num_axes, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, num_axes, squeeze=False)[0]
    return figure, list(axes)


def _save(figure, path):
    path = os.fspath(path)
    with staged(path) as staging:
        figure.savefig(staging, format="png", dpi=100)
    return path


def _bounds(data, margin=0.1):
    data = np.asarray(data, dtype=np.float64)
    low, high = np.percentile(data, [0.5, 99.5], axis=0)
    pad = margin * np.maximum(high - low, 1e-6)
    return [(low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])]


def _check_points(name, points):
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 1:
        raise ValueError(f"{name} must be an array of 2-D points [n, 2], got shape "
                         f"{list(points.shape)}")
    return points


def density_grid(log_prob_fn, bounds, grid_size=200):
    """Evaluates `exp(log_prob_fn)` on a regular grid.

    Args:
        log_prob_fn: maps a `float32` array `[m, 2]` to `[m]` log-densities.
        bounds: `[(x_min, x_max), (y_min, y_max)]`.
        grid_size: points per axis.

    Returns:
        `(xs, ys, density)` with `density` of shape `[grid_size, grid_size]` (rows follow
        `ys`).

    Example:
        >>> xs, ys, p = density_grid(lambda z: -0.5 * (z ** 2).sum(1) - np.log(2 * np.pi),
        ...                          [(-5, 5), (-5, 5)], grid_size=101)
        >>> round(float(p.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])), 3)
        1.0
    """
    check_int("grid_size", grid_size, minimum=2)
    (x_min, x_max), (y_min, y_max) = bounds
    xs = np.linspace(x_min, x_max, grid_size)
    ys = np.linspace(y_min, y_max, grid_size)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    log_density = np.asarray(log_prob_fn(grid), dtype=np.float64)
    density = np.exp(np.nan_to_num(log_density, nan=-np.inf))
    return xs, ys, density.reshape(grid_size, grid_size)


def plot_density(log_prob_fn, data, path, title="learned density", grid_size=200,
                 max_points=5000):
    """Writes a PNG: the density as a heat map beside a scatter plot of `data`.

    Args:
        log_prob_fn: maps a `float32` array `[m, 2]` to `[m]` log-densities (for example a
            flow's `log_prob`).
        data: `[n, 2]` points, which also set the plotted region.
        path: the PNG file to write.
        title: title of the heat map.
        grid_size: grid points per axis.
        max_points: at most this many points are scattered.

    Returns:
        `path`.
    """
    data = _check_points("data", data)
    bounds = _bounds(data)
    xs, ys, density = density_grid(log_prob_fn, bounds, grid_size)
    figure, (left, right) = _figure(2, bounds)
    left.pcolormesh(xs, ys, density, shading="auto", cmap="viridis")
    left.set_title(title)
    shown = data[:max_points]
    right.scatter(shown[:, 0], shown[:, 1], s=1, alpha=0.5, color="tab:blue")
    right.set_title(f"data ({len(shown)} points)")
    for axes in (left, right):
        axes.set_xlim(*bounds[0])
        axes.set_ylim(*bounds[1])
        axes.set_aspect("equal")
    return _save(figure, path)


def plot_samples(samples, path, data=None, title="samples", max_points=5000):
    """Writes a PNG scatter plot of `samples`, beside `data` when given.

    Args:
        samples: `[n, 2]` points drawn from a model.
        path: the PNG file to write.
        data: optional `[m, 2]` reference points, drawn in their own panel.
        title: title of the samples' panel.
        max_points: at most this many points per panel.

    Returns:
        `path`.
    """
    samples = _check_points("samples", samples)
    panels = [(samples, title, "tab:orange")]
    if data is not None:
        data = _check_points("data", data)
        panels.insert(0, (data, "data", "tab:blue"))
    bounds = _bounds(data if data is not None else samples)
    figure, axes_list = _figure(len(panels), bounds)
    for axes, (points, name, color) in zip(axes_list, panels):
        shown = points[:max_points]
        axes.scatter(shown[:, 0], shown[:, 1], s=1, alpha=0.5, color=color)
        axes.set_title(f"{name} ({len(shown)} points)")
        axes.set_xlim(*bounds[0])
        axes.set_ylim(*bounds[1])
        axes.set_aspect("equal")
    return _save(figure, path)


def _tile(images, num_bins, columns):
    """`[n, H, W, C]` levels -> one `[rows*(H+1)-1, columns*(W+1)-1, C]` image in [0, 1]."""
    levels = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0, posinf=0.0,
                           neginf=0.0)
    pixels = np.clip(np.floor(levels), 0, num_bins - 1) / (num_bins - 1)
    count, height, width, channels = pixels.shape
    rows = -(-count // columns)
    grid = np.ones([rows * (height + 1) - 1, columns * (width + 1) - 1, channels])
    for index, image in enumerate(pixels):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top:top + height, left:left + width] = image
    return grid


def _check_images(name, images):
    """`[n, H, W, C]` -> the images to draw: grey (C = 1), RGB (C = 3), else channel 0."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[-1] < 1:
        raise ValueError(f"{name} must be images [n, height, width, channels], got shape "
                         f"{list(images.shape)}")
    return images if images.shape[-1] in (1, 3) else images[..., :1]


def plot_image_grid(images, path, num_bins=256, data=None, title="samples", max_images=64):
    """Writes a PNG grid of images (e.g. a flow's samples), beside a grid of `data` if given.

    Values are dequantized levels, as an image flow with `num_bins` samples them (about
    `[0, num_bins)`; a flow with a logit transform reaches a little beyond); each is
    floored and clipped to a level in `0..num_bins-1`, and non-finite values are drawn
    black.

    Args:
        images: `[n, height, width, channels]`: 1 channel is drawn grey, 3 as RGB, and of
            any other number only the first channel, grey.
        path: the PNG file to write.
        num_bins: number of levels `K` (256 for 8-bit images, 17 for the digits).
        data: optional reference images of the same layout, drawn in their own panel.
        title: title of the images' panel.
        max_images: at most this many images per panel.

    Returns:
        `path`.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
        >>> images = np.random.default_rng(0).uniform(0, 17, size=[16, 8, 8, 1])
        >>> os.path.basename(plot_image_grid(images, path, num_bins=17))
        'grid.png'
    """
    check_int("num_bins", num_bins, minimum=2)
    check_positive_int("max_images", max_images)
    panels = [(_check_images("images", images)[:max_images], title)]
    if data is not None:
        panels.insert(0, (_check_images("data", data)[:max_images], "data"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5 * len(panels), 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (shown, name) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        columns = int(np.ceil(np.sqrt(len(shown))))
        grid = _tile(shown, num_bins, columns)
        axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0,
                    vmax=1.0, interpolation="nearest")
        axes.set_title(f"{name} ({len(shown)})")
        axes.set_axis_off()
    return _save(figure, path)
