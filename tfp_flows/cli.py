"""The `tfp-flows` command: train a flow on toy 2-D densities or images, write what it learned.

`tfp-flows demo` trains a RealNVP on two moons with tuned defaults; `tfp-flows train`
exposes the model, the dataset and the training settings:

- toy 2-D densities (`two_moons`, `checkerboard`, ... see `tfp_flows.datasets.toy`) with
  `--model realnvp|nice|maf|iaf`;
- images with `--model glow|realnvp|nice`: `digits` (scikit-learn's bundled 8x8 digits, 17
  grey levels, no download), the tensorflow-datasets sets `mnist`, `fashion_mnist`,
  `cifar10`, `celeb_a` (center-cropped to 148 and resized to 64 unless `--image-size` says
  otherwise), or any tfds image set as `tfds:NAME`. Images are dequantized afresh in every
  epoch; the flow's density covers the dequantized levels, so the reported bits per
  dimension are those of the discrete data (`tfp_flows.training.bits_per_dim`).

Both commands write into `--out`:

- `metrics.json`: train/test negative log-likelihood (nats per example; for toy data in the
  dataset's generated coordinates, for images in units of one grey level), bits per
  dimension, wall time, settings and library versions;
- `samples.png`: a scatter plot of samples (toy data) or a grid of sampled images beside
  test images; for toy data also `density.png` (learned density beside the data);
- `saved_model/`: the flow exported with `Flow.export`.

`tfp-flows train` also writes, while it trains:

- `checkpoints/epoch-NNNN.keras` after every epoch (the whole model with its optimizer
  state, the newest `--keep-checkpoints` kept) and `checkpoints/checkpoint.json`, see
  `tfp_flows.training.EpochCheckpoint`;
- `logs/`: TensorBoard logs (`tensorboard --logdir OUT/logs`), written by
  `keras.callbacks.TensorBoard`, or as epoch scalars alone when the `tensorboard` package
  is not installed (see `tfp_flows.training.tensorboard_callback`). Image runs also log the
  test set's loss and bits per dimension after every epoch (`val_...`; for monitoring
  only, nothing is selected by it).

`tfp-flows train --resume` continues from the newest intact checkpoint in `OUT/checkpoints`
until `--epochs` epochs are complete in all (the optimizer's iteration count is restored, so
the cosine learning-rate schedule, the shuffling order and the dequantization noise continue
as if never stopped); with no checkpoint it starts fresh and says so. Without `--resume`,
checkpoints and logs of an earlier run in `OUT` are replaced (the old checkpoints only once
the new run's first one is complete). `tfp-flows demo` writes no checkpoints or logs.

Outputs are written only after training, each one atomically (temporary file, then
`os.replace`), so an interrupted run never leaves a half-written file behind;
`metrics.json` comes last. Its `seconds` is the wall time of the run after start-up
(data, training, evaluation, plots and export; not the imports).

With the defaults, `tfp-flows demo` takes about a minute on 2 CPU cores and reaches a test
NLL of about 0.3 nats on two moons (noise 0.05, whose entropy is about 0.26 nats), and
`tfp-flows train --model glow --dataset digits` takes a few minutes and reaches a test
bits per dimension of about 2.1 on the 17-level digits.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

__all__ = ["main"]

MODELS = ("glow", "iaf", "maf", "nice", "realnvp")
# Models of toy (vector) data; those of images are the keys of _IMAGE_SETTINGS.
_TOY_MODELS = ("iaf", "maf", "nice", "realnvp")
DEMO_DEFAULTS = {
    "model": "realnvp",
    "dataset": "two_moons",
    "epochs": 60,
    "num_points": 20000,
    "batch_size": 256,
    "learning_rate": 2e-3,
    "num_layers": 16,
    "hidden_units": [64, 64],
    "seed": 0,
}
# A run that finishes in seconds, for CI and tests.
QUICK_SETTINGS = {"epochs": 1, "num_points": 2000, "num_layers": 2, "hidden_units": [16]}
# Image runs: tuned on the digits (about 2.1 test bits/dim in a few minutes on 2 CPU cores).
IMAGE_DEFAULTS = {
    "epochs": 60,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "num_levels": 2,
    "num_steps": 8,
    "num_layers": 8,
    "hidden_channels": 32,
    "num_blocks": 1,
    "coupling": "affine",
    "logit_alpha": 0.05,
    "image_size": None,
    "train_split": "train",
    "test_split": "test",
    "seed": 0,
}
# Image sets by name: tfds names with their preprocessing; `tfds:NAME` takes any other.
IMAGE_DATASETS = {
    "digits": None,  # scikit-learn's bundled digits, no download
    "mnist": {},
    "fashion_mnist": {},
    "cifar10": {},
    "celeb_a": {"center_crop": 148, "image_size": 64},
}
TFDS_PREFIX = "tfds:"
# The settings of each run beyond model, dataset, epochs, batch_size, learning_rate, seed.
_TOY_SETTINGS = ("num_points", "num_layers", "hidden_units")
_IMAGE_SETTINGS = {
    "glow": ("num_levels", "num_steps", "hidden_channels", "num_blocks", "coupling"),
    "realnvp": ("num_levels", "hidden_channels", "num_blocks"),
    "nice": ("num_layers", "hidden_channels", "num_blocks"),
}
_IMAGE_DATA_SETTINGS = ("weight_decay", "logit_alpha")
_TFDS_SETTINGS = ("image_size", "train_split", "test_split")
TEST_FRACTION = 0.2
NUM_SAMPLES = 5000
NUM_IMAGE_SAMPLES = 64
EVAL_BATCH_SIZE = 256
KEEP_CHECKPOINTS = 3
# Settings a resumed run must share with the checkpoint it continues (all but these).
_RESUMABLE_CHANGES = ("epochs",)


def _int_parser(minimum, expected):
    """An argparse type accepting ints >= `minimum`; `expected` names them in errors."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_parser(1, "a positive int")
