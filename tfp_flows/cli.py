"""The `tfp-flows` command: train a flow on a toy 2-D density and write what it learned.

`tfp-flows demo` trains a RealNVP on two moons with tuned defaults; `tfp-flows train`
exposes the model and its training settings. Both write into `--out`:

- `metrics.json`: train/test negative log-likelihood (nats per example, in the dataset's
  generated coordinates, see `tfp_flows.datasets.toy`), bits per dimension, wall time,
  settings and library versions;
- `density.png` (learned density beside the data) and `samples.png`;
- `saved_model/`: the flow exported with `Flow.export`.

`tfp-flows train` also writes, while it trains:

- `checkpoints/epoch-NNNN.keras` after every epoch (the whole model with its optimizer
  state, the newest `--keep-checkpoints` kept) and `checkpoints/checkpoint.json`, see
  `tfp_flows.training.EpochCheckpoint`;
- `logs/`: TensorBoard logs (`tensorboard --logdir OUT/logs`), written by
  `keras.callbacks.TensorBoard`, or as epoch scalars alone when the `tensorboard` package
  is not installed (see `tfp_flows.training.tensorboard_callback`).

`tfp-flows train --resume` continues from the newest intact checkpoint in `OUT/checkpoints`
until `--epochs` epochs are complete in all (the optimizer's iteration count is restored, so
the cosine learning-rate schedule and the shuffling order continue as if never stopped); with
no checkpoint it starts fresh and says so. Without `--resume`, checkpoints and logs of an
earlier run in `OUT` are replaced (the old checkpoints only once the new run's first one is
complete). `tfp-flows demo` writes no checkpoints or logs.

Outputs are written only after training, each one atomically (temporary file, then
`os.replace`), so an interrupted run never leaves a half-written file behind;
`metrics.json` comes last. Its `seconds` is the wall time of the run after start-up
(data, training, evaluation, plots and export; not the imports).

With the defaults, `tfp-flows demo` takes about a minute on 2 CPU cores and reaches a test
NLL of about 0.3 nats on two moons (noise 0.05, whose entropy is about 0.26 nats).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

__all__ = ["main"]

MODELS = ("realnvp", "nice")
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
TEST_FRACTION = 0.2
NUM_SAMPLES = 5000
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


def _add_run_arguments(parser, defaults, dataset_choices, notes=None):
    """Adds the options shared by `demo` and `train`; `None` defaults are filled later."""
    notes = notes or {}

    def shown(key):
        if key in notes:
            return f" (default: {notes[key]})"
        return f" (default: {defaults[key]})" if defaults.get(key) is not None else ""

    parser.add_argument("--dataset", choices=dataset_choices, default=defaults.get("dataset"),
                        required="dataset" not in defaults, help="toy 2-D density")
    parser.add_argument("--epochs", type=_positive_int, default=defaults["epochs"],
                        help="training epochs" + shown("epochs"))
    parser.add_argument("--out", default=defaults.get("out"), required="out" not in defaults,
                        help="output directory, created if needed" + shown("out"))
    parser.add_argument("--num-points", type=_num_points, default=defaults["num_points"],
                        help=f"points generated, {TEST_FRACTION:.0%}% held out for testing"
                             + shown("num_points"))
    parser.add_argument("--seed", type=_non_negative_int, default=defaults["seed"],
                        help="seed of the data, the weights and the samples" + shown("seed"))
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras verbosity: 0 silent, 1 progress bar (default), 2 one line "
                             "per epoch")


def build_parser():
    """Returns the `argparse` parser of the `tfp-flows` command."""
    from tfp_flows.datasets import TOY_DATASETS

    datasets = sorted(TOY_DATASETS)
    parser = argparse.ArgumentParser(
        prog="tfp-flows", description="Normalizing flows for TensorFlow Probability.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train a RealNVP on a toy density with tuned defaults",
        description="Train a RealNVP on a toy 2-D density (two moons by default) and write "
                    "metrics.json, density.png, samples.png and saved_model/ into --out.")
    _add_run_arguments(demo, {**DEMO_DEFAULTS, "out": "./tfp_flows_demo", "epochs": None,
                              "num_points": None}, datasets,
                       notes={key: f"{DEMO_DEFAULTS[key]}, {QUICK_SETTINGS[key]} with --quick"
                              for key in ("epochs", "num_points")})
    demo.add_argument("--quick", action="store_true",
                      help="a tiny run for smoke tests: a small model, trained for "
                           f"{QUICK_SETTINGS['epochs']} epoch on "
                           f"{QUICK_SETTINGS['num_points']} points unless --epochs or "
                           "--num-points say otherwise")

    train = commands.add_parser(
        "train", help="train a chosen flow on a toy density",
        description="Train a flow on a toy 2-D density and write metrics.json, "
                    "density.png, samples.png and saved_model/ into --out.")
    train.add_argument("--model", choices=MODELS, required=True, help="flow family")
    defaults = {k: v for k, v in DEMO_DEFAULTS.items() if k != "dataset"}
    _add_run_arguments(train, defaults, datasets)
    train.add_argument("--batch-size", type=_positive_int, default=defaults["batch_size"],
                       help="examples per step (default: %(default)s)")
    train.add_argument("--learning-rate", type=_positive_float,
                       default=defaults["learning_rate"],
                       help="peak Adam learning rate, cosine-decayed to 0 "
                            "(default: %(default)s)")
    train.add_argument("--num-layers", type=_positive_int, default=defaults["num_layers"],
                       help="coupling layers (default: %(default)s)")
    train.add_argument("--hidden-units", type=_positive_int, nargs="+",
                       default=defaults["hidden_units"], metavar="UNITS",
                       help="hidden layer widths of each conditioner (default: 64 64)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in OUT/checkpoints until "
                            "--epochs epochs are complete in all (starts fresh if there is "
                            "none)")
    train.add_argument("--keep-checkpoints", type=_positive_int, default=KEEP_CHECKPOINTS,
                       metavar="N", help="checkpoints to keep (default: %(default)s)")
    return parser


def _settings(args):
    """The run's settings: the demo's defaults, then `--quick`, then explicit options."""
    settings = dict(DEMO_DEFAULTS)
    if getattr(args, "quick", False):
        settings.update(QUICK_SETTINGS)
    settings.update({key: getattr(args, key) for key in DEMO_DEFAULTS
                     if getattr(args, key, None) is not None})
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


class ResumeError(ValueError):
    """`--resume` asked to continue a checkpoint written with different settings."""


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


def _shuffled_batches(train, batch_size, seed):
    """Batches of `train` reshuffled every epoch in an order fixed by `(seed, epoch)` alone.

    Returns the dataset and a callback telling it the epoch. As the order does not depend on
    how many epochs this process has run, a resumed run sees the data exactly as an
    uninterrupted one would.
    """
    import keras
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    data = tf.constant(train)
    num_batches = len(train) // batch_size

    def one_epoch(_):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(train)), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        # Full batches only: under XLA every new batch shape is another compilation.
        return (tf.data.Dataset.from_tensor_slices(tf.gather(data, order))
                .batch(batch_size, drop_remainder=True))

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


def run(settings, out, verbose=1, *, checkpoints=False, resume=False,
        keep_checkpoints=KEEP_CHECKPOINTS):
    """Trains a flow with `settings` (keys of `DEMO_DEFAULTS`) and writes outputs to `out`.

    Args:
        settings: the run's settings, keys of `DEMO_DEFAULTS`.
        out: output directory (must exist).
        verbose: Keras verbosity.
        checkpoints: whether to checkpoint every epoch into `out/checkpoints` and write
            TensorBoard logs to `out/logs`.
        resume: whether to continue from the newest checkpoint in `out/checkpoints` (implies
            `checkpoints`); training stops once `settings["epochs"]` epochs are complete in
            all.
        keep_checkpoints: how many checkpoints to keep.

    Returns:
        The metrics written to `out/metrics.json`.

    Raises:
        ResumeError: `resume` found checkpoints written with other settings.
    """
    import keras
    import numpy as np

    from tfp_flows import models
    from tfp_flows.datasets import load_toy, plot_density, plot_samples
    from tfp_flows.training import EpochCheckpoint, tensorboard_callback

    start = time.perf_counter()
    seed = settings["seed"]
    keras.utils.set_random_seed(seed)
    train, test = load_toy(settings["dataset"], settings["num_points"], seed=seed,
                           test_fraction=TEST_FRACTION)
    batch_size = settings["batch_size"]
    steps_per_epoch = len(train) // batch_size
    checkpoint_dir = os.path.join(out, "checkpoints")
    log_dir = os.path.join(out, "logs")
    flow, initial_epoch = None, 0
    if resume:
        flow, initial_epoch = _resume_from_checkpoint(settings, checkpoint_dir,
                                                      steps_per_epoch)
    if flow is None:
        builder = {"realnvp": models.RealNVP, "nice": models.NICE}[settings["model"]]
        flow = builder([2], num_layers=settings["num_layers"],
                       hidden_units=settings["hidden_units"], seed=seed)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            settings["learning_rate"], decay_steps=steps_per_epoch * settings["epochs"])
        # Clipping stops the rare huge gradient of a far-out point from undoing training.
        optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=1.0)
        # XLA even on CPU (unlike Keras' "auto"): for the demo it took 0.7 s per epoch
        # against 1.1 s in a plain graph, which repays the extra ~7 s of compilation.
        # (A checkpoint keeps these compile settings.)
        flow.compile(optimizer=optimizer, jit_compile=True,
                     steps_per_execution=min(10, steps_per_epoch))
    batches, epoch_counter = _shuffled_batches(train, batch_size, seed)
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
                 shuffle=False, verbose=verbose, callbacks=callbacks)
    else:
        print(f"--resume: {initial_epoch} epoch(s) already complete (--epochs "
              f"{settings['epochs']}); evaluating without training")
    train_seconds = time.perf_counter() - start

    def mean_nll(points):
        return float(-np.mean(flow.log_prob(points).numpy().astype(np.float64)))

    train_nll, test_nll = mean_nll(train), mean_nll(test)
    samples = flow.sample(NUM_SAMPLES, seed=seed).numpy()

    plot_density(flow.log_prob, test, os.path.join(out, "density.png"),
                 title=f"{settings['model']} density")
    plot_samples(samples, os.path.join(out, "samples.png"), data=test,
                 title=f"{settings['model']} samples")
    flow.export(os.path.join(out, "saved_model"))
    from tfp_flows.training import bits_per_dim
    from tfp_flows.training.checkpoints import _write_json_atomically

    metrics = {
        **settings,
        "train_nll": train_nll,
        "test_nll": test_nll,
        "train_bpd": float(bits_per_dim(train_nll, 2)),
        "test_bpd": float(bits_per_dim(test_nll, 2)),
        "nll_units": "nats per example in the dataset's generated coordinates "
                     "(not standardised)",
        "num_train": len(train),
        "num_test": len(test),
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "initial_epoch": initial_epoch,
        "completed_epochs": max(initial_epoch, settings["epochs"]),
        "versions": _versions(),
    }
    _write_json_atomically(os.path.join(out, "metrics.json"), metrics)
    return metrics


def main(argv=None):
    """Runs the `tfp-flows` command with `argv` (default: `sys.argv[1:]`); returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings(args)
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
                      keep_checkpoints=getattr(args, "keep_checkpoints", KEEP_CHECKPOINTS))
    except ResumeError as error:
        parser.error(str(error))
    print(f"{settings['model']} on {settings['dataset']}: train NLL {metrics['train_nll']:.4f}, "
          f"test NLL {metrics['test_nll']:.4f} nats ({metrics['test_bpd']:.4f} bits/dim), "
          f"{metrics['seconds']:.1f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
