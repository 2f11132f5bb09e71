"""The `tfp-flows` command and the two-moons example, run with tiny settings."""

import contextlib
import io
import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tfp_flows import cli, models
from tfp_flows.cli import startup
from tfp_flows.distributions import NormalAugmentation
from tfp_flows.models import FAMILIES, Family, temporary_family
from tfp_flows.training import EpochCheckpoint, list_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ("metrics.json", "density.png", "samples.png", "saved_model")
TINY = ["--epochs", "1", "--num-points", "400", "--verbose", "0"]


def _check_outputs(out, extra=(), estimator="exact"):
    assert sorted(os.listdir(out)) == sorted(OUTPUTS + tuple(extra))
    assert os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb"))
    for name in ("density.png", "samples.png"):
        with open(os.path.join(out, name), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "metrics.json")) as file:
        metrics = json.load(file)
    for key in ("train_nll", "test_nll", "train_bpd", "test_bpd", "seconds"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["test_bpd"] == pytest.approx(metrics["test_nll"] / (2 * math.log(2)))
    assert metrics["log_prob_estimator"] == estimator
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
    metrics = _check_outputs(out, extra=("checkpoints", "logs"))
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1]
    assert metrics["initial_epoch"] == 0
    assert metrics["model"] == "nice" and metrics["dataset"] == "eight_gaussians"
    assert metrics["hidden_units"] == [8, 8] and metrics["num_layers"] == 2
    assert metrics["batch_size"] == 64 and metrics["seed"] == 3
    assert "nice on eight_gaussians: train NLL" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["maf", "iaf"])
def test_train_autoregressive_flows_on_toy_data(model, tmp_path):
    out = tmp_path / model
    assert cli.main(["train", "--model", model, "--dataset", "spirals", "--out", str(out),
                     "--num-layers", "2", "--hidden-units", "8", *TINY]) == 0
    metrics = _check_outputs(out, extra=("checkpoints", "logs"))
    assert metrics["model"] == model and metrics["num_layers"] == 2
    assert metrics["standardize"] is cli.DEMO_DEFAULTS["standardize"] is False


def test_vector_flows_standardise_the_training_set_unless_told_not_to():
    parser = cli.build_parser()
    x = np.random.default_rng(0).normal(size=[50, 2]) * [3.0, 0.5] + [1.0, -2.0]
    for argv, expected in ((["--standardize"], True), ([], False),
                           (["--no-standardize"], False)):
        settings = cli._settings(parser.parse_args(
            ["train", "--model", "maf", "--dataset", "two_moons", "--out", "x",
             "--num-layers", "1", "--hidden-units", "4", *argv]))
        assert settings["standardize"] is expected
        flow = cli.build_flow(settings, [2], train=x)
        first = flow.bijector.bijectors[0]
        assert (first.name == "standardize") is expected
        if expected:
            np.testing.assert_allclose(first.mean, x.mean(axis=0))
            np.testing.assert_allclose(first.std, x.std(axis=0))
    demo = cli._settings(parser.parse_args(["demo", "--standardize"]))
    assert demo == {**cli.DEMO_DEFAULTS, "standardize": True}


