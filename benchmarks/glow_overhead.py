"""Glow's training-step overhead outside its conditioners: 1x1 convolutions and channel splits.

Three measurements, all forward and backward inside `tf.function`, each the median of
several timings after a warm-up:

1. Forms side by side (independent of the library): 8 layers applying a `[C, C]` kernel to
   a `[64, 14, 14, 8]` batch by `tf.einsum` and by reshape to `[-1, C]` + `tf.matmul` +
   reshape back; 8 layers splitting the channels in halves and concatenating them again by
   slicing and by `tf.split`. The forms are timed in turn within each repeat, so a change
   in the machine's load reaches all of them.
2. The library's bijectors: 8 `InvertibleConv1x1` with LU kernels, 8 half-mask
   `AffineCoupling`s with a 1x1 `Conv2D` conditioner (cheap, so the split shows) and 8
   `SplitChannels` around a `Scale`, on the same batch.
3. A whole Glow training step: `Glow([28, 28, 1], num_levels=2, num_steps=8,
   hidden_channels=128)`, batch 64, `model.fit` on uniform data in [0, 1); after a warm-up
   `fit`, the median of the per-step times (from batch-end timestamps) over `--steps` steps.
   The same with `hidden_channels=8`: conditioners so narrow that the rest of the step
   (ActNorm, 1x1 convolutions, splits, squeezes, the optimizer) dominates it.

Each measurement runs in a fresh process. With `--against REF` the library of the git
commit `REF` (exported to a temporary directory) and the imported one are measured in
alternating processes (in turn first and second), `--rounds` of each, so that both see
the same changes in the machine's load; the table reports medians over the rounds. With
`--write` it replaces the glow-overhead section of `docs/benchmarks.md`.

Usage: python benchmarks/glow_overhead.py [--against REF] [--rounds N] [--repeats N]
    [--steps N] [--write]
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from _report import machine, write_section  # noqa: E402

import tfp_flows as tff  # noqa: E402

SHAPE = [64, 14, 14, 8]
NUM_LAYERS = 8
# Each timing runs its function this many times and reports the mean of one call.
CALLS_PER_TIMING = 10
GLOW = dict(num_levels=2, num_steps=8)
GLOW_WIDTHS = (128, 8)
GLOW_EVENT, GLOW_BATCH = [28, 28, 1], 64


def _einsum(x, kernel):
    return tf.einsum("...i,ij->...j", x, kernel)


def _matmul(x, kernel):
    flat = tf.matmul(tf.reshape(x, [-1, kernel.shape[0]]), kernel)
    return tf.reshape(flat, tf.shape(x))


def _split_by_slicing(x, split):
    return x[..., :split], x[..., split:]


def _split_by_tf_split(x, split):
    return tf.split(x, [split, x.shape[-1] - split], axis=-1)


def _gradient_step(layer_fn, weights):
    """A `tf.function` returning the gradients of `sum(y^2) / 2` (y: `layer_fn(x)`) with
    respect to `x` and `weights`."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = layer_fn(x)
        return tape.gradient(loss, [x, *weights])

    return step