_non_negative_int = _int_parser(0, "an int >= 0")


def _num_points(text):
    value = _positive_int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(
            f"need at least 10 points to split into train and test sets, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _logit_alpha(text):
    if text.lower() == "none":
        return "none"  # turned into None by _settings; None means "not given" here
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 0.5) or 'none', got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _dataset_kind(name):
    """`"toy"` or `"image"` for a dataset name, `None` if unknown."""
    from tfp_flows.datasets import TOY_DATASETS

    if name in TOY_DATASETS:
        return "toy"
    if name in IMAGE_DATASETS or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)):
        return "image"
    return None


def _dataset_name(text):
    from tfp_flows.datasets import TOY_DATASETS

    if _dataset_kind(text) is None:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}: choose a toy density ({', '.join(sorted(TOY_DATASETS))}), "
            f"an image set ({', '.join(IMAGE_DATASETS)}) or any tensorflow-datasets image set "
            f"as {TFDS_PREFIX}NAME")
    return text


def _add_run_arguments(parser, defaults, dataset_choices, notes=None):
    """Adds the options shared by `demo` and `train`; `None` defaults are filled later."""
    notes = notes or {}

    def shown(key):
        if key in notes:
            return f" (default: {notes[key]})"
        return f" (default: {defaults[key]})" if defaults.get(key) is not None else ""

    if dataset_choices is None:
        parser.add_argument("--dataset", type=_dataset_name, required=True,
                            help="a toy 2-D density (two_moons, checkerboard, ...), an image set "
                                 f"({', '.join(IMAGE_DATASETS)}) or {TFDS_PREFIX}NAME for any "
                                 "tensorflow-datasets image set")
    else:
        parser.add_argument("--dataset", choices=dataset_choices, default=defaults["dataset"],
                            help="toy 2-D density" + shown("dataset"))
    parser.add_argument("--epochs", type=_positive_int, default=defaults.get("epochs"),
                        help="training epochs" + shown("epochs"))
    parser.add_argument("--out", default=defaults.get("out"), required="out" not in defaults,
                        help="output directory, created if needed" + shown("out"))
    parser.add_argument("--num-points", type=_num_points, default=defaults.get("num_points"),
                        help=f"toy data: points generated, {TEST_FRACTION:.0%}% held out for "
                             "testing" + shown("num_points"))
    parser.add_argument("--seed", type=_non_negative_int, default=defaults.get("seed"),
                        help="seed of the data, the weights and the samples" + shown("seed"))
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras verbosity: 0 silent, 1 progress bar (default), 2 one line "
                             "per epoch")


