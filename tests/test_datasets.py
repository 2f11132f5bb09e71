"""Toy 2-D densities: shapes, dtypes, scale, determinism, splits and argument errors."""

import numpy as np
import pytest

from tfp_flows import datasets
from tfp_flows.datasets import TOY_DATASETS, load_toy, toy

NAMES = sorted(TOY_DATASETS)


def test_registry_lists_every_generator():
    assert NAMES == ["checkerboard", "eight_gaussians", "pinwheel", "spirals", "two_moons"]
    for name in NAMES:
        assert getattr(datasets, name) is TOY_DATASETS[name]


@pytest.mark.parametrize("name", NAMES)
def test_generators_return_float32_points_at_unit_scale(name):
    points = TOY_DATASETS[name](3001, seed=1)
    assert points.shape == (3001, 2)
    assert points.dtype == np.float32
    assert np.all(np.isfinite(points))
    assert np.all(np.abs(points) < 4.0)
    assert 0.3 < points.std() < 2.0


@pytest.mark.parametrize("name", NAMES)
def test_generators_are_deterministic_given_the_seed(name):
    generate = TOY_DATASETS[name]
    np.testing.assert_array_equal(generate(500, seed=3), generate(500, seed=3))
    assert not np.array_equal(generate(500, seed=3), generate(500, seed=4))


@pytest.mark.parametrize("name", NAMES)
def test_a_single_point_works(name):
    assert TOY_DATASETS[name](1).shape == (1, 2)


def test_two_moons_lies_on_scikit_learn_half_circles():
    points = toy.two_moons(4000, noise=0.0, seed=0).astype(np.float64)
    outer = np.abs(np.hypot(points[:, 0], points[:, 1]) - 1.0) < 1e-5
    inner = np.abs(np.hypot(points[:, 0] - 1.0, points[:, 1] - 0.5) - 1.0) < 1e-5
    assert np.all(outer | inner)
    assert outer.sum() == 2000
    assert np.all(points[outer, 1] >= -1e-6) and np.all(points[inner, 1] <= 0.5 + 1e-6)


def test_two_moons_noise_is_gaussian_with_the_requested_scale():
    points = toy.two_moons(20000, noise=0.05, seed=0).astype(np.float64)
    radius_outer = np.hypot(points[:, 0], points[:, 1]) - 1.0
    radius_inner = np.hypot(points[:, 0] - 1.0, points[:, 1] - 0.5) - 1.0
    distance = np.minimum(np.abs(radius_outer), np.abs(radius_inner))
    # The distance to the nearer circle is roughly |N(0, 0.05)|: mean 0.05 * sqrt(2 / pi).
    assert abs(distance.mean() - 0.05 * np.sqrt(2 / np.pi)) < 0.005


def test_checkerboard_fills_the_dark_squares_evenly():
    points = toy.checkerboard(16000, seed=0)
    columns, rows = np.floor(points[:, 0]), np.floor(points[:, 1])
    assert np.all((columns + rows) % 2 == 0)
    _, counts = np.unique(np.stack([columns, rows], 1), axis=0, return_counts=True)
    assert len(counts) == 8
    assert counts.min() > 1700 and counts.max() < 2300


def test_eight_gaussians_has_eight_modes_on_the_circle():
    points = toy.eight_gaussians(8000, radius=2.0, std=0.01, seed=0)
    angles = np.round(np.arctan2(points[:, 1], points[:, 0]) / (np.pi / 4)) % 8
    assert set(angles.astype(int)) == set(range(8))
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 2.0, atol=0.06)


def test_spirals_are_point_reflections_of_each_other():
    points = toy.spirals(4000, noise=0.0, seed=0)
    assert abs(points.mean(0)).max() < 0.1


def test_pinwheel_spreads_points_over_the_arms():
    points = toy.pinwheel(5000, num_arms=5, radial_std=0.05, tangential_std=0.0, rate=0.0)
    angles = np.round(np.arctan2(-points[:, 1], points[:, 0]) / (2 * np.pi / 5)) % 5
    _, counts = np.unique(angles, return_counts=True)
    np.testing.assert_array_equal(counts, [1000] * 5)


def test_load_toy_splits_without_overlap_and_is_deterministic():
    train, test = load_toy("two_moons", 1001, seed=5, test_fraction=0.25)
    assert train.shape == (751, 2) and test.shape == (250, 2)
    assert train.dtype == test.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([train, test]), toy.two_moons(1001, seed=5))
    again = load_toy("two_moons", 1001, seed=5, test_fraction=0.25)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)


