"""The `tfp-flows` command: train a flow on toy 2-D densities or images, write what it learned.

`tfp-flows demo` trains a RealNVP on two moons with tuned defaults; `tfp-flows train`
exposes the model, the dataset and the training settings:

- toy 2-D densities (`two_moons`, `checkerboard`, ... see `tfp_flows.datasets.toy`) with
  any registered family that models vectors (`realnvp`, `nice`, `maf`, `iaf`, ...);
- images with any registered family that models images (`glow`, `realnvp`, `nice`, ...):
  `digits` (scikit-learn's bundled 8x8 digits, 17
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
  `keras.callbacks.TensorBoard` (`tensorboard` is a dependency). Image runs also log the
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
bits per dimension of about 2.15 on the 17-level digits.

The families, their data and their options come from `tfp_flows.models.FAMILIES`
(`tfp-flows train --help` lists them): a family registered there is trainable here. The
package splits along the run: `arguments` (options, defaults, settings), `data` (toy and
image sets, shuffled batches), `training` (the flow, the loop, checkpoints and `--resume`)
and `outputs` (plots, export, `metrics.json`).

Parsing the command line (and answering `--help`) imports no TensorFlow: the parser reads
TensorFlow-free tables (`catalog`). A run then imports TensorFlow without its start-up log
(`startup`): `TF_CPP_MIN_LOG_LEVEL` defaults to 3 for the command, and a level the user
sets holds (`TF_CPP_MIN_LOG_LEVEL=0 tfp-flows ...` shows everything).
"""


import importlib
import os
import sys

from tfp_flows.cli.arguments import (
    DEMO_DEFAULTS,
    IMAGE_DEFAULTS,
    KEEP_CHECKPOINTS,
    QUICK_SETTINGS,
    build_parser,
    settings_of,
)
from tfp_flows.cli.catalog import (
    IMAGE_DATASETS,
    TEST_FRACTION,
    TFDS_PREFIX,
    dataset_kind,
    families,
)
from tfp_flows.cli.errors import DataUnavailableError, ResumeError, UsageError
from tfp_flows.cli.startup import import_tensorflow

__all__ = [
    "DEMO_DEFAULTS",
    "EVAL_BATCH_SIZE",
    "IMAGE_DATASETS",
    "IMAGE_DEFAULTS",
    "KEEP_CHECKPOINTS",
    "NUM_IMAGE_SAMPLES",
    "NUM_SAMPLES",
    "QUICK_SETTINGS",
    "TEST_FRACTION",
    "TFDS_PREFIX",
    "DataUnavailableError",
    "ResumeError",
    "UsageError",
    "build_parser",
    "main",
    "run",
]

# Names of the modules that import TensorFlow, loaded when first used, so that building
# the parser and printing help import none of them.
_LAZY = {
    "EVAL_BATCH_SIZE": ("outputs", "EVAL_BATCH_SIZE"),
    "NUM_IMAGE_SAMPLES": ("outputs", "NUM_IMAGE_SAMPLES"),
    "NUM_SAMPLES": ("outputs", "NUM_SAMPLES"),
    "run": ("training", "run"),
    "build_flow": ("training", "build_flow"),
    "shuffled_batches": ("data", "shuffled_batches"),
    # The names of the single-module command, kept for code that used them.
    "_shuffled_batches": ("data", "shuffled_batches"),
    "_build_flow": ("training", "build_flow"),
}
_settings = settings_of
_dataset_kind = dataset_kind


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    # `MODELS` was a fixed tuple; the families now live in the registry and may change.
    if name == "MODELS":
        return tuple(sorted(families()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fail(message):
    """Reports a run that cannot go on in one line on stderr; returns the exit status."""
    # One write with its newline: a download thread still logging cannot land inside the line.
    sys.stderr.write(f"tfp-flows: error: {message}\n")
    sys.stderr.flush()
    return 1


def main(argv=None):
    """Runs the `tfp-flows` command with `argv` (default: `sys.argv[1:]`).

    Returns:
        0 on success; 1 when the run fails on its data or its training (data that cannot
        be downloaded, a loss that became NaN), after one line on stderr. Bad arguments
        exit through argparse (status 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_of(args)
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
    import_tensorflow()  # first: TensorFlow's start-up log follows the command's level
    from tfp_flows.cli.training import run

    try:
        metrics = run(settings, out, verbose=args.verbose, checkpoints=is_train,
                      resume=is_train and args.resume,
                      keep_checkpoints=getattr(args, "keep_checkpoints", KEEP_CHECKPOINTS),
                      temperature=getattr(args, "temperature", None) or 1.0,
                      data_dir=getattr(args, "data_dir", None),
                      distribute=getattr(args, "distribute", None))
    except DataUnavailableError as error:
        return _fail(str(error))
    except UsageError as error:
        parser.error(str(error))
    except FloatingPointError as error:
        # NaNGuard stopped training; the checkpoints written before are intact.
        kept = " Checkpoints of the completed epochs are kept." if is_train else ""
        return _fail(f"{error}{kept}")
    estimator = metrics["log_prob_estimator"]
    bound = "" if estimator == "exact" else f", a bound: {estimator}"
    print(f"{settings['model']} on {settings['dataset']}: train NLL {metrics['train_nll']:.4f}, "
          f"test NLL {metrics['test_nll']:.4f} nats ({metrics['test_bpd']:.4f} bits/dim"
          f"{bound}), {metrics['seconds']:.1f} s; outputs in {out}")
    return 0