def build_parser():
    """Returns the `argparse` parser of the `tfp-flows` command."""
    from tfp_flows.datasets import TOY_DATASETS

    parser = argparse.ArgumentParser(
        prog="tfp-flows", description="Normalizing flows for TensorFlow Probability.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train a RealNVP on a toy density with tuned defaults",
        description="Train a RealNVP on a toy 2-D density (two moons by default) and write "
                    "metrics.json, density.png, samples.png and saved_model/ into --out.")
    _add_run_arguments(demo, {**DEMO_DEFAULTS, "out": "./tfp_flows_demo", "epochs": None,
                              "num_points": None}, sorted(TOY_DATASETS),
                       notes={key: f"{DEMO_DEFAULTS[key]}, {QUICK_SETTINGS[key]} with --quick"
                              for key in ("epochs", "num_points")})
    demo.add_argument("--quick", action="store_true",
                      help="a tiny run for smoke tests: a small model, trained for "
                           f"{QUICK_SETTINGS['epochs']} epoch on "
                           f"{QUICK_SETTINGS['num_points']} points unless --epochs or "
                           "--num-points say otherwise")

    train = commands.add_parser(
        "train", help="train a chosen flow on a toy density or an image set",
        description="Train a flow on a toy 2-D density or an image set and write "
                    "metrics.json, samples.png (and density.png for toy data), checkpoints/, "
                    "logs/ and saved_model/ into --out. Defaults depend on the kind of data: "
                    f"toy {DEMO_DEFAULTS}; images {IMAGE_DEFAULTS}.")
    train.add_argument("--model", choices=MODELS, required=True,
                       help="flow family (glow needs image data, maf and iaf vectors)")
    _add_run_arguments(train, {}, None)
    train.add_argument("--batch-size", type=_positive_int, help="examples per step")
    train.add_argument("--learning-rate", type=_positive_float,
                       help="peak Adam learning rate, cosine-decayed to 0")
    train.add_argument("--num-layers", type=_positive_int,
                       help="couplings or autoregressive steps (toy data), couplings of "
                            "nice on images")
    train.add_argument("--hidden-units", type=_positive_int, nargs="+", metavar="UNITS",
                       help="toy data: hidden layer widths of each conditioner")
    image = train.add_argument_group("image data")
    image.add_argument("--num-levels", type=_positive_int,
                       help="glow: levels L; realnvp: scales")
    image.add_argument("--num-steps", type=_positive_int, help="glow: steps K per level")
    image.add_argument("--hidden-channels", type=_positive_int,
                       help="width of the conv ResNet conditioners")
    image.add_argument("--num-blocks", type=_positive_int,
                       help="residual blocks per conditioner")
    image.add_argument("--coupling", choices=("affine", "additive"), help="glow: coupling")
    image.add_argument("--logit-alpha", type=_logit_alpha, metavar="ALPHA",
                       help="model the logit of the scaled data with this margin, or 'none' "
                            "for data scaled to [-0.5, 0.5)")
    image.add_argument("--weight-decay", type=_non_negative_float,
                       help="AdamW weight decay")
    image.add_argument("--image-size", type=_positive_int,
                       help="tfds sets: resize images to this height and width")
    image.add_argument("--train-split", help="tfds sets: the training split")
    image.add_argument("--test-split", help="tfds sets: the test split")
    image.add_argument("--data-dir", help="tfds sets: tensorflow-datasets data directory")
    image.add_argument("--temperature", type=_positive_float,
                       help="temperature of the sampled images (default: 1)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in OUT/checkpoints until "
                            "--epochs epochs are complete in all (starts fresh if there is "
                            "none)")
    train.add_argument("--keep-checkpoints", type=_positive_int, default=KEEP_CHECKPOINTS,
                       metavar="N", help="checkpoints to keep (default: %(default)s)")
    return parser


class UsageError(ValueError):
    """The command line asks for something that cannot be done."""


class ResumeError(UsageError):
    """`--resume` asked to continue a checkpoint written with different settings."""


def _setting_keys(model, dataset):
    """The settings of a `train` run of `model` on `dataset`, in a fixed order."""
    shared = ("model", "dataset", "epochs", "batch_size", "learning_rate", "seed")
    if _dataset_kind(dataset) == "toy":
        return shared + _TOY_SETTINGS
    keys = shared + _IMAGE_SETTINGS[model] + _IMAGE_DATA_SETTINGS
    return keys + (_TFDS_SETTINGS if dataset != "digits" else ())


