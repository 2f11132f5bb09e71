"""Toy 2-D densities generated with NumPy: no download, deterministic given a seed.

Every generator returns a shuffled `float32` array `[n, 2]` in its own fixed coordinates,
chosen so that values are O(1) (all of them lie within about `[-4, 4]^2`). No statistics
of the sample are used to rescale it (no data-dependent standardisation), so the same
density is learned whatever `n` and `seed` are, and log-likelihoods in nats are those of
the coordinates documented below:

- `two_moons`: scikit-learn's `make_moons` layout (unit half circles, outer one on
  `t -> (cos t, sin t)`, inner one on `t -> (1 - cos t, 0.5 - sin t)`, `t ~ U[0, pi]`) plus
  isotropic Gaussian noise. With `noise=0.05` its entropy is about 0.26 nats.
- `checkerboard`: uniform on the 8 dark unit squares of a 4 x 4 board covering `[-2, 2]^2`
  (entropy `log 8 = 2.08` nats).
- `eight_gaussians`: an equal mixture of 8 isotropic Gaussians on a circle of radius 2.
- `spirals`: two interleaved spirals, 1.5 turns each, out to radius ~3.5 (FFJORD's
  "2spirals").
- `pinwheel`: 5 curved arms out to radius ~2.5 (FFJORD's "pinwheel" at half size).
"""


import numpy as np

from tfp_flows._validation import (
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
)

__all__ = [
    "TOY_DATASETS",
    "checkerboard",
    "eight_gaussians",
    "load_toy",
    "pinwheel",
    "spirals",
    "two_moons",
]


def _check_count(n, name="n"):
    return check_positive_int(name, n)


def _check_seed(seed):
    return check_int("seed", seed, minimum=0)


def _check_nonnegative(name, value):
    return check_number(name, value, minimum=0.0)


def _check_positive(name, value):
    return check_positive_number(name, value)


def _finish(rng, points):
    """Shuffles (generators build points group by group) and casts to float32."""
    return rng.permutation(points).astype(np.float32)


def two_moons(n, noise=0.05, seed=0):
    """Two interleaved half circles with Gaussian noise (scikit-learn's layout).

    Half of the points (`n // 2`) lie on the outer moon, the rest on the inner one; the
    angle along each moon is uniform.

    Args:
        n: number of points.
        noise: standard deviation of the isotropic Gaussian noise.
        seed: seed of the NumPy generator.

    Returns:
        A `float32` array `[n, 2]`.

    Raises:
        ValueError: if `n` is not a positive int, `noise` is negative or `seed` is not a
            non-negative int.

    Example:
        >>> x = two_moons(1000, seed=1)
        >>> x.shape, x.dtype.name
        ((1000, 2), 'float32')
        >>> bool(-1.5 < x[:, 0].min() and x[:, 0].max() < 2.5)
        True
    """
    n = _check_count(n)
    noise = _check_nonnegative("noise", noise)
    rng = np.random.default_rng(_check_seed(seed))
    n_outer = n // 2
    angle = rng.uniform(0.0, np.pi, n)
    outer = np.stack([np.cos(angle[:n_outer]), np.sin(angle[:n_outer])], axis=1)
    inner = np.stack([1.0 - np.cos(angle[n_outer:]), 0.5 - np.sin(angle[n_outer:])], axis=1)
    points = np.concatenate([outer, inner]) + noise * rng.standard_normal((n, 2))
    return _finish(rng, points)


def checkerboard(n, seed=0):
    """Uniform density on the dark squares of a 4 x 4 checkerboard over `[-2, 2]^2`.

    Args:
        n: number of points.
        seed: seed of the NumPy generator.

    Returns:
        A `float32` array `[n, 2]`.

    Example:
        >>> x = checkerboard(500)
        >>> bool(np.all(np.abs(x) <= 2.0))
        True
        >>> bool(np.all((np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0))
        True
    """
    n = _check_count(n)
    rng = np.random.default_rng(_check_seed(seed))
    first = rng.uniform(-2.0, 2.0, n)
    # Each column holds two dark squares, shifted by one row on odd columns.
    second = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(first) % 2
    return _finish(rng, np.stack([first, second], axis=1))


def eight_gaussians(n, radius=2.0, std=0.25, seed=0):
    """An equal mixture of 8 isotropic Gaussians evenly spaced on a circle.

    Args:
        n: number of points.
        radius: radius of the circle of centres.
        std: standard deviation of each component.
        seed: seed of the NumPy generator.

    Returns:
        A `float32` array `[n, 2]`.

    Example:
        >>> x = eight_gaussians(2000)
        >>> radii = np.linalg.norm(x, axis=1)
        >>> bool(abs(np.median(radii) - 2.0) < 0.1)
        True
    """
    n = _check_count(n)
    radius = _check_positive("radius", radius)
    std = _check_nonnegative("std", std)
    rng = np.random.default_rng(_check_seed(seed))
    angle = 2.0 * np.pi * rng.integers(0, 8, n) / 8.0
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _finish(rng, centres + std * rng.standard_normal((n, 2)))


