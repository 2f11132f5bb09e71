"""tfp_flows against its PyTorch peers: Glow against normflows', MAF against zuko's.

The same models on the same data, the same steps, batch, optimizer and learning rate, each
library in its own fresh process:

- Glow: `L = 2` levels of `K = 8` steps, 128 hidden channels, batch 64, on the
  scikit-learn digits upsampled to 28x28x1. normflows' model is built as its own Glow
  example builds it (`GlowBlock(split_mode="channel", scale=True)`, `Squeeze`,
  `MultiscaleFlow`; a trainable `DiagGaussian` per latent, where the example's is
  class-conditional); ours is `tff.models.Glow([28, 28, 1], num_levels=2, num_steps=8,
  hidden_channels=128, num_bins=256, ...)`, built by `build_our_glow`, with the split
  priors on or off: whichever configuration's parameter count is closer to normflows'.
- MAF: 5 affine steps, MADE 256x256, batch 512, on the 64-d digits vectors: zuko's
  `MAF(features=64, transforms=5, hidden_features=(256, 256))` against
  `tff.models.MAF([64], num_layers=5, hidden_units=(256, 256))`.

The data are prepared here once per seed (NumPy and scikit-learn only) and saved to a
temporary `.npz` that both sides read: the training stream (every batch of every step,
already dequantized) and the test set (dequantized once, with a fixed seed).

- Glow's images: each 8x8 digit (levels 0..16) is scaled to 0..255 (`* 255 / 16`),
  resized to 28x28 by bilinear interpolation (half-pixel centres, edges clamped) and
  rounded: integers in `[0, 256)`. Uniform dequantization `x + u`, `u ~ U[0, 1)`; ours
  models `[0, 256)` (`num_bins=256`), normflows `[0, 1)` (the data divided by 256, as in
  its example); both report the bits/dim of the discrete images, counting the division
  by 256 alike (`nll / (D ln 2)` in `[0, 256)`, `nll / (D ln 2) + 8` in `[0, 1)`).
- MAF's vectors: the 64 levels `v` of a digit, dequantized and standardised per dimension,
  `(v + u - mean) / std` with the training set's `mean(v) + 1/2` and
  `sqrt(var(v) + 1/12)`; the test NLL is in nats of these vectors.

The split is scikit-learn's 1,797 digits permuted with seed 0: 1,437 train, 360 test (as
`tff.datasets.load_digits`). Each seed gets its own stream (order and dequantization) and
its own model initialisation; the two libraries run in turn first and second.

Measured per library and seed: parameters; training steps/s (the median of the per-step
times after `--warmup` steps, which excludes tracing and ActNorm's initialisation); the
time from building the model to the end of the first step; after the equal step budget,
the test NLL (MAF) or bits/dim (Glow); `log_prob` and sampling rates (examples/s, the best
of 3 timings of >= 1 s after a warm-up call, on a batch of the training batch's size);
whether samples are finite. For Glow also where the step goes, on both sides: the step of
the same flow with 8-channel conditioners (its floor: everything but the conditioners'
width), trained 60 steps on the same data, against the full step. (Timing the conditioners
alone, in one graph, undercounts them: independent of each other there, they run in
parallel on TensorFlow's inter-op threads.)

Ours runs with the current `sys.executable` (the library's default `compile`, plain graphs
on CPU); the peer's side is `benchmarks/_peers_torch.py`, run by `--peer-python` (eager
PyTorch, as its examples train). Each side runs `--threads` threads (default: the
machine's cores): `torch.set_num_threads`, TensorFlow's intra- and inter-op threads.
torch's OpenMP threads slow down far more than TensorFlow's when other jobs share the
cores, so on a shared machine compare with `--threads 1` too.

This script installs nothing, and torch is never a dependency of tfp_flows. Make the
peers' environment with

    python -m venv peers && peers/bin/pip install torch normflows zuko scikit-learn

On Linux, pip's default torch wheel is the large CUDA build; for the CPU-only one, first
run `peers/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu`.

With `--write` the table replaces the peers section of `docs/benchmarks.md`.

Usage: python benchmarks/peers.py --peer-python peers/bin/python [--steps N] [--seeds N]
    [--only glow|maf] [--warmup N] [--threads N] [--write]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "_peers_torch.py")

GLOW_SPEC = {"event_shape": [28, 28, 1], "num_levels": 2, "num_steps": 8,
             "hidden_channels": 128, "num_bins": 256}
MAF_SPEC = {"event_shape": [64], "num_layers": 5, "hidden_units": [256, 256]}
# model -> its peer library, sizes, batch, default steps and seeds, optimizer (both sides)
# and learning rate. Glow trains with Adamax, the optimizer of openai/glow's code and of
# normflows' Glow example (without the example's weight decay of 1e-5, which torch adds to
# the gradient and Keras subtracts from the weights); Adam at 1e-3 made single steps of
# both libraries' Glows jump by several bits/dim at this budget, so that 3 seeds' mean
# was decided by which runs spiked (docs/benchmarks.md). MAF trains with Adam, as zuko's
# examples do.
MODELS = {
    "glow": {"peer": "normflows", "spec": GLOW_SPEC, "batch": 64, "steps": 200, "seeds": 5,
             "lr": 1e-3, "optimizer": "adamax", "metric": "test bits/dim"},
    "maf": {"peer": "zuko", "spec": MAF_SPEC, "batch": 512, "steps": 600, "seeds": 3,
            "lr": 1e-3, "optimizer": "adam", "metric": "test NLL (nats)"},
}
# Ours is chosen among these (`build_our_glow`'s `split_prior`) by the closest count.
GLOW_CANDIDATES = [{"split_prior": False}, {"split_prior": False, "conditioner_actnorm": False},
                   {"split_prior": True}]
NAMES = {"glow": "Glow", "maf": "MAF"}
TARGET_SPEEDUP = 1.5
# Glow's floor: the same flow with conditioners this narrow (nearly free), trained this many
# steps by both sides, splits a step into what the flow around the conditioners costs and
# what 128-channel conditioners add.
FLOOR_CHANNELS = 8
FLOOR_STEPS = 60
PARAMS_TOLERANCE = 0.05
DIGITS_LEVELS = 17  # the scikit-learn digits count set pixels in 4x4 blocks: 0..16
NUM_TRAIN = 1437
TEST_NOISE_SEED = 10_000


# --- Ours -------------------------------------------------------------------------------

def build_our_glow(split_prior, **extra):
    """Our side of the Glow comparison: the one place that says how it is built.

    normflows' coupling network is 3x3 conv -> ReLU -> 1x1 conv -> ReLU -> zero 3x3 conv.
    Where `tff.models.Glow` offers the paper's conditioner of that shape
    (`conditioner="glow"`), it is used; otherwise the default conv ResNet with one block
    (an extra 128x128 3x3 convolution per step: several times normflows' parameters,
    which the table flags). `extra` are further `Glow` arguments (a candidate's), passed
    where this version of `Glow` takes them."""
    import inspect

    import tfp_flows as tff

    spec = GLOW_SPEC
    kwargs = {"num_levels": spec["num_levels"], "num_steps": spec["num_steps"],
              "hidden_channels": spec["hidden_channels"], "num_bins": spec["num_bins"],
              "split_prior": split_prior}
    parameters = inspect.signature(tff.models.Glow).parameters
    kwargs.update({key: value for key, value in extra.items() if key in parameters})
    if "conditioner" in parameters:
        kwargs["conditioner"] = "glow"
    else:
        kwargs["num_blocks"] = 1
    return tff.models.Glow(spec["event_shape"], **kwargs), kwargs


def build_our_maf():
    import tfp_flows as tff

    kwargs = {"num_layers": MAF_SPEC["num_layers"],
              "hidden_units": tuple(MAF_SPEC["hidden_units"])}
    return tff.models.MAF(MAF_SPEC["event_shape"], **kwargs), kwargs


def build_ours(model, config):
    return build_our_glow(**config) if model == "glow" else build_our_maf()


def our_count(model):
    """`[(config, parameters)]` of our candidates for `model`."""
    candidates = GLOW_CANDIDATES if model == "glow" else [{}]
    counts = []
    for config in candidates:
        flow, kwargs = build_ours(model, config)
        counts.append((config, flow.count_params(), kwargs))
    return counts


def _our_step_ends(flow, train, args):
    """`fit` on `train` (one epoch, in order): the end time of each step."""
    import keras

    class StepEnds(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.stamps = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    # torch's epsilon, so that the optimizers are the same.
    optimizer = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax}[args.optimizer]
    flow.compile(optimizer=optimizer(args.lr, epsilon=1e-8))
    timer = StepEnds()
    flow.fit(train, batch_size=args.batch, epochs=1, shuffle=False, verbose=0,
             callbacks=[timer])
    return timer.stamps


def median_step(stamps, warmup):
    """Median of the per-step times after `warmup` steps (NaN if none is left)."""
    step_seconds = np.diff(stamps)[max(warmup - 1, 0):]
    return float(np.median(step_seconds)) if len(step_seconds) else float("nan")


def our_measure(args):
    """Trains and measures our model in this (fresh) process."""
    import keras
    from _report import best_rate, machine

    data = np.load(args.data)
    train, test = data["train"], data["test"]
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    config = json.loads(args.config)
    flow, kwargs = build_ours(args.model, config)
    stamps = _our_step_ends(flow, train, args)
    log_probs = np.concatenate([np.asarray(flow.log_prob(test[i:i + args.batch]))
                                for i in range(0, len(test), args.batch)])
    batch = test[:args.batch]
    seeds = iter(range(1_000_000))
    samples = np.asarray(flow.sample(args.batch, seed=args.seed))
    result = {
        "params": int(flow.count_params()),
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "steps": len(stamps),
        "first_step_s": stamps[0] - start,
        "step_s": median_step(stamps, args.warmup),
        "test_nll": float(-np.mean(log_probs)),
        "test_log_prob_finite": bool(np.all(np.isfinite(log_probs))),
        "log_prob_per_s": best_rate(lambda: flow.log_prob(batch), len(batch), 3, 1.0),
        "samples_per_s": best_rate(lambda: flow.sample(args.batch, seed=next(seeds)),
                                   args.batch, 3, 1.0),
        "samples_finite": bool(np.all(np.isfinite(samples))),
        "versions": machine(),
    }
    if args.model == "glow" and args.floor_steps:
        floor, _ = build_our_glow(**config, hidden_channels=args.floor_channels)
        floor_stamps = _our_step_ends(floor, train[:args.floor_steps * args.batch], args)
        result["floor_step_s"] = median_step(floor_stamps, args.warmup)
    return result


# --- The data ---------------------------------------------------------------------------

def _bilinear_matrix(size_in, size_out):
    """`[size_out, size_in]` weights of bilinear interpolation, half-pixel centres."""
    centres = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    fraction = centres - low
    matrix = np.zeros([size_out, size_in])
    np.add.at(matrix, (np.arange(size_out), low), 1 - fraction)
    np.add.at(matrix, (np.arange(size_out), high), fraction)
    return matrix


def digits_levels():
    """scikit-learn's digits as levels 0..16, `(train, test)` of shapes `[N, 8, 8]`."""
    from sklearn.datasets import load_digits

    images = np.rint(load_digits().images).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:NUM_TRAIN]], images[order[NUM_TRAIN:]]