def _settings(args):
    """The run's settings: the defaults, then `--quick`, then explicit options.

    Raises:
        UsageError: `train` got an option that its model or dataset does not use, or a
            model that does not model that kind of data (glow on toy data, maf on images).
    """
    if args.command == "demo":
        settings = dict(DEMO_DEFAULTS)
        if args.quick:
            settings.update(QUICK_SETTINGS)
        settings.update({key: getattr(args, key) for key in DEMO_DEFAULTS
                         if getattr(args, key, None) is not None})
    else:
        kind = _dataset_kind(args.dataset)
        if kind == "toy" and args.model not in _TOY_MODELS:
            raise UsageError(f"--model {args.model} needs image data, got the toy density "
                             f"{args.dataset!r}")
        if kind == "image" and args.model not in _IMAGE_SETTINGS:
            raise UsageError(f"--model {args.model} models vectors, not images: use a toy "
                             f"density, not {args.dataset!r}")
        keys = _setting_keys(args.model, args.dataset)
        defaults = DEMO_DEFAULTS if kind == "toy" else IMAGE_DEFAULTS
        settings = {key: defaults.get(key) for key in keys}
        given = {key: value for key, value in vars(args).items() if value is not None}
        for key in set(DEMO_DEFAULTS) | set(IMAGE_DEFAULTS):
            if key in given and key not in keys:
                option = "--" + key.replace("_", "-")
                raise UsageError(f"{option} does not apply to --model {args.model} on "
                                 f"{kind} data ({args.dataset})")
            if key in given:
                settings[key] = given[key]
        for key, applies in (("temperature", kind == "image"),
                             ("data_dir", "train_split" in keys)):
            if key in given and not applies:
                option = "--" + key.replace("_", "-")
                raise UsageError(f"{option} does not apply to {kind} data ({args.dataset})")
        if settings.get("logit_alpha") == "none":
            settings["logit_alpha"] = None
        if kind == "image" and args.dataset in IMAGE_DATASETS and settings.get("image_size") \
                is None and IMAGE_DATASETS[args.dataset]:
            settings["image_size"] = IMAGE_DATASETS[args.dataset].get("image_size")
    if "num_points" in settings:
        num_train = settings["num_points"] - round(settings["num_points"] * TEST_FRACTION)
        settings["batch_size"] = min(settings["batch_size"], num_train)
    return settings