@pytest.mark.slow
def test_saved_model_loads_without_tfp_flows(demo_run, python_without_tfp_flows):
    _, out = demo_run
    script = (
        "import sys, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(out / 'saved_model')!r})\n"
        "log_prob = model.log_prob(tf.zeros([3, 2])).numpy()\n"
        "samples = model.sample(tf.constant(5), tf.constant(0), tf.constant(1.0)).numpy()\n"
        "assert log_prob.shape == (3,) and samples.shape == (5, 2), (log_prob, samples)\n"
        "assert 'tfp_flows' not in sys.modules\n")
    result = python_without_tfp_flows.run(script)
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
    glow = cli._settings(parser.parse_args(
        ["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--num-steps", "2",
         "--logit-alpha", "none"]))
    assert glow == {**{key: cli.IMAGE_DEFAULTS[key] for key in (
        "epochs", "batch_size", "learning_rate", "seed", "num_levels", "hidden_channels",
        "num_blocks", "coupling", "weight_decay")}, "model": "glow", "dataset": "digits",
        "num_steps": 2, "logit_alpha": None, "conditioner": "glow"}
    resnet = cli._settings(parser.parse_args(
        ["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--conditioner",
         "resnet", "--num-blocks", "2"]))
    assert resnet["conditioner"] == "resnet" and resnet["num_blocks"] == 2
    celeb_a = cli._settings(parser.parse_args(
        ["train", "--model", "realnvp", "--dataset", "celeb_a", "--out", "x"]))
    assert celeb_a["image_size"] == 64 and celeb_a["train_split"] == "train"
    assert "num_steps" not in celeb_a and "num_layers" not in celeb_a
    other = cli._settings(parser.parse_args(
        ["train", "--model", "nice", "--dataset", "tfds:emnist/letters", "--out", "x",
         "--image-size", "16", "--test-split", "test[:10%]"]))
    assert other["image_size"] == 16 and other["test_split"] == "test[:10%]"
    assert other["num_layers"] == cli.IMAGE_DEFAULTS["num_layers"]


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
     "--model glow needs image data, got the toy density 'two_moons'"),
    (["train", "--model", "maf", "--dataset", "digits", "--out", "x"],
     "--model maf models vectors, not images: use a toy density, not 'digits'"),
    (["train", "--model", "glow", "--dataset", "three_moons", "--out", "x"],
     "unknown dataset 'three_moons': choose a toy density"),
    (["train", "--model", "glow", "--dataset", "tfds:", "--out", "x"],
     "unknown dataset 'tfds:'"),
    (["train", "--model", "realnvp", "--dataset", "two_moons", "--out", "x",
      "--num-steps", "4"], "--num-steps does not apply to --model realnvp on toy data"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--num-points", "100"],
     "--num-points does not apply to --model glow on image data (digits)"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--standardize"],
     "--standardize does not apply to --model glow on image data (digits)"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--image-size", "16"],
     "--image-size does not apply to --model glow on image data (digits)"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--logit-alpha", "0.5"],
     "expected a number in (0, 0.5) or 'none', got '0.5'"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--weight-decay", "-1"],
     "expected a number >= 0, got '-1'"),
    (["train", "--model", "maf", "--dataset", "two_moons", "--out", "x", "--temperature", "0.5"],
     "--temperature does not apply to toy data (two_moons)"),
    (["train", "--model", "glow", "--dataset", "digits", "--out", "x", "--data-dir", "x"],
     "--data-dir does not apply to image data (digits)"),
    (["train", "--model", "nice", "--dataset", "two_moons"], "required: --out"),
    (["train", "--model", "nice", "--dataset", "two_moons", "--out", "x",
      "--learning-rate", "nan"], "expected a positive number, got 'nan'"),
    (["train", "--model", "nice", "--dataset", "two_moons", "--out", "x",
      "--hidden-units", "64", "0"], "expected a positive int, got '0'"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys, tmp_path):
    argv = [str(tmp_path / "out") if arg == "x" else arg for arg in argv]
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "train"])
def test_help_describes_the_options(command, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([command, "--help"])
    assert raised.value.code == 0
    assert "--epochs" in capsys.readouterr().out


def _train_help(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--help"])
    assert raised.value.code == 0
    return capsys.readouterr().out


def _listed_families(text):
    """The families of the `flow families` paragraph that ends `train --help`."""
    listing = text[text.index("flow families (--model NAME"):]
    return dict(re.findall(r"^  ([a-z0-9_]+) +((?:toy data|images)(?: and images)?):", listing,
                           re.MULTILINE))


def test_train_help_lists_the_registered_families(capsys):
    text = _train_help(capsys)
    labels = {"vector": "toy data", "image": "images"}
    assert _listed_families(text) == {
        name: " and ".join(labels[kind] for kind in family.data_kinds)
        for name, family in FAMILIES.items()}
    assert "--model {" + ",".join(sorted(FAMILIES)) + "}" in text
    # Each model option names the families that take it (argparse may wrap inside a name).
    assert "realnvp (as num_scales)" in " ".join(text.split())


# A module of TensorFlow (or of a library that imports it) in `python -X importtime` output.
_TENSORFLOW_IMPORT = re.compile(
    r"^import time:.*\| +(tensorflow|tensorflow_probability|keras|tf_keras)(\.\S+)?$",
    re.MULTILINE)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["demo", "--help"]])