def upsampled_digits(size=28):
    """The digits as `[N, size, size, 1]` uint8 images: levels scaled to 0..255, bilinear
    resize, rounded (so integers in `[0, 256)`), `(train, test)`."""
    out = []
    for images in digits_levels():
        levels = images * (255.0 / (DIGITS_LEVELS - 1))
        rows, cols = _bilinear_matrix(images.shape[1], size), _bilinear_matrix(
            images.shape[2], size)
        resized = np.einsum("ih,nhw,jw->nij", rows, levels, cols)
        out.append(np.clip(np.rint(resized), 0, 255).astype(np.uint8)[..., None])
    return tuple(out)


def _stream_indices(num_examples, count, rng):
    """`count` example indices: successive random permutations (epochs) of the examples."""
    epochs = -(-count // num_examples)
    return np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])[:count]


def prepare(model, steps, batch, seed, directory):
    """Writes the `.npz` both sides read for `model` and `seed`; returns its path."""
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng(TEST_NOISE_SEED)
    if model == "glow":
        train_levels, test_levels = upsampled_digits(GLOW_SPEC["event_shape"][0])

        top = np.nextafter(np.float32(GLOW_SPEC["num_bins"]), np.float32(0))

        def dequantize(levels, generator):
            # In float32, 255 + u rounds to 256 for u within 2^-17 of 1: outside [0, 256).
            noisy = levels.astype(np.float32) + generator.random(levels.shape, np.float32)
            return np.minimum(noisy, top)
    else:
        train_levels, test_levels = (levels.reshape(len(levels), -1)
                                     for levels in digits_levels())
        mean = train_levels.mean(0) + 0.5
        std = np.sqrt(train_levels.var(0) + 1.0 / 12.0)

        def dequantize(levels, generator):
            noisy = levels + generator.random(levels.shape)
            return ((noisy - mean) / std).astype(np.float32)
    train = dequantize(train_levels[_stream_indices(len(train_levels), steps * batch, rng)],
                       rng)
    path = os.path.join(directory, f"{model}_seed{seed}.npz")
    np.savez(path, train=train, test=dequantize(test_levels, test_rng))
    return path