def _versions():
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfp_flows

    return {"tfp_flows": tfp_flows.__version__, "tensorflow": tf.__version__,
            "tensorflow_probability": tfp.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _read_checkpoint_settings(directory):
    """The settings stored in `directory/checkpoint.json`, or `None` if unreadable."""
    from tfp_flows.training.checkpoints import CHECKPOINT_INDEX

    try:
        with open(os.path.join(directory, CHECKPOINT_INDEX)) as file:
            settings = json.load(file)["metadata"]["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


def _resume_from_checkpoint(settings, directory, steps_per_epoch):
    """Loads the newest checkpoint of `directory` -> `(flow, completed_epochs)`.

    Returns `(None, 0)` when there is none. Raises `ResumeError` if the checkpoint was
    written with settings (other than `epochs`) that differ from `settings`.
    """
    import keras

    from tfp_flows.training import checkpoint_path, resume

    flow, completed = resume(directory)
    if flow is None:
        print(f"--resume: no usable checkpoint in {directory}; starting fresh")
        return None, 0
    saved = _read_checkpoint_settings(directory)
    if saved is None:
        print(f"--resume: {directory} has no readable checkpoint.json; cannot compare "
              "settings, trusting the command line")
    else:
        different = {key: (saved.get(key), value) for key, value in settings.items()
                     if key not in _RESUMABLE_CHANGES and saved.get(key) != value}
        if different:
            described = ", ".join(f"{key}: checkpoint {old!r}, now {new!r}"
                                  for key, (old, new) in sorted(different.items()))
            raise ResumeError(
                f"--resume: the checkpoints in {directory} were written with other settings "
                f"({described}); rerun with the same settings, or without --resume to "
                "start over")
    print(f"--resume: continuing from {completed} completed epoch(s) "
          f"({os.path.basename(checkpoint_path(directory, completed))}), "
          f"{settings['epochs']} in all")
    schedule = getattr(flow.optimizer, "_learning_rate", None)
    decay_steps = steps_per_epoch * settings["epochs"]
    cosine = isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    if completed < settings["epochs"] and cosine and schedule.decay_steps != decay_steps:
        # --epochs changed: stretch the schedule over the new total. The learning rate
        # jumps once, but training goes on instead of continuing at a rate of zero.
        print(f"--resume: --epochs differs from the checkpointed run; the cosine "
              f"learning-rate schedule now decays over {settings['epochs']} epochs")
        schedule.decay_steps = decay_steps
    return flow, completed


def _shuffled_batches(train, batch_size, seed, dequantize=False):
    """Batches of `train` reshuffled every epoch in an order fixed by `(seed, epoch)` alone.

    With `dequantize`, integer batches get uniform noise drawn from `(seed, epoch, batch)`
    alone. Returns the dataset and a callback telling it the epoch. As neither the order nor
    the noise depends on how many epochs this process has run, a resumed run sees the data
    exactly as an uninterrupted one would.
    """
    import keras
    import tensorflow as tf

    from tfp_flows.distributions import uniform_dequantize

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    data = tf.constant(train)
    num_batches = len(train) // batch_size
    seed = tf.constant(seed, tf.int64)

    def load(index, rows):
        x = tf.gather(data, rows)
        if dequantize:
            # A negative second component keeps these seeds apart from the shuffle's.
            x = uniform_dequantize(x, seed=tf.stack([seed, -1 - epoch * num_batches - index]))
        return x

    def one_epoch(_):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(train)), seed=tf.stack([seed, epoch]))
        # Full batches only: under XLA every new batch shape is another compilation.
        return (tf.data.Dataset.from_tensor_slices(order)
                .batch(batch_size, drop_remainder=True).enumerate().map(load))

    batches = (tf.data.Dataset.range(1).flat_map(one_epoch)
               .apply(tf.data.experimental.assert_cardinality(num_batches))
               .prefetch(tf.data.AUTOTUNE))

    class EpochCounter(keras.callbacks.Callback):
        # Keras makes each epoch's iterator after on_epoch_begin, so it sees this epoch.
        def on_epoch_begin(self, index, logs=None):
            epoch.assign(index)

    return batches, EpochCounter()


def _has_checkpoints(directory):
    from tfp_flows.training import list_checkpoints

    return bool(list_checkpoints(directory))


def _load_images(settings, data_dir):
    """`(train, test, num_bins)`: integer image arrays of the run's image set."""
    import numpy as np

    from tfp_flows.datasets import DIGITS_NUM_BINS, load_digits, load_tfds

    name = settings["dataset"]
    if name == "digits":
        return (*load_digits(seed=settings["seed"]), DIGITS_NUM_BINS)
    options = IMAGE_DATASETS.get(name) or {}
    tfds_name = name[len(TFDS_PREFIX):] if name.startswith(TFDS_PREFIX) else name

    def load(split):
        batches = load_tfds(tfds_name, split, settings["image_size"],
                            center_crop=options.get("center_crop"), batch_size=1024,
                            data_dir=data_dir)
        return np.concatenate(list(batches.as_numpy_iterator()))

    train, test = load(settings["train_split"]), load(settings["test_split"])
    return train, test, int(np.iinfo(train.dtype).max) + 1


def _build_flow(settings, event_shape, num_bins):
    """The flow a run's settings ask for; UsageError if they do not fit the data."""
    from tfp_flows import models

    model = settings["model"]
    if len(event_shape) == 1:
        builder = {"realnvp": models.RealNVP, "nice": models.NICE, "maf": models.MAF,
                   "iaf": models.IAF}[model]
        return builder(event_shape, num_layers=settings["num_layers"],
                       hidden_units=settings["hidden_units"], seed=settings["seed"])
    common = {key: settings[key] for key in ("hidden_channels", "num_blocks", "logit_alpha",
                                             "seed")}
    try:
        if model == "glow":
            return models.Glow(event_shape, num_levels=settings["num_levels"],
                               num_steps=settings["num_steps"], coupling=settings["coupling"],
                               num_bins=num_bins, **common)
        if model == "realnvp":
            return models.RealNVP(event_shape, num_scales=settings["num_levels"],
                                  num_bins=num_bins, **common)
        return models.NICE(event_shape, num_layers=settings["num_layers"], num_bins=num_bins,
                           **common)
    except ValueError as error:
        raise UsageError(f"--model {model} on {settings['dataset']} (images of shape "
                         f"{list(event_shape)}): {error}") from error