def test_help_answers_without_importing_tensorflow(args, tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tfp_flows.cli", *args],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tfp_flows.cli.arguments" in result.stderr  # -X importtime listed the imports
    assert not _TENSORFLOW_IMPORT.findall(result.stderr)
    assert result.stdout.startswith(f"usage: tfp-flows {args[0] if len(args) > 1 else ''}")
    if args[0] == "train":
        assert set(_listed_families(result.stdout)) == set(FAMILIES)


def test_a_usage_error_is_reported_without_importing_tensorflow(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tfp_flows.cli", "train",
                             "--model", "glow", "--dataset", "two_moons", "--out",
                             str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 2
    assert "--model glow needs image data, got the toy density 'two_moons'" in result.stderr
    assert not _TENSORFLOW_IMPORT.findall(result.stderr)


def test_a_run_writes_no_tensorflow_start_up_log(tmp_path):
    result = _run_command(["demo", "--quick", "--out", str(tmp_path / "out"), *TINY[2:]],
                          tmp_path)  # TF_CPP_MIN_LOG_LEVEL unset
    assert result.returncode == 0, result.stderr[-3000:]
    assert "realnvp on two_moons: train NLL" in result.stdout
    noise = [line for line in result.stderr.splitlines()
             if re.search(r"cuInit|cuda|oneDNN|cpu_feature_guard|absl::InitializeLog", line)]
    assert not noise, result.stderr[-3000:]


def test_the_command_log_level_defaults_to_quiet_and_a_users_level_holds(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert startup.command_log_level() == 3 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert startup.command_log_level() == 0 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "quiet")
    assert startup.command_log_level() == 0


# What TensorFlow writes to stderr while it loads, before its logging is set up.
START_UP_LOG = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796032371.632393   31206 port.cc:153] oneDNN custom operations are on.\n",
    b"W0000 00:00:1796032371.632730   31206 some_file.cc:31] a warning\n",
    b"E0000 00:00:1796032374.933419   31206 cuda_platform.cc:52] failed call to cuInit\n",
    b"F0000 00:00:1796032374.933419   31206 some_file.cc:9] a fatal error\n",
]


@pytest.mark.parametrize("level, kept", [(0, [0, 1, 2, 3, 4]), (1, [0, 2, 3, 4]), (2, [3, 4]),
                                         (3, [4])])
def test_start_up_log_records_below_the_level_are_dropped(level, kept, capfd):
    with startup._stderr_without_records_below(level):
        for line in START_UP_LOG:
            os.write(2, line)
        os.write(2, b"module.py:3: UserWarning: other lines stay\n")
        os.write(2, b"I0000 is not a record without its source line\n")
    expected = b"".join(START_UP_LOG[i] for i in kept).decode()
    assert capfd.readouterr().err == (expected + "module.py:3: UserWarning: other lines stay\n"
                                      "I0000 is not a record without its source line\n")


def _tiny_realnvp(event_shape, num_layers, seed=0):
    """A family defined here: RealNVPs of 4-unit conditioners."""
    return models.RealNVP(event_shape, num_layers=num_layers, hidden_units=[4], seed=seed)


TINY_FAMILY = Family("tiny_realnvp", _tiny_realnvp, "RealNVP with 4-unit conditioners",
                     data_kinds=("vector",), options={"vector": ("num_layers",)},
                     defaults={"vector": {"num_layers": 2}})


def test_a_registered_family_trains_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "tiny"
    with temporary_family(TINY_FAMILY):
        assert "tiny_realnvp" in _listed_families(_train_help(capsys))
        assert cli.main(["train", "--model", "tiny_realnvp", "--dataset", "two_moons",
                         "--out", str(out), *TINY]) == 0
        metrics = _check_outputs(out, extra=("checkpoints", "logs"))
        assert metrics["model"] == "tiny_realnvp" and metrics["epochs"] == 1
        assert metrics["num_layers"] == 2  # the family's default, not the command's (16)
        assert "hidden_units" not in metrics  # not a setting of this family
        assert "tiny_realnvp on two_moons: train NLL" in capsys.readouterr().out
        flow = keras.saving.load_model(out / "checkpoints" / "epoch-0001.keras")
        assert isinstance(flow, models.RealNVP) and flow.hidden_units == [4]
        with pytest.raises(SystemExit):
            cli.main(["train", "--model", "tiny_realnvp", "--dataset", "two_moons", "--out",
                      str(out), "--hidden-units", "8"])
        assert "--hidden-units does not apply to --model tiny_realnvp on toy data " \
               "(two_moons)" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            cli.main(["train", "--model", "tiny_realnvp", "--dataset", "digits", "--out",
                      str(out)])
        assert "--model tiny_realnvp models vectors, not images" in capsys.readouterr().err
    assert "tiny_realnvp" not in FAMILIES
    assert "tiny_realnvp" not in _listed_families(_train_help(capsys))
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "tiny_realnvp", "--dataset", "two_moons", "--out",
                  str(out)])
    assert "invalid choice: 'tiny_realnvp'" in capsys.readouterr().err