# --- Running both sides -----------------------------------------------------------------

def _json_line(command):
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _ours(*extra):
    return _json_line([sys.executable, os.path.abspath(__file__), *extra])


def _peer(peer_python, model, *extra):
    return _json_line([peer_python, PEER_SCRIPT, "--model", model,
                       "--spec", json.dumps(MODELS[model]["spec"]), *extra])


def choose_config(model, peer_python):
    """Our configuration whose parameter count is closest to the peer's, and all counts."""
    peer = _peer(peer_python, model, "--count")
    ours = _ours("--child-count", "--model", model)
    config, count, _ = min(ours, key=lambda row: abs(row[1] - peer["params"]))
    for candidate, params, kwargs in ours:
        print(f"{model}: ours {kwargs}: {params:,} parameters; "
              f"{MODELS[model]['peer']}: {peer['params']:,}"
              + ("  <- chosen" if candidate == config else ""), flush=True)
    return config, peer["params"], ours


def measure(args):
    """`{model: {"ours": [per seed], "peer": [per seed], "counts": ...}}`."""
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for index, model in enumerate(args.models):
            info = MODELS[model]
            steps = args.steps or info["steps"]
            seeds = args.seeds or info["seeds"]
            config, peer_count, counts = choose_config(model, args.peer_python)
            runs = {"ours": [], "peer": [], "config": config, "peer_count": peer_count,
                    "counts": counts, "steps": steps, "seeds": seeds}
            for seed in range(seeds):
                path = prepare(model, steps, info["batch"], seed, directory)
                common = ["--seed", str(seed), "--batch", str(info["batch"]),
                          "--lr", str(info["lr"]), "--optimizer", info["optimizer"],
                          "--warmup", str(args.warmup),
                          "--floor-steps", str(FLOOR_STEPS if model == "glow" else 0),
                          "--floor-channels", str(FLOOR_CHANNELS),
                          "--threads", str(args.threads), "--data", path]
                # First and second in turn: a drift in the load favours neither side.
                order = ["ours", "peer"] if (seed + index) % 2 == 0 else ["peer", "ours"]
                for side in order:
                    if side == "ours":
                        result = _ours("--child", "--model", model, "--config",
                                       json.dumps(config), *common)
                    else:
                        result = _peer(args.peer_python, model, *common)
                    runs[side].append(result)
                    print(json.dumps({"model": model, "seed": seed, "side": side, **result}),
                          flush=True)
                os.remove(path)
            results[model] = runs
    return results