def _mean_nll(flow, x, dequantize_seed=None):
    """Mean negative log-likelihood of `x` in nats, in float64, evaluated in batches.

    With `dequantize_seed`, integer `x` is dequantized batch by batch (seeded by the seed
    and the batch), so no float copy of the whole set is made.
    """
    import numpy as np

    from tfp_flows.distributions import uniform_dequantize

    log_probs = []
    for start in range(0, len(x), EVAL_BATCH_SIZE):
        batch = x[start:start + EVAL_BATCH_SIZE]
        if dequantize_seed is not None:
            batch = uniform_dequantize(batch, seed=[dequantize_seed, start]).numpy()
        log_probs.append(flow.log_prob(batch).numpy().astype(np.float64))
    return float(-np.mean(np.concatenate(log_probs)))


def run(settings, out, verbose=1, *, checkpoints=False, resume=False,
        keep_checkpoints=KEEP_CHECKPOINTS, temperature=1.0, data_dir=None):
    """Trains a flow with `settings` (see `_settings`) and writes outputs to `out`.

    Args:
        settings: the run's settings, as made by `_settings`.
        out: output directory (must exist).
        verbose: Keras verbosity.
        checkpoints: whether to checkpoint every epoch into `out/checkpoints` and write
            TensorBoard logs to `out/logs`.
        resume: whether to continue from the newest checkpoint in `out/checkpoints` (implies
            `checkpoints`); training stops once `settings["epochs"]` epochs are complete in
            all.
        keep_checkpoints: how many checkpoints to keep.
        temperature: temperature of the sampled images.
        data_dir: tensorflow-datasets data directory.

    Returns:
        The metrics written to `out/metrics.json`.

    Raises:
        UsageError: the settings do not fit the data; `ResumeError`: `resume` found
            checkpoints written with other settings.
    """
    import keras
    import numpy as np

    from tfp_flows._atomic import write_json
    from tfp_flows.datasets import load_toy, plot_density, plot_image_grid, plot_samples
    from tfp_flows.distributions import uniform_dequantize
    from tfp_flows.training import EpochCheckpoint, bits_per_dim, tensorboard_callback

    start = time.perf_counter()
    seed = settings["seed"]
    keras.utils.set_random_seed(seed)
    is_image = _dataset_kind(settings["dataset"]) == "image"
    if is_image:
        train, test_levels, num_bins = _load_images(settings, data_dir)
        # One fixed dequantization of the test set, for per-epoch and final evaluation.
        test = uniform_dequantize(test_levels, seed=seed + 1).numpy()
    else:
        train, test = load_toy(settings["dataset"], settings["num_points"], seed=seed,
                               test_fraction=TEST_FRACTION)
        num_bins = None
    batch_size = settings["batch_size"]
    if batch_size > len(train):
        raise UsageError(f"--batch-size {batch_size} is larger than the {len(train)} training "
                         "examples")
    steps_per_epoch = len(train) // batch_size
    checkpoint_dir = os.path.join(out, "checkpoints")
    log_dir = os.path.join(out, "logs")
    flow, initial_epoch = None, 0
    if resume:
        flow, initial_epoch = _resume_from_checkpoint(settings, checkpoint_dir,
                                                      steps_per_epoch)
    if flow is None:
        flow = _build_flow(settings, list(train.shape[1:]), num_bins)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            settings["learning_rate"], decay_steps=steps_per_epoch * settings["epochs"])
        # Clipping stops the rare huge gradient of a far-out point from undoing training.
        if settings.get("weight_decay"):
            optimizer = keras.optimizers.AdamW(learning_rate, global_clipnorm=1.0,
                                               weight_decay=settings["weight_decay"])
        else:
            optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=1.0)
        # XLA even on CPU (unlike Keras' "auto"): for the demo it took 0.7 s per epoch
        # against 1.1 s in a plain graph, which repays the extra ~7 s of compilation.
        # (A checkpoint keeps these compile settings.)
        flow.compile(optimizer=optimizer, jit_compile=True,
                     steps_per_execution=min(10, steps_per_epoch))
    batches, epoch_counter = _shuffled_batches(train, batch_size, seed, dequantize=is_image)
    callbacks = [epoch_counter]
    if checkpoints or resume:
        if initial_epoch == 0:
            # A fresh run: logs of an earlier one would be drawn over these.
            shutil.rmtree(log_dir, ignore_errors=True)
            if _has_checkpoints(checkpoint_dir):
                print(f"{checkpoint_dir} holds checkpoints of an earlier run; they will be "
                      "replaced once this run's first checkpoint is written (use --resume to "
                      "continue that run instead)")
        callbacks += [
            EpochCheckpoint(checkpoint_dir, keep=keep_checkpoints, fresh=initial_epoch == 0,
                            metadata={"settings": settings}),
            tensorboard_callback(log_dir),
        ]
    if initial_epoch < settings["epochs"]:
        flow.fit(batches, epochs=settings["epochs"], initial_epoch=initial_epoch,
                 shuffle=False, verbose=verbose, callbacks=callbacks,
                 validation_data=test if is_image else None,
                 validation_batch_size=EVAL_BATCH_SIZE if is_image else None)
    else:
        print(f"--resume: {initial_epoch} epoch(s) already complete (--epochs "
              f"{settings['epochs']}); evaluating without training")
    train_seconds = time.perf_counter() - start

    if is_image:
        train_nll = _mean_nll(flow, train, dequantize_seed=seed + 2)
        samples = flow.sample(NUM_IMAGE_SAMPLES, temperature=temperature, seed=seed).numpy()
        plot_image_grid(samples, os.path.join(out, "samples.png"), num_bins, data=test_levels,
                        title=f"{settings['model']} samples (T={temperature:g})")
        units = "nats per image, density over the dequantized grey levels (one level wide)"
    else:
        train_nll = _mean_nll(flow, train)
        samples = flow.sample(NUM_SAMPLES, seed=seed).numpy()
        plot_density(flow.log_prob, test, os.path.join(out, "density.png"),
                     title=f"{settings['model']} density")
        plot_samples(samples, os.path.join(out, "samples.png"), data=test,
                     title=f"{settings['model']} samples")
        units = "nats per example in the dataset's generated coordinates (not standardised)"
    test_nll = _mean_nll(flow, test)
    flow.export(os.path.join(out, "saved_model"))

    def bpd(nll):
        space = {} if num_bins is None else {"num_bins": num_bins, "density_space": "bins"}
        return float(bits_per_dim(nll, flow.num_dims, **space))

    metrics = {
        **settings,
        "train_nll": train_nll,
        "test_nll": test_nll,
        "train_bpd": bpd(train_nll),
        "test_bpd": bpd(test_nll),
        "nll_units": units,
        "num_bins": num_bins,
        "num_train": len(train),
        "num_test": len(test),
        "num_samples": len(samples),
        "sample_temperature": temperature if is_image else 1.0,
        "samples_finite": bool(np.all(np.isfinite(samples))),
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "initial_epoch": initial_epoch,
        "completed_epochs": max(initial_epoch, settings["epochs"]),
        "versions": _versions(),
    }
    write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics


def main(argv=None):
    """Runs the `tfp-flows` command with `argv` (default: `sys.argv[1:]`); returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except UsageError as error:
        parser.error(str(error))
    out = os.path.abspath(args.out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        parser.error(f"cannot create output directory --out {args.out!r}: {error}")
    if not os.access(out, os.W_OK):
        parser.error(f"output directory --out {args.out!r} is not writable")
    is_train = args.command == "train"
    try:
        metrics = run(settings, out, verbose=args.verbose, checkpoints=is_train,
                      resume=is_train and args.resume,
                      keep_checkpoints=getattr(args, "keep_checkpoints", KEEP_CHECKPOINTS),
                      temperature=getattr(args, "temperature", None) or 1.0,
                      data_dir=getattr(args, "data_dir", None))
    except UsageError as error:
        parser.error(str(error))
    print(f"{settings['model']} on {settings['dataset']}: train NLL {metrics['train_nll']:.4f}, "
          f"test NLL {metrics['test_nll']:.4f} nats ({metrics['test_bpd']:.4f} bits/dim), "
          f"{metrics['seconds']:.1f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