def _augmented_realnvp(event_shape, num_layers, seed=0):
    """A family defined here whose density is a bound: two Normal noise features."""
    augmentation = NormalAugmentation(event_shape, 2)
    return models.RealNVP(augmentation.latent_event_shape, num_layers=num_layers,
                          hidden_units=[4], seed=seed, surjection=augmentation,
                          num_eval_samples=4)


def test_metrics_name_the_estimator_of_a_bound_family(tmp_path, capsys):
    family = Family("augmented_realnvp", _augmented_realnvp, "RealNVP on augmented data",
                    data_kinds=("vector",), options={"vector": ("num_layers",)},
                    defaults={"vector": {"num_layers": 2}})
    out = tmp_path / "augmented"
    with temporary_family(family):
        assert cli.main(["train", "--model", "augmented_realnvp", "--dataset", "two_moons",
                         "--out", str(out), *TINY]) == 0
    metrics = _check_outputs(out, extra=("checkpoints", "logs"), estimator="iwbo(k=4)")
    assert math.isfinite(metrics["test_nll"])
    assert "bits/dim, a bound: iwbo(k=4))" in capsys.readouterr().out


def test_builder_errors_on_vectors_are_argparse_errors(tmp_path, capsys):
    def reject(event_shape, num_layers, seed=0):
        raise ValueError(f"num_layers={num_layers} is not even")

    family = Family("odd", reject, "rejects its settings", data_kinds=("vector",),
                    options={"vector": ("num_layers",)})
    with temporary_family(family), pytest.raises(SystemExit) as raised:
        cli.main(["train", "--model", "odd", "--dataset", "two_moons", "--out", str(tmp_path),
                  "--num-layers", "3", *TINY])
    assert raised.value.code == 2
    assert "--model odd on two_moons (vectors of shape [2]): num_layers=3 is not even" in \
        capsys.readouterr().err


def test_output_directory_that_is_a_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit) as raised:
        cli.main(["demo", "--quick", "--out", str(path)])
    assert raised.value.code == 2
    assert "cannot create output directory --out" in capsys.readouterr().err


# examples/two_moons_realnvp.py runs in .ci/run, right after this suite.


@pytest.mark.slow
def test_glow_example_script_runs(tmp_path, capsys, monkeypatch):
    # Run as `python examples/glow_digits.py ...` would, in this process: no second
    # TensorFlow start-up.
    script = os.path.join(ROOT, "examples", "glow_digits.py")
    monkeypatch.setattr(sys, "argv", [script, "--epochs", "1", "--num-steps", "1",
                                      "--hidden-channels", "8", "--out", str(tmp_path)])
    runpy.run_path(script, run_name="__main__")
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "samples finite: True" in printed
    assert os.listdir(tmp_path) == ["glow_digits_samples.png"]


# 320 training points in batches of 64: 5 steps per epoch.
RESUME_ARGS = ["train", "--model", "nice", "--dataset", "eight_gaussians", "--num-layers", "2",
               "--hidden-units", "8", "--batch-size", "64", "--num-points", "400",
               "--epochs", "4", "--keep-checkpoints", "4", "--verbose", "0"]


def _quiet_main(argv):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = cli.main(argv)
    return status, output.getvalue()


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """An uninterrupted run, and one interrupted after epoch 2 of 4 then resumed."""
    base = tmp_path_factory.mktemp("resume")
    full, resumed, snapshot = base / "full", base / "resumed", base / "snapshot"
    assert _quiet_main([*RESUME_ARGS, "--out", str(full)])[0] == 0

    def interrupt(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C between epochs 2 and 3

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_epoch_begin", interrupt, raising=False)
        with pytest.raises(KeyboardInterrupt):
            _quiet_main([*RESUME_ARGS, "--out", str(resumed)])
    assert not (resumed / "metrics.json").exists()
    shutil.copytree(resumed / "checkpoints", snapshot)
    status, printed = _quiet_main([*RESUME_ARGS, "--out", str(resumed), "--resume"])
    assert status == 0
    return full, resumed, snapshot, printed


def _load(path):
    return keras.saving.load_model(path)


def _index(out):
    with open(out / "checkpoints" / "checkpoint.json") as file:
        return json.load(file)


def test_resume_completes_the_requested_epochs(resumed_run):
    full, resumed, _, printed = resumed_run
    assert "--resume: continuing from 2 completed epoch(s) (epoch-0002.keras), 4 in all" \
        in printed
    for out in (full, resumed):
        _check_outputs(out, extra=("checkpoints", "logs"))
        assert _index(out)["completed_epochs"] == 4
        assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1, 2, 3, 4]
    assert _index(resumed)["optimizer_iterations"] == _index(full)["optimizer_iterations"] == 20
    with open(resumed / "metrics.json") as file:
        metrics = json.load(file)
    assert metrics["initial_epoch"] == 2 and metrics["epochs"] == 4
    assert metrics["completed_epochs"] == 4