# --- The report -------------------------------------------------------------------------

def _floor_line(runs):
    """Glow's step split into its floor (`FLOOR_CHANNELS`-channel conditioners) and what
    the full width adds, for both sides: the step's ratio lies between the two parts'."""
    ours, peer = (_median(runs[side], "step_s") for side in ("ours", "peer"))
    ours_floor, peer_floor = (_median(runs[side], "floor_step_s") for side in ("ours", "peer"))
    if not np.isfinite(ours_floor) or not np.isfinite(peer_floor):
        return "Glow's floor was not measured."
    return (f"Where Glow's step goes: the same flow with {FLOOR_CHANNELS}-channel conditioners "
            f"({FLOOR_STEPS} steps; the ActNorms, 1x1 convolutions, couplings, squeezes, "
            f"log-dets, optimizer and loop, with nearly free conditioners) steps in "
            f"{ours_floor * 1e3:.1f} ms (ours) and {peer_floor * 1e3:.1f} ms (normflows): "
            f"x{peer_floor / ours_floor:.2f}; what the {GLOW_SPEC['hidden_channels']}-channel "
            f"conditioners add is "
            f"{(ours - ours_floor) * 1e3:.0f} ms and {(peer - peer_floor) * 1e3:.0f} ms: "
            f"x{(peer - peer_floor) / (ours - ours_floor):.2f}. The step's ratio lies between "
            f"the two; x{TARGET_SPEEDUP} needs both.")


