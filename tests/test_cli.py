"""The `tfp-flows` command and the two-moons example, run with tiny settings."""

import json
import math
import os
import subprocess
import sys

import pytest

from tfp_flows import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ("metrics.json", "density.png", "samples.png", "saved_model")
TINY = ["--epochs", "1", "--num-points", "400", "--verbose", "0"]


def _check_outputs(out):
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    assert os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb"))
    for name in ("density.png", "samples.png"):
        with open(os.path.join(out, name), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "metrics.json")) as file:
        metrics = json.load(file)
    for key in ("train_nll", "test_nll", "train_bpd", "test_bpd", "seconds"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["test_bpd"] == pytest.approx(metrics["test_nll"] / (2 * math.log(2)))
    assert set(metrics["versions"]) >= {"tfp_flows", "tensorflow", "tensorflow_probability",
                                        "keras", "numpy", "python"}
    return metrics


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick demo into a directory holding stale outputs of an earlier run."""
    out = tmp_path_factory.mktemp("demo")
    (out / "metrics.json").write_text("stale")
    (out / "samples.png").write_text("stale")
    (out / "saved_model").mkdir()
    (out / "saved_model" / "stale.txt").write_text("stale")
    status = cli.main(["demo", "--quick", "--out", str(out), "--num-points", "400",
                       "--verbose", "0"])
    return status, out


def test_demo_quick_writes_all_outputs(demo_run):
    status, out = demo_run
    assert status == 0
    metrics = _check_outputs(out)
    assert metrics["model"] == "realnvp" and metrics["dataset"] == "two_moons"
    assert metrics["epochs"] == cli.QUICK_SETTINGS["epochs"]
    assert metrics["num_points"] == 400
    assert metrics["num_train"] == 320 and metrics["num_test"] == 80


def test_demo_replaces_stale_outputs(demo_run):
    _, out = demo_run
    assert not (out / "saved_model" / "stale.txt").exists()
    assert not [name for name in os.listdir(out) if name.startswith(".")]


def test_outputs_get_the_usual_permissions(demo_run):
    _, out = demo_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "density.png", "samples.png"):
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name
    assert os.stat(out / "saved_model").st_mode & 0o777 == 0o777 & ~umask


def test_train_writes_all_outputs(tmp_path, capsys):
    out = tmp_path / "nested" / "nice"
    assert cli.main(["train", "--model", "nice", "--dataset", "eight_gaussians", "--out",
                     str(out), "--num-layers", "2", "--hidden-units", "8", "8",
                     "--batch-size", "64", "--learning-rate", "1e-3", "--seed", "3",
                     *TINY]) == 0
    metrics = _check_outputs(out)
    assert metrics["model"] == "nice" and metrics["dataset"] == "eight_gaussians"
    assert metrics["hidden_units"] == [8, 8] and metrics["num_layers"] == 2
    assert metrics["batch_size"] == 64 and metrics["seed"] == 3
    assert "nice on eight_gaussians: train NLL" in capsys.readouterr().out


@pytest.mark.slow
def test_saved_model_loads_without_tfp_flows(demo_run):
    _, out = demo_run
    script = (
        "import sys, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(out / 'saved_model')!r})\n"
        "log_prob = model.log_prob(tf.zeros([3, 2])).numpy()\n"
        "samples = model.sample(tf.constant(5), tf.constant(0), tf.constant(1.0)).numpy()\n"
        "assert log_prob.shape == (3,) and samples.shape == (5, 2), (log_prob, samples)\n"
        "assert 'tfp_flows' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_settings_follow_defaults_quick_and_explicit_options():
    parser = cli.build_parser()
    demo = cli._settings(parser.parse_args(["demo"]))
    assert demo == cli.DEMO_DEFAULTS
    quick = cli._settings(parser.parse_args(["demo", "--quick", "--epochs", "3"]))
    assert quick["epochs"] == 3 and quick["num_points"] == cli.QUICK_SETTINGS["num_points"]
    assert quick["num_layers"] == cli.QUICK_SETTINGS["num_layers"]
    train = cli._settings(parser.parse_args(
        ["train", "--model", "nice", "--dataset", "spirals", "--out", "x", "--num-points",
         "100", "--batch-size", "1000"]))
    assert train["model"] == "nice" and train["dataset"] == "spirals"
    assert train["batch_size"] == 80  # never more than the training set


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND"),
    (["fly"], "invalid choice: 'fly'"),
    (["demo", "--dataset", "three_moons"], "invalid choice: 'three_moons'"),
    (["demo", "--epochs", "0"], "expected a positive int, got '0'"),
    (["demo", "--epochs", "ten"], "expected a positive int, got 'ten'"),
    (["demo", "--num-points", "5"], "need at least 10 points"),
    (["demo", "--seed", "-1"], "expected an int >= 0, got '-1'"),
    (["train", "--dataset", "two_moons", "--out", "x"], "required: --model"),
    (["train", "--model", "glow", "--dataset", "two_moons", "--out", "x"],
     "invalid choice: 'glow'"),
    (["train", "--model", "nice", "--dataset", "two_moons"], "required: --out"),
    (["train", "--model", "nice", "--dataset", "two_moons", "--out", "x",
      "--learning-rate", "nan"], "expected a positive number, got 'nan'"),
    (["train", "--model", "nice", "--dataset", "two_moons", "--out", "x",
      "--hidden-units", "64", "0"], "expected a positive int, got '0'"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_output_directory_that_is_a_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--quick", "--out", str(path)])
    assert raised.value.code == 2
    assert "cannot create output directory --out" in capsys.readouterr().err


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    script = os.path.join(ROOT, "examples", "two_moons_realnvp.py")
    result = subprocess.run(
        [sys.executable, script, "--epochs", "1", "--num-points", "400", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test NLL" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["two_moons_density.png", "two_moons_samples.png"]