def test_checkpoints_written_before_the_interruption_survive(resumed_run):
    _, resumed, snapshot, _ = resumed_run
    assert sorted(os.listdir(snapshot)) == [
        "checkpoint.json", "epoch-0001.keras", "epoch-0002.keras"]
    for number in (1, 2):
        name = f"epoch-{number:04d}.keras"
        assert int(_load(snapshot / name).optimizer.iterations) == 5 * number
        assert (resumed / "checkpoints" / name).read_bytes() == (snapshot / name).read_bytes()


def test_resumed_run_ends_where_an_uninterrupted_one_does(resumed_run):
    full, resumed, _, _ = resumed_run
    final = _load(resumed / "checkpoints" / "epoch-0004.keras")
    reference = _load(full / "checkpoints" / "epoch-0004.keras")
    assert len(final.weights) == len(reference.weights) > 0
    for weight, expected in zip(final.weights, reference.weights, strict=True):
        assert np.all(np.isfinite(weight.numpy()))
        # Same data order, optimizer state and learning rates: the same weights.
        np.testing.assert_allclose(weight.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert float(final.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-12)


def _epoch_loss_steps(log_dir):
    steps = []
    names = os.listdir(log_dir)
    assert names and all(name.startswith("events.out.tfevents.") for name in names)
    for name in names:
        for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [event.step for value in event.summary.value if value.tag == "epoch_loss"]
    return sorted(steps)


def test_tensorboard_logs_cover_every_epoch(resumed_run):
    full, resumed, _, _ = resumed_run
    assert _epoch_loss_steps(full / "logs" / "train") == [0, 1, 2, 3]
    # Two sessions, two event files, one curve.
    assert len(os.listdir(resumed / "logs" / "train")) == 2
    assert _epoch_loss_steps(resumed / "logs" / "train") == [0, 1, 2, 3]


def test_resume_of_a_finished_run_only_evaluates(resumed_run, tmp_path):
    _, resumed, _, _ = resumed_run
    out = tmp_path / "finished"
    shutil.copytree(resumed, out)
    (out / "metrics.json").unlink()
    status, printed = _quiet_main([*RESUME_ARGS, "--out", str(out), "--resume"])
    assert status == 0
    assert "4 epoch(s) already complete (--epochs 4); evaluating without training" in printed
    metrics = _check_outputs(out, extra=("checkpoints", "logs"))
    assert metrics["initial_epoch"] == 4
    with open(resumed / "metrics.json") as file:
        assert metrics["test_nll"] == pytest.approx(json.load(file)["test_nll"])
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1, 2, 3, 4]


def test_resume_with_other_settings_is_an_error(resumed_run, tmp_path, capsys):
    _, resumed, _, _ = resumed_run
    out = tmp_path / "other"
    shutil.copytree(resumed / "checkpoints", out / "checkpoints")
    argv = [*RESUME_ARGS, "--out", str(out), "--resume"]
    argv[argv.index("--num-layers") + 1] = "3"
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert "written with other settings (num_layers: checkpoint 2, now 3)" in \
        capsys.readouterr().err


def test_resume_without_checkpoints_starts_fresh(tmp_path, capsys):
    out = tmp_path / "new"
    argv = [*RESUME_ARGS, "--out", str(out), "--resume"]
    argv[argv.index("--epochs") + 1] = "1"
    assert cli.main(argv) == 0
    assert "--resume: no usable checkpoint in" in capsys.readouterr().out
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1]


def test_a_fresh_run_replaces_checkpoints_and_logs_of_an_earlier_one(resumed_run, tmp_path,
                                                                      capsys):
    _, resumed, _, _ = resumed_run
    out = tmp_path / "again"
    shutil.copytree(resumed, out)
    argv = [*RESUME_ARGS, "--out", str(out)]
    argv[argv.index("--epochs") + 1] = "1"
    assert cli.main(argv) == 0
    assert "holds checkpoints of an earlier run" in capsys.readouterr().out
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1]
    assert _epoch_loss_steps(out / "logs" / "train") == [0]