def _median(runs, key):
    values = [run[key] for run in runs if run.get(key) is not None]
    return float(np.median(values)) if values else float("nan")


def _mean(runs, key):
    return float(np.mean([run[key] for run in runs]))


def _bits_per_dim(model, nll):
    return nll / (np.prod(MODELS[model]["spec"]["event_shape"]) * np.log(2))


def _metric(model, runs):
    """Per-seed test metrics: bits/dim for Glow, nats for MAF."""
    values = [run["test_nll"] for run in runs]
    return [_bits_per_dim(model, v) for v in values] if model == "glow" else values


def _possessive(name):
    return "'" if name.endswith("s") else "'s"


def verdicts(model, runs):
    """`{name: (met, text)}`: the targets of the comparison, from its numbers."""
    ours, peer = runs["ours"], runs["peer"]
    name = MODELS[model]["peer"]
    speedup = (1 / _median(ours, "step_s")) / (1 / _median(peer, "step_s"))
    ours_metric, peer_metric = np.mean(_metric(model, ours)), np.mean(_metric(model, peer))
    params, peer_params = ours[0]["params"], peer[0]["params"]
    difference = params / peer_params - 1
    finite = all(run["samples_finite"] for run in ours + peer)
    metric = "bits/dim" if model == "glow" else "NLL (nats)"
    return {
        "speed": (speedup >= TARGET_SPEEDUP,
                  f"trains at x{speedup:.2f} {name}{_possessive(name)} steps/s "
                  f"(target >= x{TARGET_SPEEDUP})"),
        "metric": (ours_metric <= peer_metric,
                   f"test {metric} {ours_metric:.3f} against {peer_metric:.3f} after "
                   f"{runs['steps']} equal steps (target: no worse)"),
        "params": (abs(difference) <= PARAMS_TOLERANCE,
                   f"parameters {params:,} against {peer_params:,} ({difference:+.1%}; "
                   f"target within {PARAMS_TOLERANCE:.0%})"),
        "finite": (finite, "all samples finite" if finite else "NON-FINITE samples"),
    }