def spirals(n, noise=0.1, seed=0):
    """Two interleaved spirals (point reflections of each other), 1.5 turns each.

    Along a spiral the angle is `theta = 3 pi sqrt(u)`, `u ~ U[0, 1]`, and the point is
    `(-theta cos theta, theta sin theta) / 3`, with uniform jitter of width 1/6 per
    coordinate (as in FFJORD) and Gaussian noise of standard deviation `noise`.

    Args:
        n: number of points.
        noise: standard deviation of the Gaussian noise.
        seed: seed of the NumPy generator.

    Returns:
        A `float32` array `[n, 2]`.

    Example:
        >>> spirals(10, seed=3).shape
        (10, 2)
    """
    n = _check_count(n)
    noise = _check_nonnegative("noise", noise)
    rng = np.random.default_rng(_check_seed(seed))
    theta = 3.0 * np.pi * np.sqrt(rng.uniform(0.0, 1.0, n))
    arm = np.stack([-np.cos(theta) * theta, np.sin(theta) * theta], axis=1)
    arm += rng.uniform(0.0, 0.5, (n, 2))
    sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)[:, None]
    points = sign * arm / 3.0 + noise * rng.standard_normal((n, 2))
    return _finish(rng, points)


def pinwheel(n, num_arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25, seed=0):
    """Curved Gaussian arms of a pinwheel (Johnson et al. 2016; FFJORD's toy set, halved).

    Each arm is a Gaussian `N((1, 0), diag(radial_std^2, tangential_std^2))` rotated by
    its arm's angle plus `rate * exp(r)` (`r` the radial coordinate), which bends it.

    Args:
        n: number of points (spread as evenly as possible over the arms).
        num_arms: number of arms.
        radial_std: standard deviation along an arm.
        tangential_std: standard deviation across an arm.
        rate: how much the arms bend.
        seed: seed of the NumPy generator.

    Returns:
        A `float32` array `[n, 2]`.

    Example:
        >>> pinwheel(12, num_arms=3).shape
        (12, 2)
    """
    n = _check_count(n)
    num_arms = _check_count(num_arms, "num_arms")
    radial_std = _check_nonnegative("radial_std", radial_std)
    tangential_std = _check_nonnegative("tangential_std", tangential_std)
    rate = _check_nonnegative("rate", rate)
    rng = np.random.default_rng(_check_seed(seed))
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    arm = np.arange(n) % num_arms
    angle = 2.0 * np.pi * arm / num_arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([features[:, 0] * cos + features[:, 1] * sin,
                       -features[:, 0] * sin + features[:, 1] * cos], axis=1)
    return _finish(rng, points)


TOY_DATASETS = {
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "spirals": spirals,
    "pinwheel": pinwheel,
}
"""Names of the toy densities, mapped to their generators `fn(n, seed=...)`."""


def load_toy(name, n, seed=0, test_fraction=0.2, **kwargs):
    """Generates `n` points of a toy density and splits them into train and test sets.

    The data is not standardised: each density is generated at a fixed O(1) scale (see
    this module's docstring), so log-likelihoods are in the generator's coordinates.

    Args:
        name: a key of `TOY_DATASETS`.
        n: total number of points (train + test).
        seed: seed of the generator.
        test_fraction: share of the points held out for testing, in `(0, 1)`; the test
            set has `round(n * test_fraction)` points and both sets must be non-empty.
        **kwargs: passed to the generator (for example `noise=` of `two_moons`).

    Returns:
        `(train, test)`: `float32` arrays `[n_train, 2]` and `[n_test, 2]`.

    Raises:
        ValueError: for an unknown `name`, a bad `n`, `seed` or `test_fraction`, or a
            split leaving one set empty.

    Example:
        >>> train, test = load_toy("two_moons", 1000, test_fraction=0.2)
        >>> train.shape, test.shape
        ((800, 2), (200, 2))
    """
    if not isinstance(name, str) or name not in TOY_DATASETS:
        raise ValueError(
            f"unknown toy dataset {name!r}; expected one of {sorted(TOY_DATASETS)}")
    n = _check_count(n)
    check_number("test_fraction", test_fraction, minimum=0.0, maximum=1.0,
                 exclusive_minimum=True, exclusive_maximum=True)
    num_test = int(round(n * test_fraction))
    if num_test < 1 or num_test >= n:
        raise ValueError(
            f"n={n} with test_fraction={test_fraction!r} leaves {n - num_test} training and "
            f"{num_test} test points; both must be at least 1")
    points = TOY_DATASETS[name](n, seed=seed, **kwargs)
    return points[:-num_test], points[-num_test:]