def test_resume_with_more_epochs_stretches_the_schedule(resumed_run, tmp_path):
    _, resumed, _, _ = resumed_run
    out = tmp_path / "longer"
    shutil.copytree(resumed / "checkpoints", out / "checkpoints")
    argv = [*RESUME_ARGS, "--out", str(out), "--resume"]
    argv[argv.index("--epochs") + 1] = "5"
    status, printed = _quiet_main(argv)
    assert status == 0
    # Without this the cosine schedule, over at epoch 4, would train on at a rate of 0.
    assert "the cosine learning-rate schedule now decays over 5 epochs" in printed
    assert _index(out)["completed_epochs"] == 5
    assert _index(out)["optimizer_iterations"] == 25
    assert _index(out)["metadata"]["settings"]["epochs"] == 5


def test_image_batches_and_their_noise_depend_on_seed_and_epoch_alone():
    images = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2, 1)

    def epoch_batches(seed, epoch):
        batches, counter = cli._shuffled_batches(images, 2, seed, dequantize=True)
        counter.on_epoch_begin(epoch)
        return [batch.numpy() for batch in batches]

    first = epoch_batches(0, 1)
    assert len(first) == 3 and all(b.dtype == np.float32 and b.shape == (2, 2, 2, 1)
                                   for b in first)
    levels = np.floor(np.concatenate(first))
    assert sorted(levels.reshape(6, -1)[:, 0]) == sorted(images.reshape(6, -1)[:, 0])
    # The same (seed, epoch) in a new process state: the same batches, noise included.
    for batch, again in zip(first, epoch_batches(0, 1), strict=True):
        np.testing.assert_array_equal(batch, again)
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch_batches(0, 2)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch_batches(1, 1)))


IMAGE_OUTPUTS = ("metrics.json", "samples.png", "saved_model", "checkpoints", "logs")


def _check_image_outputs(out, num_dims, num_bins):
    assert sorted(os.listdir(out)) == sorted(IMAGE_OUTPUTS)
    with open(os.path.join(out, "samples.png"), "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "metrics.json")) as file:
        metrics = json.load(file)
    for key in ("train_nll", "test_nll", "train_bpd", "test_bpd"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    # Discrete bits per dim: the density is over the dequantized levels themselves.
    assert metrics["test_bpd"] == pytest.approx(metrics["test_nll"] / (num_dims * math.log(2)))
    assert metrics["num_bins"] == num_bins and metrics["samples_finite"] is True
    # Far better than uniform noise over the levels would be impossible after one epoch of a
    # tiny flow, but the NLL must be a sane one: below uniform over [0, 2K).
    assert 0.0 < metrics["test_bpd"] < math.log2(2 * num_bins)
    return metrics


@pytest.mark.slow
def test_train_glow_on_digits(tmp_path, capsys):
    out = tmp_path / "glow"
    assert cli.main(["train", "--model", "glow", "--dataset", "digits", "--epochs", "1",
                     "--num-steps", "1", "--hidden-channels", "8", "--out", str(out),
                     "--verbose", "0"]) == 0
    metrics = _check_image_outputs(out, 64, 17)
    assert metrics["num_train"] == 1437 and metrics["num_test"] == 360
    assert metrics["model"] == "glow" and metrics["logit_alpha"] == 0.05
    assert "glow on digits: train NLL" in capsys.readouterr().out
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1]
    # The test set is evaluated after every epoch, for TensorBoard.
    tags = set()
    for name in os.listdir(out / "logs" / "validation"):
        for record in tf.data.TFRecordDataset(str(out / "logs" / "validation" / name)):
            tags |= {v.tag for v in event_pb2.Event.FromString(record.numpy()).summary.value}
    assert "epoch_bits_per_dim" in tags
    reloaded = tf.saved_model.load(str(out / "saved_model"))
    samples = reloaded.sample(tf.constant(4), tf.constant(0), tf.constant(1.0)).numpy()
    assert samples.shape == (4, 8, 8, 1) and np.all(np.isfinite(samples))


@pytest.mark.slow
def test_train_on_a_tfds_image_set(tmp_path):
    import tensorflow_datasets as tfds

    out = tmp_path / "mnist"
    with tfds.testing.mock_data(num_examples=40):
        assert cli.main(["train", "--model", "nice", "--dataset", "mnist", "--epochs", "1",
                         "--num-layers", "2", "--hidden-channels", "4", "--batch-size", "16",
                         "--image-size", "8", "--out", str(out), "--verbose", "0"]) == 0
    metrics = _check_image_outputs(out, 64, 256)
    assert metrics["num_train"] == metrics["num_test"] == 40
    assert metrics["image_size"] == 8 and metrics["train_split"] == "train"


def test_image_settings_that_do_not_fit_the_data_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--model", "glow", "--dataset", "digits", "--num-levels", "4",
                  "--out", str(tmp_path), "--epochs", "1"])
    assert raised.value.code == 2
    assert "--model glow on digits (images of shape [8, 8, 1]): Glow with num_levels=4 " \
           "needs height and width divisible by 16" in capsys.readouterr().err