def _verdict_line(model, runs):
    parts = [f"{text}: {'met' if met else 'NOT MET'}" for met, text in
             verdicts(model, runs).values()]
    line = f"{NAMES[model]}: tfp_flows " + "; ".join(parts) + "."
    if not verdicts(model, runs)["params"][0]:
        line += (" The parameter counts differ by more than the tolerance: the speed "
                 "and test numbers do not compare like with like.")
    return line


def markdown(results, args, load):
    first = next(iter(results.values()))
    ours_versions, peer_versions = first["ours"][0]["versions"], first["peer"][0]["versions"]
    options = "".join(f" --{k} {v}" for k, v in (
        ("steps", args.steps), ("seeds", args.seeds), ("only", args.only),
        ("threads", args.threads if args.threads != os.cpu_count() else None)) if v)
    lines = [
        "## Peers: normflows (Glow) and zuko (MAF)", "",
        f"Measured by `python benchmarks/peers.py --peer-python peers/bin/python{options} "
        "--write`: each library in a fresh process per seed, the two in turn first and "
        "second, on the same data (prepared once per seed and read by both: the same "
        "batches, dequantization and test set), the same steps, batch, optimizer and "
        "learning rate (Glow: Adamax, as openai/glow and normflows' Glow example train; "
        "MAF: Adam; both 1e-3, torch's epsilon 1e-8). Glow on the scikit-learn digits "
        "upsampled to 28x28x1 (levels scaled to 0..255, bilinear resize, rounded; "
        "uniform dequantization; bits/dim of the discrete images on the 360 test "
        "digits); MAF on the 64-d digits vectors (dequantized, standardised per "
        "dimension; test NLL in nats of those vectors). Train steps/s: the median "
        "per-step time after "
        f"{args.warmup} warm-up steps; first step: from building the model to the end "
        "of the first training step (tracing and ActNorm's initialisation included); "
        "`log_prob` and sampling: examples/s on one batch of the training batch's size, "
        "best of 3 timings of >= 1 s. Numbers are medians (rates) or means (test "
        f"metrics) over the seeds. Each side runs {args.threads} thread(s) "
        "(`torch.set_num_threads`; TensorFlow's intra- and inter-op threads).", "",
        "The peers' environment (this script installs nothing; torch is never a "
        "dependency of tfp_flows): `python -m venv peers && peers/bin/pip install torch "
        "normflows zuko scikit-learn` (on Linux, for the CPU-only torch wheel rather than "
        "the large CUDA build, first `peers/bin/pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu`).", "",
        "Ours: " + ", ".join(f"{k} {v}" for k, v in ours_versions.items()) + ". Peers: "
        + ", ".join(f"{k} {v}" for k, v in peer_versions.items()) + ".",
        f"Load average (1 min) {load[0]:.1f} at the start and {load[1]:.1f} at the end "
        f"on {os.cpu_count()} cores: above the cores, other jobs shared the machine and "
        "the timings are noisy. torch's OpenMP threads lose far more than TensorFlow's "
        "when other jobs share the cores: there, compare with `--threads 1` as well; only "
        "a run on an otherwise idle machine measures the defaults.", "",
    ]
    short = [NAMES[m] for m, runs in results.items() if runs["steps"] < MODELS[m]["steps"]]
    if short:
        lines += [f"A short check run ({' and '.join(short)} below the default steps): the test "
                  "metrics are those of barely trained models, not a comparison of what "
                  "each library reaches.", ""]
    lines += [
        "| model | library | parameters | train steps/s | vs peer | first step (s) "
        "| log_prob examples/s | samples/s | test metric | finite samples |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for model, runs in results.items():
        info = MODELS[model]
        peer_rate = 1 / _median(runs["peer"], "step_s")
        title = {"glow": "Glow L=2, K=8, 128 ch, 28x28x1", "maf": "MAF 5 x MADE 256x256"}[model]
        title += f", batch {info['batch']}, {runs['steps']} steps, {runs['seeds']} seed(s)"
        for side, library in (("ours", "tfp_flows"), ("peer", info["peer"])):
            side_runs = runs[side]
            rate = 1 / _median(side_runs, "step_s")
            metric = np.mean(_metric(model, side_runs))
            finite = all(r["samples_finite"] for r in side_runs)
            lines.append(
                f"| {title} | {library} | {side_runs[0]['params']:,} | {rate:.2f} | "
                f"x{rate / peer_rate:.2f} | {_median(side_runs, 'first_step_s'):.1f} | "
                f"{_median(side_runs, 'log_prob_per_s'):,.0f} | "
                f"{_median(side_runs, 'samples_per_s'):,.0f} | "
                f"{metric:.3f} ({info['metric']}) | {'yes' if finite else 'NO'} |")
    lines.append("")
    for model, runs in results.items():
        builder = NAMES[model] + "(" + ", ".join(
            [str(MODELS[model]["spec"]["event_shape"])]
            + [f"{k}={v!r}" for k, v in runs["ours"][0]["kwargs"].items()]) + ")"
        lines.append(f"Ours: `tff.models.{builder}`.")
        lines.append(_verdict_line(model, runs))
        per_seed = "; ".join(
            f"{library}: " + ", ".join(f"{v:.3f}" for v in _metric(model, runs[side]))
            for side, library in (("ours", "tfp_flows"), ("peer", MODELS[model]["peer"])))
        lines.append(f"Per seed, {MODELS[model]['metric']}: {per_seed}.")
        if model == "glow":
            counts = "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) + f": {n:,}"
                               for c, n, _ in runs["counts"])
            lines.append(f"Our Glow's candidates ({counts}) against normflows' "
                         f"{runs['peer_count']:,}: the closest is measured.")
            lines.append(_floor_line(runs))
        lines.append("")
    return "\n".join(lines).rstrip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="a Python with torch, normflows and zuko")
    parser.add_argument("--steps", type=int,
                        help="training steps of every model (default: Glow 200, MAF 600)")
    parser.add_argument("--seeds", type=int,
                        help="seeds of every model (default: Glow 5, MAF 3)")
    parser.add_argument("--only", choices=sorted(MODELS), help="run one model only")
    parser.add_argument("--warmup", type=int, default=10,
                        help="first training steps left out of the median step time")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of each side (torch.set_num_threads, TensorFlow's "
                             "intra- and inter-op threads; default: the machine's cores)")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    # This script run as the measuring process of our side:
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-count", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", choices=["adam", "adamax"], default="adam",
                        help=argparse.SUPPRESS)
    parser.add_argument("--floor-steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--floor-channels", type=int, default=FLOOR_CHANNELS,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.child_count:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        result = our_count(args.model) if args.child_count else our_measure(args)
        print(json.dumps(result), flush=True)
        return
    if not args.peer_python:
        parser.error("--peer-python is required: a Python with torch, normflows and zuko")
    if (args.steps is not None and args.steps <= args.warmup) or (
            args.seeds is not None and args.seeds < 1) or min(args.warmup, args.threads) < 1:
        parser.error("--steps must exceed --warmup; --seeds, --warmup and --threads must be "
                     ">= 1")
    args.models = [args.only] if args.only else list(MODELS)
    load_start = os.getloadavg()[0]
    results = measure(args)
    text = markdown(results, args, (load_start, os.getloadavg()[0]))
    print(text)
    if args.write:
        from _report import write_section

        write_section("peers", text)


if __name__ == "__main__":
    main()