def test_load_toy_passes_generator_arguments():
    train, _ = load_toy("two_moons", 100, noise=0.0)
    np.testing.assert_array_equal(train, toy.two_moons(100, noise=0.0)[:80])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"name": "three_moons"}, ValueError, "'three_moons'"),
    ({"name": None}, ValueError, "None"),
    ({"n": 0}, ValueError, "n must be a positive int, got 0"),
    ({"n": 10.0}, TypeError, "got 10.0"),
    ({"n": True}, TypeError, "got True"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
    ({"seed": 1.5}, TypeError, "got 1.5"),
    ({"test_fraction": 0.0}, ValueError, "test_fraction must be a number in (0, 1), got 0.0"),
    ({"test_fraction": 1}, ValueError, "got 1"),
    ({"test_fraction": "0.2"}, TypeError, "'0.2'"),
    ({"n": 3, "test_fraction": 0.1}, ValueError, "leaves 3 training and 0 test points"),
    ({"noise": -0.1}, ValueError, "noise must be a finite number >= 0, got -0.1"),
    ({"noise": float("nan")}, ValueError, "got nan"),
])
def test_load_toy_rejects_bad_arguments_naming_the_value(kwargs, error, message):
    arguments = {"name": "two_moons", "n": 100, **kwargs}
    with pytest.raises(error, match="^.*" + message.replace("(", r"\(").replace(
            ")", r"\)").replace(".", r"\.")):
        load_toy(arguments.pop("name"), arguments.pop("n"), **arguments)


@pytest.mark.parametrize("call, error, message", [
    (lambda: toy.eight_gaussians(10, radius=0.0), ValueError,
     "radius must be a positive number, got 0.0"),
    (lambda: toy.eight_gaussians(10, std=-1.0), ValueError, "std must be"),
    (lambda: toy.pinwheel(10, num_arms=0), ValueError, "num_arms must be a positive int, got 0"),
    (lambda: toy.spirals(-5), ValueError, "n must be a positive int, got -5"),
    (lambda: toy.checkerboard(10, seed="a"), TypeError, "seed must be an int >= 0, got 'a'"),
])
def test_generators_reject_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_density_grid_integrates_a_normal_to_one():
    def log_normal(points):
        return -0.5 * (points.astype(np.float64) ** 2).sum(1) - np.log(2 * np.pi)

    xs, ys, density = datasets.density_grid(log_normal, [(-6, 6), (-6, 6)], grid_size=121)
    assert density.shape == (121, 121)
    area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(density.sum() * area - 1.0) < 1e-3


def test_plots_write_png_files(tmp_path):
    points = toy.two_moons(300)
    density = datasets.plot_density(lambda z: -(z ** 2).sum(1), points, tmp_path / "d.png",
                                    grid_size=20)
    samples = datasets.plot_samples(points, tmp_path / "sub" / "s.png", data=points)
    for path in (density, samples):
        with open(path, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "sub"]


def test_plots_reject_points_that_are_not_2d(tmp_path):
    with pytest.raises(ValueError, match=r"samples must be an array of 2-D points \[n, 2\], "
                                         r"got shape \[4, 3\]"):
        datasets.plot_samples(np.zeros([4, 3]), tmp_path / "s.png")


def test_image_grid_draws_levels_beside_data(tmp_path):
    from tfp_flows.datasets import plot_image_grid

    rng = np.random.default_rng(0)
    samples = rng.uniform(-1.0, 18.0, size=[10, 8, 8, 1])
    samples[0, 0, 0, 0] = np.nan  # drawn black, not an error
    path = plot_image_grid(samples, tmp_path / "grid.png", num_bins=17,
                           data=rng.integers(0, 17, size=[5, 8, 8, 1]))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # Two channels: the first one is drawn.
    plot_image_grid(rng.uniform(0, 256, size=[4, 4, 4, 2]), tmp_path / "two.png")
    with pytest.raises(ValueError, match=r"images must be images \[n, height, width, channels\]"):
        plot_image_grid(np.zeros([4, 8, 8]), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="num_bins must be an int >= 2"):
        plot_image_grid(samples, tmp_path / "bad.png", num_bins=1)
