"""The `tfp-flows` command line: its options, their defaults and the settings of a run.

What depends on the flow family comes from `tfp_flows.models.FAMILIES`: the `--model`
choices, the families listed by `train --help`, which model options apply to which family
on which kind of data, and their defaults where a family has its own (read through
`tfp_flows.cli.catalog`).
"""

import argparse
import textwrap

from tfp_flows._registry import get_family
from tfp_flows.cli.catalog import (
    DATA_KINDS,
    IMAGE_DATASETS,
    TEST_FRACTION,
    TFDS_PREFIX,
    dataset_kind,
    families,
    toy_dataset_names,
)
from tfp_flows.cli.catalog import settings as model_settings
from tfp_flows.cli.errors import UsageError

__all__ = [
    "DEMO_DEFAULTS",
    "DISTRIBUTE_CHOICES",
    "IMAGE_DEFAULTS",
    "KEEP_CHECKPOINTS",
    "QUICK_SETTINGS",
    "build_parser",
    "settings_of",
]

# Whether toy (vector) data are standardised by default. The toy densities are generated at
# an O(1) scale, where it measured neither better nor worse (docs/families/maf.md).
STANDARDIZE_DEFAULT = False
DEMO_DEFAULTS = {
    "model": "realnvp",
    "dataset": "two_moons",
    "epochs": 60,
    "num_points": 20000,
    "batch_size": 256,
    "learning_rate": 2e-3,
    "num_layers": 16,
    "hidden_units": [64, 64],
    "standardize": STANDARDIZE_DEFAULT,
    "seed": 0,
}
# A run that finishes in seconds, for CI and tests.
QUICK_SETTINGS = {"epochs": 1, "num_points": 2000, "num_layers": 2, "hidden_units": [16]}
# Image runs: tuned on the digits (Glow: about 2.15 test bits/dim in a few minutes on 2 CPU
# cores).
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
KEEP_CHECKPOINTS = 3
# `train --distribute` choices: tf.distribute strategies (not a setting of the run: a run
# resumes under another strategy, or none).
DISTRIBUTE_CHOICES = ("mirrored", "multi-worker")
# The settings of every train run, then those of each kind of data beside the family's.
_SHARED_SETTINGS = ("model", "dataset", "epochs", "batch_size", "learning_rate", "seed")
_TOY_DATA_SETTINGS = ("num_points", "standardize")
_IMAGE_DATA_SETTINGS = ("weight_decay", "logit_alpha")
_TFDS_SETTINGS = ("image_size", "train_split", "test_split")
# Options that are settings of a run (recorded in metrics.json and checkpoints).
_RUN_SETTINGS = (*DEMO_DEFAULTS, *IMAGE_DEFAULTS, *model_settings())
_KIND_LABELS = {"vector": "toy data", "image": "images"}


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