# 1,437 digits in batches of 256: 5 steps per epoch; a tiny NICE traces in seconds.
IMAGE_RESUME_ARGS = ["train", "--model", "nice", "--dataset", "digits", "--num-layers", "2",
                     "--hidden-channels", "4", "--batch-size", "256", "--epochs", "2",
                     "--verbose", "0"]


@pytest.mark.slow
def test_resumed_image_run_ends_where_an_uninterrupted_one_does(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert _quiet_main([*IMAGE_RESUME_ARGS, "--out", str(full)])[0] == 0

    def interrupt(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_epoch_begin", interrupt, raising=False)
        with pytest.raises(KeyboardInterrupt):
            _quiet_main([*IMAGE_RESUME_ARGS, "--out", str(resumed)])
    status, printed = _quiet_main([*IMAGE_RESUME_ARGS, "--out", str(resumed), "--resume"])
    assert status == 0 and "continuing from 1 completed epoch(s)" in printed
    # Same shuffling, the same dequantization noise, the same AdamW state: same weights.
    final = _load(resumed / "checkpoints" / "epoch-0002.keras")
    reference = _load(full / "checkpoints" / "epoch-0002.keras")
    for weight, expected in zip(final.weights, reference.weights, strict=True):
        np.testing.assert_allclose(weight.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for out in (full, resumed):
        assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1, 2]
    with open(full / "metrics.json") as a, open(resumed / "metrics.json") as b:
        assert json.load(a)["test_bpd"] == pytest.approx(json.load(b)["test_bpd"], rel=1e-5)


def _run_command(args, tmp_path, env=None, timeout=300):
    """Runs `python -m tfp_flows.cli ARGS` in a subprocess -> CompletedProcess."""
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update({"PYTHONPATH": ROOT, **(env or {})})
    return subprocess.run([sys.executable, "-m", "tfp_flows.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path, env=environment)


def test_progress_counts_steps_within_the_epoch(tmp_path, capsys):
    # 1,600 training points in batches of 64: 25 steps, run 10 at a time (10, 20, 25).
    assert cli.main(["train", "--model", "nice", "--dataset", "two_moons", "--out",
                     str(tmp_path / "out"), "--epochs", "2", "--num-points", "2000",
                     "--num-layers", "2", "--hidden-units", "8", "--batch-size", "64"]) == 0
    plain = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # the bar's colours
    counts = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+) ", plain)]
    assert (25, 25) in counts and all(done <= total for done, total in counts), counts


def test_a_nan_stop_is_one_line_and_a_failure(tmp_path):
    out = tmp_path / "nan"
    error = io.StringIO()
    with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["train", "--model", "nice", "--dataset", "two_moons", "--out",
                           str(out), "--num-layers", "2", "--hidden-units", "8",
                           "--learning-rate", "1e38", "--epochs", "3", *TINY[2:]])
    assert status == 1
    lines = error.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfp-flows: error: training loss became")
    assert "Traceback" not in error.getvalue()
    assert not (out / "metrics.json").exists()


def test_resume_over_damaged_checkpoints_says_so(tmp_path, capsys):
    out = tmp_path / "damaged"
    (out / "checkpoints").mkdir(parents=True)
    for number in (1, 2):
        (out / "checkpoints" / f"epoch-{number:04d}.keras").write_bytes(b"garbage")
    argv = [*RESUME_ARGS, "--out", str(out), "--resume"]
    argv[argv.index("--epochs") + 1] = "1"
    with pytest.warns(RuntimeWarning, match="skipping damaged checkpoint"):
        assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "--resume: all 2 checkpoint(s) in" in printed and "are damaged" in printed
    assert "use --resume" not in printed and "no usable checkpoint" not in printed
    assert [n for n, _ in list_checkpoints(out / "checkpoints")] == [1]


def test_offline_tfds_set_fails_in_one_line(tmp_path):
    # No network: a proxy on a closed loopback port refuses every download at once.
    closed = "http://127.0.0.1:9"
    result = _run_command(["train", "--model", "nice", "--dataset", "mnist", "--out",
                           str(tmp_path / "out"), "--data-dir", str(tmp_path / "empty"),
                           "--epochs", "1"], tmp_path,
                          env={"HTTP_PROXY": closed, "HTTPS_PROXY": closed,
                               "http_proxy": closed, "https_proxy": closed, "NO_PROXY": "",
                               "no_proxy": ""}, timeout=240)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "tfp-flows: error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("tfp-flows: error: cannot download mnist into ")
    assert errors[0].endswith("use --data-dir DIR holding the prepared set, or --dataset "
                              "digits (no download)")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_an_image_size_that_does_not_fit_fails_before_downloading(tmp_path, capsys,
                                                                   monkeypatch):
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--model", "glow", "--dataset", "mnist", "--out", str(tmp_path),
                  "--data-dir", str(tmp_path / "empty"), "--num-levels", "3"])
    assert raised.value.code == 2
    assert "--model glow on mnist (images of shape [28, 28, 1]): Glow with num_levels=3 " \
           "needs height and width divisible by 8" in capsys.readouterr().err