def form_steps():
    """`{name: tf.function}`: the two kernel forms and the two split forms, 8 layers each."""
    channels = SHAPE[-1]
    kernels = [tf.Variable(tff.nets.conv1x1.random_orthogonal(channels, seed).astype("float32"))
               for seed in range(NUM_LAYERS)]

    def kernel_layers(apply):
        def layers(x):
            for kernel in kernels:
                x = apply(x, kernel)
            return tf.reduce_sum(tf.square(x)) / 2
        return layers

    def split_layers(split_fn):
        def layers(x):
            for _ in range(NUM_LAYERS):
                first, second = split_fn(x, channels // 2)
                # Something on each half, as a coupling does, so neither gradient is trivial.
                x = tf.concat([second, 0.5 * first], axis=-1)
            return tf.reduce_sum(tf.square(x)) / 2
        return layers

    return {
        "1x1 kernel by tf.einsum": _gradient_step(kernel_layers(_einsum), kernels),
        "1x1 kernel by reshape + tf.matmul": _gradient_step(kernel_layers(_matmul), kernels),
        "channel split by slicing": _gradient_step(split_layers(_split_by_slicing), []),
        "channel split by tf.split": _gradient_step(split_layers(_split_by_tf_split), []),
    }


def _bijector_step(bijectors, layers):
    """Gradients of the negative log-likelihood term `sum(y^2) / 2 - log_det` through
    `bijectors` (applied in turn) with respect to the input and the layers' weights."""
    weights = [w for layer in layers for w in layer.trainable_weights]
    event_ndims = len(SHAPE) - 1

    def loss(x):
        log_det = 0.0
        for bijector in bijectors:
            log_det += bijector.forward_log_det_jacobian(x, event_ndims)
            x = bijector.forward(x)
        return tf.reduce_sum(tf.square(x)) / 2 - tf.reduce_sum(log_det)

    return _gradient_step(loss, weights)


def library_steps():
    """`{name: tf.function}`: the library's own bijectors, 8 of each."""
    keras.utils.set_random_seed(0)
    event = SHAPE[1:]
    kernels = [tff.nets.Conv1x1Kernel(event[-1], lu=True, seed=k) for k in range(NUM_LAYERS)]
    convs = [tff.bijectors.InvertibleConv1x1(kernel, event) for kernel in kernels]
    conditioners, couplings = [], []
    for k in range(NUM_LAYERS):
        size = tff.bijectors.AffineCoupling.conditioner_output_size(event, "half", k % 2)
        conditioners.append(keras.layers.Conv2D(size, 1, kernel_initializer="zeros"))
        couplings.append(tff.bijectors.AffineCoupling(conditioners[-1], event, mask="half",
                                                      parity=k % 2))
    splits = [tff.bijectors.SplitChannels(tfp.bijectors.Scale(0.5), event, event[-1] // 2)
              for _ in range(NUM_LAYERS)]
    return {
        "8 InvertibleConv1x1 (LU)": _bijector_step(convs, kernels),
        "8 AffineCoupling (half mask, 1x1 Conv2D conditioner)": _bijector_step(
            couplings, conditioners),
        "8 SplitChannels (around Scale)": _bijector_step(splits, []),
    }


def median_ms(steps, repeats):
    """`{name: median ms per call}`, timing the steps in turn within each repeat."""
    x = tf.constant(np.random.default_rng(0).normal(size=SHAPE).astype("float32"))
    for step in steps.values():
        step(x)  # warm-up: tracing and the layers' builds are excluded
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(CALLS_PER_TIMING):
                result = step(x)
            np.asarray(result[0])
            times[name].append((time.perf_counter() - start) / CALLS_PER_TIMING * 1e3)
    return {name: float(np.median(values)) for name, values in times.items()}


class _StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def glow_step_seconds(steps, hidden_channels):
    """Median seconds per Glow training step over `steps` steps after a warm-up."""
    keras.utils.set_random_seed(0)
    flow = tff.models.Glow(GLOW_EVENT, **GLOW, hidden_channels=hidden_channels)
    flow.compile(optimizer=keras.optimizers.Adam(1e-4))
    data = np.random.default_rng(0).uniform(
        size=[steps * GLOW_BATCH, *GLOW_EVENT]).astype("float32")
    # Warm-up: ActNorm's data-dependent initialisation and the tracing of the train step.
    flow.fit(data[:2 * GLOW_BATCH], batch_size=GLOW_BATCH, epochs=1, verbose=0)
    timer = _StepTimes()
    flow.fit(data, batch_size=GLOW_BATCH, epochs=1, verbose=0, shuffle=False,
             callbacks=[timer])
    return float(np.median(np.diff(timer.stamps)))


def child(repeats, steps):
    """In a child process: prints the JSON of all measurements with the imported library."""
    result = {"forms_ms": median_ms(form_steps(), repeats),
              "library_ms": median_ms(library_steps(), repeats)}
    if steps:
        result["glow_step_s"] = {f"hidden_channels={width}": glow_step_seconds(steps, width)
                                 for width in GLOW_WIDTHS}
    print(json.dumps(result), flush=True)


def _git(*args, cwd):
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                          cwd=cwd).stdout.strip()


def _run_child(package_root, args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, os.path.abspath(__file__), "--child",
               "--repeats", str(args.repeats), "--steps", str(args.steps)]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args):
    """`{label: [one result per round]}`, the commit `args.against` (if given) first."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(tff.__file__)))
    try:
        label = _git("rev-parse", "--short", "HEAD", cwd=package_root)
        if _git("status", "--porcelain", "tfp_flows", cwd=package_root):
            label += " + uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        label = "this code"
    codes = [(label, package_root)]
    with tempfile.TemporaryDirectory() as exported:
        if args.against:
            ref = _git("rev-parse", "--short", args.against, cwd=package_root)
            archive = subprocess.run(["git", "archive", "--format=tar", ref, "tfp_flows"],
                                     capture_output=True, check=True, cwd=package_root).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(exported, filter="data")
            codes.insert(0, (ref, exported))
        results = {name: [] for name, _ in codes}
        for round_ in range(args.rounds):
            # First and second in turn: a drift in the load within a round favours neither.
            for name, root in codes if round_ % 2 == 0 else codes[::-1]:
                results[name].append(_run_child(root, args))
                print(json.dumps({"round": round_, "code": name, **results[name][-1]}),
                      flush=True)
    return results


def _median(runs, key, name=None):
    values = [run[key][name] if name else run[key] for run in runs if key in run]
    return float(np.median(values)) if values else None


def _ratio(before, after):
    return f"x{before / after:.2f}" if before and after else "-"


def markdown(results, args):
    """The section's text from `measure`'s results."""
    labels = list(results)
    every_run = [run for runs in results.values() for run in runs]
    batch = "x".join(map(str, SHAPE))
    against = f" --against {args.against}" if args.against else ""
    lines = [
        "## Glow step overhead: 1x1 convolutions and channel splits", "",
        f"Measured by `python benchmarks/glow_overhead.py{against} --rounds {args.rounds} "
        f"--write`: each measurement in a fresh process, "
        + (f"commit {labels[0]} and {labels[1]} alternating, " if args.against else "")
        + f"{args.rounds} round(s); the numbers are medians over the rounds. Forward and "
        f"backward inside `tf.function` on a {batch} batch, each the median of "
        f"{args.repeats} timings of {CALLS_PER_TIMING} calls after a warm-up. The machine "
        "was shared with other jobs while measuring: timings are noisy, hence medians of "
        "repeats.", "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()), "",
        f"The forms side by side, {NUM_LAYERS} layers (median over all "
        f"{len(every_run)} processes):", "",
        "| form | ms per forward + backward |", "|---|---:|"]
    forms = {name: _median(every_run, "forms_ms", name) for name in every_run[0]["forms_ms"]}
    lines += [f"| {name} | {ms:.2f} |" for name, ms in forms.items()]
    einsum, matmul, sliced, split = forms.values()
    lines += ["", f"reshape + `tf.matmul` against `tf.einsum`: {_ratio(einsum, matmul)} as "
              f"fast; `tf.split` against slicing: {_ratio(sliced, split)} as fast.", ""]
    intro = f"The library's bijectors, {NUM_LAYERS} of each (ms per forward + backward)"
    if args.steps:
        intro += (" and a whole Glow training step (`Glow(" + str(GLOW_EVENT) + ", "
                  + ", ".join(f"{k}={v}" for k, v in GLOW.items()) + ", hidden_channels=...)`"
                  f", batch {GLOW_BATCH}, `fit` on uniform data in [0, 1); seconds per step, "
                  f"the median of {args.steps} steps after a warm-up; with "
                  f"`hidden_channels={min(GLOW_WIDTHS)}` the conditioners are so narrow that "
                  "the rest of the step dominates it)")
    lines += [intro + ":", "",
              "| | " + " | ".join(f"commit {label}" for label in labels)
              + (" | speed-up |" if len(labels) == 2 else " |"),
              "|---|" + "---:|" * (len(labels) + (len(labels) == 2))]
    rows = [(name, "library_ms", name, "{:.2f}") for name in every_run[0]["library_ms"]]
    if args.steps:
        rows += [(f"Glow training step, {name} (s)", "glow_step_s", name, "{:.3f}")
                 for name in every_run[0]["glow_step_s"]]
    for row, key, name, fmt in rows:
        values = [_median(results[label], key, name) for label in labels]
        cells = [fmt.format(value) for value in values]
        if len(values) == 2:
            cells.append(_ratio(*values))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if args.steps:
        lines.append("")
        for name in every_run[0]["glow_step_s"]:
            lines.append(f"The Glow step with {name} per round (s): " + "; ".join(
                f"commit {label}: " + ", ".join(f"{run['glow_step_s'][name]:.3f}"
                                                for run in results[label])
                for label in labels) + ".")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REF",
                        help="git commit whose library to measure beside the imported one")
    parser.add_argument("--rounds", type=int, default=3, help="processes per measured code")
    parser.add_argument("--repeats", type=int, default=9, help="timings per form or bijector")
    parser.add_argument("--steps", type=int, default=30,
                        help="timed Glow training steps (0: skip the Glow step)")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1 or args.steps < 0:
        parser.error("--rounds and --repeats must be >= 1, --steps >= 0")
    if args.child:
        return child(args.repeats, args.steps)
    text = markdown(measure(args), args)
    print(text)
    if args.write:
        write_section("glow-overhead", text)


if __name__ == "__main__":
    main()