def _float_parser(accept, expected):
    """An argparse type accepting floats `x` with `accept(x)`; `expected` names them."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_float = _float_parser(lambda x: 0.0 < x < float("inf"), "a positive number")
_non_negative_float = _float_parser(lambda x: 0.0 <= x < float("inf"), "a number >= 0")
_alpha = _float_parser(lambda x: 0.0 < x < 0.5, "a number in (0, 0.5) or 'none'")


def _logit_alpha(text):
    # "none" is turned into None by settings_of; None means "not given" here.
    return "none" if text.lower() == "none" else _alpha(text)


def _dataset_name(text):
    if dataset_kind(text) is None:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}: choose a toy density "
            f"({', '.join(sorted(toy_dataset_names()))}), "
            f"an image set ({', '.join(IMAGE_DATASETS)}) or any tensorflow-datasets image set "
            f"as {TFDS_PREFIX}NAME")
    return text


# How the command parses each model setting a family can take (`SETTINGS`).
_MODEL_OPTIONS = {
    "num_layers": {"type": _positive_int},
    "hidden_units": {"type": _positive_int, "nargs": "+", "metavar": "UNITS"},
    "num_levels": {"type": _positive_int},
    "num_steps": {"type": _positive_int},
    "hidden_channels": {"type": _positive_int},
    "num_blocks": {"type": _positive_int},
    "coupling": {"choices": ("affine", "additive", "logistic_mixture")},
    "conditioner": {"choices": ("glow", "resnet")},
}


def _option(key):
    return "--" + key.replace("_", "-")


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
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                        help="toy data: put a fixed standardisation (the training set's mean "
                             "and std per dimension) at the flow's data end, its log-det "
                             "counted, so NLLs stay in the data's units (default: "
                             f"{'on' if STANDARDIZE_DEFAULT else 'off'})")
    parser.add_argument("--seed", type=_non_negative_int, default=defaults.get("seed"),
                        help="seed of the data, the weights and the samples" + shown("seed"))
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras verbosity: 0 silent, 1 progress bar (default), 2 one line "
                             "per epoch")


def _add_demo_parser(commands):
    demo = commands.add_parser(
        "demo", help="train a RealNVP on a toy density with tuned defaults",
        description="Train a RealNVP on a toy 2-D density (two moons by default) and write "
                    "metrics.json, density.png, samples.png and saved_model/ into --out.")
    _add_run_arguments(demo, {**DEMO_DEFAULTS, "out": "./tfp_flows_demo", "epochs": None,
                              "num_points": None}, sorted(toy_dataset_names()),
                       notes={key: f"{DEMO_DEFAULTS[key]}, {QUICK_SETTINGS[key]} with --quick"
                              for key in ("epochs", "num_points")})
    demo.add_argument("--quick", action="store_true",
                      help="a tiny run for smoke tests: a small model, trained for "
                           f"{QUICK_SETTINGS['epochs']} epoch on "
                           f"{QUICK_SETTINGS['num_points']} points unless --epochs or "
                           "--num-points say otherwise")


def _families_epilog():
    """The registered families, one paragraph each, for the end of `train --help`."""
    lines = ["flow families (--model NAME, registered in tfp_flows.models.FAMILIES):"]
    registered = families()
    width = max((len(name) for name in registered), default=0)
    for name in sorted(registered):
        family = registered[name]
        data = " and ".join(_KIND_LABELS[kind] for kind in family.data_kinds)
        lines += textwrap.wrap(f"{name:<{width}}  {data}: {family.description}", width=78,
                               initial_indent="  ", subsequent_indent=" " * (width + 4))
    return "\n".join(lines)


def _model_option_help(setting):
    """What `setting` means, and which families take it on which data (from the registry)."""
    uses = []
    registered = families()
    for kind, label in _KIND_LABELS.items():
        names = [name + (f" (as {registered[name].arguments[setting]})"
                         if setting in registered[name].arguments else "")
                 for name in sorted(registered)
                 if setting in registered[name].options.get(kind, ())]
        if names:
            uses.append(f"{', '.join(names)} on {label}")
    return f"{model_settings()[setting]} ({'; '.join(uses) if uses else 'no family takes it'})"


def _add_train_parser(commands):
    description = ("Train a flow on a toy 2-D density or an image set and write metrics.json, "
                   "samples.png (and density.png for toy data), checkpoints/, logs/ and "
                   "saved_model/ into --out. Defaults depend on the kind of data: toy "
                   f"{DEMO_DEFAULTS}; images {IMAGE_DEFAULTS}; a family may have its own.")
    train = commands.add_parser(
        "train", help="train a chosen flow on a toy density or an image set",
        description=textwrap.fill(description, width=78), epilog=_families_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--model", choices=sorted(families()), required=True,
                       help="flow family (listed below with the data each one models)")
    _add_run_arguments(train, {}, None)
    train.add_argument("--batch-size", type=_positive_int, help="examples per step")
    train.add_argument("--learning-rate", type=_positive_float,
                       help="peak Adam learning rate, cosine-decayed to 0")
    model = train.add_argument_group("model options (each applies to the families named)")
    for setting, parsing in _MODEL_OPTIONS.items():
        model.add_argument(_option(setting), **parsing, help=_model_option_help(setting))
    _add_image_arguments(train.add_argument_group("image data"))
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in OUT/checkpoints until "
                            "--epochs epochs are complete in all (starts fresh if there is "
                            "none)")
    train.add_argument("--keep-checkpoints", type=_positive_int, default=KEEP_CHECKPOINTS,
                       metavar="N", help="checkpoints to keep (default: %(default)s)")
    train.add_argument("--distribute", choices=DISTRIBUTE_CHOICES,
                       help="train with tf.distribute: 'mirrored' on this machine's devices "
                            "(its GPUs, else its CPU), 'multi-worker' on the machines listed "
                            "in the TF_CONFIG environment variable (run the same command on "
                            "each; the chief writes OUT); see docs/distributed.md")


def _add_image_arguments(image):
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


def build_parser():
    """Returns the `argparse` parser of the `tfp-flows` command."""
    missing = set(model_settings()) - set(_MODEL_OPTIONS)
    if missing:  # a setting added to the registry needs its parsing here
        raise RuntimeError(f"no command-line option parses the settings {sorted(missing)}")
    parser = argparse.ArgumentParser(
        prog="tfp-flows", description="Normalizing flows for TensorFlow Probability.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_parser(commands)
    _add_train_parser(commands)
    return parser


def _setting_keys(family, dataset):
    """The settings of a `train` run of `family` on `dataset`, in a fixed order."""
    kind = dataset_kind(dataset)
    if kind == "toy":
        return _SHARED_SETTINGS + _TOY_DATA_SETTINGS + family.options[DATA_KINDS[kind]]
    keys = _SHARED_SETTINGS + family.options[DATA_KINDS[kind]] + _IMAGE_DATA_SETTINGS
    return keys + (_TFDS_SETTINGS if dataset != "digits" else ())


def _check_data_kind(family, kind, dataset):
    if DATA_KINDS[kind] in family.data_kinds:
        return
    if kind == "toy":
        raise UsageError(f"--model {family.name} needs image data, got the toy density "
                         f"{dataset!r}")
    raise UsageError(f"--model {family.name} models vectors, not images: use a toy density, "
                     f"not {dataset!r}")


def _train_settings(args):
    family = get_family(args.model)
    kind = dataset_kind(args.dataset)
    _check_data_kind(family, kind, args.dataset)
    keys = _setting_keys(family, args.dataset)
    defaults = {**(DEMO_DEFAULTS if kind == "toy" else IMAGE_DEFAULTS),
                **family.defaults[DATA_KINDS[kind]]}
    settings = {key: defaults.get(key) for key in keys}
    given = {key: value for key, value in vars(args).items() if value is not None}
    for key in dict.fromkeys(_RUN_SETTINGS):
        if key in given and key not in keys:
            raise UsageError(f"{_option(key)} does not apply to --model {args.model} on "
                             f"{kind} data ({args.dataset})")
        if key in given:
            settings[key] = given[key]
    for key, applies in (("temperature", kind == "image"),
                         ("data_dir", "train_split" in keys)):
        if key in given and not applies:
            raise UsageError(f"{_option(key)} does not apply to {kind} data ({args.dataset})")
    if settings.get("logit_alpha") == "none":
        settings["logit_alpha"] = None
    if kind == "image" and settings.get("image_size") is None and IMAGE_DATASETS.get(
            args.dataset):
        settings["image_size"] = IMAGE_DATASETS[args.dataset].get("image_size")
    return settings


def settings_of(args):
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
        settings = _train_settings(args)
    if "num_points" in settings:
        num_train = settings["num_points"] - round(settings["num_points"] * TEST_FRACTION)
        settings["batch_size"] = min(settings["batch_size"], num_train)
    return settings
