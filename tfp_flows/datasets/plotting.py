"""PNG figures of 2-D densities and samples, drawn with Matplotlib's Agg canvas.

Matplotlib is imported when a figure is drawn, not when `tfp_flows` is imported, and the
figures never touch `pyplot`'s global state (safe in scripts, tests and headless servers).
Files are written to a temporary name and moved into place, so an existing figure is
replaced only by a complete one.
"""

import os
import uuid

import numpy as np

__all__ = ["density_grid", "plot_density", "plot_samples"]


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
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Not mkstemp: its files are private (0600); this one gets the usual permissions.
    staging = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        figure.savefig(staging, format="png", dpi=100)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
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
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
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