def _fake_cifar10(directory, num_train, num_test):
    """CIFAR-10's binary files (label byte, 3,072 image bytes per record), few records."""
    rng = np.random.default_rng(0)
    root = directory / "cifar-10-batches-bin"
    root.mkdir(parents=True)
    (root / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        count = num_test if name == "test_batch.bin" else num_train // 5
        records = np.concatenate([rng.integers(0, 10, [count, 1]),
                                  rng.integers(0, 256, [count, 3072])], axis=1)
        (root / name).write_bytes(records.astype(np.uint8).tobytes())
    return directory


@pytest.mark.slow
def test_cifar10_prepares_and_streams_through_the_real_tfds_path(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    # Only the network is replaced: tfds prepares the set from these files with its own
    # code (the imports a fresh install needs), and the run streams it from disk.
    source = _fake_cifar10(tmp_path / "source", num_train=40, num_test=20)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                        lambda self, url: str(source))
    out = tmp_path / "cifar10"
    assert cli.main(["train", "--model", "nice", "--dataset", "cifar10", "--epochs", "1",
                     "--num-layers", "2", "--hidden-channels", "4", "--batch-size", "16",
                     "--image-size", "8", "--data-dir", str(tmp_path / "data"), "--out",
                     str(out), "--verbose", "0"]) == 0
    metrics = _check_image_outputs(out, 8 * 8 * 3, 256)
    assert metrics["num_train"] == 40 and metrics["num_test"] == 20
    assert tfds.builder("cifar10", data_dir=str(tmp_path / "data")).is_prepared()


def test_streamed_batches_depend_on_seed_and_epoch_alone():
    from tfp_flows.cli.data import streamed_batches

    levels = tf.data.Dataset.from_tensor_slices(np.arange(12, dtype=np.uint8).reshape(12, 1))
    keras.utils.set_random_seed(0)

    def epoch_batches(seed, epoch):
        batches, counter = streamed_batches(levels, 12, 4, seed, shuffle_buffer=12)
        counter.on_epoch_begin(epoch)
        return np.concatenate([batch.numpy() for batch in batches])

    first = epoch_batches(0, 1)
    assert first.shape == (12, 1) and first.dtype == np.float32
    assert sorted(np.floor(first[:, 0])) == list(range(12))
    np.testing.assert_array_equal(first, epoch_batches(0, 1))
    assert not np.array_equal(np.floor(first), np.floor(epoch_batches(0, 2)))
    assert not np.array_equal(first, epoch_batches(1, 1))


@pytest.mark.slow
def test_flowpp_trains_on_integer_levels_and_reports_its_bounds(tmp_path, capsys):
    """A flow that dequantizes itself gets the digits' integer levels; the test set is
    scored by the IWBO with the flow's 64 samples, the training set by the ELBO."""
    out = tmp_path / "flowpp"
    assert cli.main(["train", "--model", "flowpp", "--dataset", "digits", "--out", str(out),
                     "--epochs", "1", "--num-levels", "1", "--num-steps", "1",
                     "--hidden-channels", "4", "--num-blocks", "1", "--verbose", "0"]) == 0
    printed = capsys.readouterr().out
    assert "the test bound (iwbo(k=64)) is evaluated after training" in printed
    assert "bits/dim, a bound: iwbo(k=64))" in printed
    with open(out / "metrics.json") as file:
        metrics = json.load(file)
    assert metrics["log_prob_estimator"] == "iwbo(k=64)"
    assert metrics["train_log_prob_estimator"] == "elbo"
    assert all(math.isfinite(metrics[key]) for key in ("train_bpd", "test_bpd"))
    # Bits per dimension of the discrete digits: an untrained-ish flow is well above 1 and
    # below the 4.09 bits of uniform levels.
    assert 1.0 < metrics["test_bpd"] < math.log2(17)
    assert metrics["samples_finite"]
