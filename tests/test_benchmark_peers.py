"""The peers benchmark's data (the same for both sides) and its verdicts (from its numbers).

Only the NumPy side of `benchmarks/peers.py`: no torch, no training."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
peers = pytest.importorskip("peers")
pytest.importorskip("sklearn")


def test_bilinear_resize_keeps_constants_and_corners():
    matrix = peers._bilinear_matrix(8, 28)
    assert matrix.shape == (28, 8)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    # Half-pixel centres: the outermost output pixels copy the outermost input pixels.
    np.testing.assert_array_equal(matrix[0], np.eye(8)[0])
    np.testing.assert_array_equal(matrix[-1], np.eye(8)[-1])


def test_upsampled_digits_are_8_bit_levels_of_the_library_split():
    import tfp_flows as tff

    train, test = peers.upsampled_digits()
    assert train.shape == (1437, 28, 28, 1) and test.shape == (360, 28, 28, 1)
    assert train.dtype == np.uint8 and int(train.max()) == 255 and int(train.min()) == 0
    small_train, small_test = tff.datasets.load_digits(seed=0)
    levels_train, levels_test = peers.digits_levels()
    np.testing.assert_array_equal(levels_train, small_train[..., 0])
    np.testing.assert_array_equal(levels_test, small_test[..., 0])
    # Bilinear interpolation of levels scaled by 255 / 16: the same resize of a digit
    # scaled by hand matches, and a blank digit row stays blank.
    matrix = peers._bilinear_matrix(8, 28)
    expected = np.rint(matrix @ (levels_train[0] * 255 / 16) @ matrix.T)
    np.testing.assert_array_equal(train[0, ..., 0], expected)


@pytest.mark.parametrize("model, batch, event", [("glow", 4, (28, 28, 1)), ("maf", 8, (64,))])
def test_prepared_stream_is_seeded_and_the_test_set_fixed(tmp_path, model, batch, event):
    steps = 3
    first = np.load(peers.prepare(model, steps, batch, 0, str(tmp_path)))
    first = {k: first[k] for k in first.files}
    again = np.load(peers.prepare(model, steps, batch, 0, str(tmp_path)))
    other = np.load(peers.prepare(model, steps, batch, 1, str(tmp_path)))
    assert first["train"].shape == (steps * batch, *event)
    assert first["train"].dtype == np.float32 and first["test"].shape == (360, *event)
    np.testing.assert_array_equal(first["train"], again["train"])
    assert not np.array_equal(first["train"], other["train"])
    np.testing.assert_array_equal(first["test"], other["test"])
    if model == "glow":
        # Dequantized 8-bit levels: inside [0, 256), each within one level of an integer.
        for x in (first["train"], first["test"]):
            assert x.min() >= 0.0 and x.max() < 256.0
        _, test_levels = peers.upsampled_digits()
        # u in [0, 1], as float32 rounds level + u for u within 2^-17 of 1 up.
        noise = first["test"] - test_levels
        assert noise.min() >= 0.0 and noise.max() <= 1.0 and 0.45 < noise.mean() < 0.55


def _runs(our_step, peer_step, our_nll, peer_nll, our_params, finite=True):
    def run(step, nll, params):
        return {"step_s": step, "test_nll": nll, "params": params, "samples_finite": finite}
    return {"ours": [run(our_step, our_nll, our_params)],
            "peer": [run(peer_step, peer_nll, 1000)], "steps": 10}


def test_verdicts_follow_the_numbers():
    met = peers.verdicts("maf", _runs(0.1, 0.2, 80.0, 81.0, 1040))
    assert all(ok for ok, _ in met.values())
    assert "x2.00" in met["speed"][1] and "+4.0%" in met["params"][1]
    missed = peers.verdicts("maf", _runs(0.1, 0.12, 82.0, 81.0, 1060, finite=False))
    assert not any(ok for ok, _ in missed.values())
    glow = peers.verdicts("glow", _runs(0.1, 0.2, 784 * np.log(2) * 3.0, 784 * np.log(2) * 3.5,
                                        1000))
    assert "bits/dim 3.000 against 3.500" in glow["metric"][1]
    assert "NOT MET" in peers._verdict_line("maf", _runs(0.1, 0.2, 80.0, 81.0, 2000))


def test_glow_step_split_into_its_floor_and_the_conditioners_width():
    runs = {"ours": [{"step_s": 0.110, "floor_step_s": 0.030},
                     {"step_s": 0.120, "floor_step_s": 0.020}],
            "peer": [{"step_s": 0.150, "floor_step_s": 0.030}]}
    line = peers._floor_line(runs)
    # Medians: ours 115 ms with a 25 ms floor, the peer 150 ms with a 30 ms floor.
    assert "25.0 ms (ours) and 30.0 ms (normflows): x1.20" in line
    assert "add is 90 ms and 120 ms: x1.33" in line
    assert peers._floor_line({"ours": [{"step_s": 0.1}], "peer": [{"step_s": 0.1}]}) == (
        "Glow's floor was not measured.")
