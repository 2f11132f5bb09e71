"""Speed benchmark of tfp_flows: train steps/s, log_prob and sampling rates, peak memory.

Modes: `eager` (no graph), `function` (`tf.function`), `xla` (`tf.function(jit_compile=True)`;
for training, `compile(jit_compile=True)`). Each (case, mode) runs in its own process, so
its peak resident memory is that of measuring this mode alone. Results are printed and
written to `docs/benchmarks.md` (with `--write`).

Each case has its own section of the page, so `--write --only CASE` updates that case alone
(not the introduction, whose summary of XLA counts every case).

Usage: python benchmarks/run.py [--write] [--repeats N] [--only vector|image|glow|maf|iaf]
"""

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _report import best_rate, machine, write_section  # noqa: E402

import tfp_flows as tff  # noqa: E402

MODES = ("eager", "function", "xla")


def _normal(rng, shape):
    return rng.normal(size=shape).astype("float32")


def _dequantized_levels(rng, shape):
    """8-bit levels 0..255 plus uniform noise: dequantized data in [0, 256)."""
    return (rng.integers(0, 256, size=shape) + rng.uniform(size=shape)).astype("float32")


# Per case: `train_steps` is (eager, graph) train steps per timed `fit` call; each rate is
# the best of `repeats` timings of at least `min_seconds` (and at least one call) each.
DEFAULTS = dict(unit="rows", data=_normal, train_steps=(5, 20), min_seconds=1.0, repeats=3)
# `--smoke`: every case shrunk to a tiny model, to check that the script runs end to end.
SMOKE = dict(train_steps=(1, 1), min_seconds=0.1, repeats=1)

CASES = {
    "vector": dict(
        title="RealNVP, event 64, 8 couplings, MLP 256x256, batch 512",
        build=lambda: tff.models.RealNVP([64], num_layers=8, hidden_units=[256, 256]),
        batch=512,
        smoke=dict(build=lambda: tff.models.RealNVP([4], num_layers=2, hidden_units=[8]),
                   batch=8)),
    "image": dict(
        title="RealNVP, event 28x28x1, 4 checkerboard couplings, ConvResNet 64ch x 2 blocks, "
              "batch 64",
        build=lambda: tff.models.RealNVP([28, 28, 1], num_layers=4, hidden_channels=64,
                                         num_blocks=2),
        batch=64, unit="images", train_steps=(2, 5),
        smoke=dict(build=lambda: tff.models.RealNVP([8, 8, 1], num_layers=2,
                                                    hidden_channels=4, num_blocks=1),
                   batch=4)),
    "glow": dict(
        title="Glow, event 28x28x1 (MNIST size), L=2, K=8, 128 hidden channels, batch 64",
        build=lambda: tff.models.Glow([28, 28, 1], num_levels=2, num_steps=8,
                                      hidden_channels=128, num_bins=256),
        batch=64, unit="images", data=_dequantized_levels, train_steps=(1, 1),
        min_seconds=5.0, repeats=2,
        smoke=dict(build=lambda: tff.models.Glow([8, 8, 1], num_levels=2, num_steps=1,
                                                 hidden_channels=4, num_bins=256),
                   batch=4)),
    # Sampling a MAF and the density of an IAF take D = 64 sequential MADE passes per step.
    "maf": dict(
        title="MAF, event 64, 5 affine steps, MADE 256x256, batch 512",
        build=lambda: tff.models.MAF([64], num_layers=5, hidden_units=[256, 256]),
        batch=512, train_steps=(2, 10),
        smoke=dict(build=lambda: tff.models.MAF([4], num_layers=2, hidden_units=[8]),
                   batch=8)),
    "iaf": dict(
        title="IAF, event 64, 5 affine steps, MADE 256x256, batch 512",
        build=lambda: tff.models.IAF([64], num_layers=5, hidden_units=[256, 256]),
        batch=512, train_steps=(1, 1), min_seconds=3.0, repeats=2,
        smoke=dict(build=lambda: tff.models.IAF([4], num_layers=2, hidden_units=[8]),
                   batch=8)),
}


def settings(name, smoke=False, repeats=None):
    """The case `name` with defaults filled in, shrunk by `smoke`, `repeats` overridden."""
    case = {**DEFAULTS, **CASES[name]}
    shrink = case.pop("smoke")
    if smoke:
        case.update(SMOKE, **shrink, title=case["title"] + " [smoke: tiny model]")
    if repeats:
        case["repeats"] = repeats
    return case


def _wrap(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"))


def bench_mode(case, mode):
    """Rates of one flow in one mode: training by `fit`, `log_prob`, sampling."""
    keras.utils.set_random_seed(0)
    flow = case["build"]()
    rng = np.random.default_rng(0)
    batch = case["batch"]
    x = case["data"](rng, [batch, *flow.event_shape])
    z = _normal(rng, x.shape)
    flow.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=(mode == "eager"),
                 jit_compile=(mode == "xla"))
    steps = case["train_steps"][mode != "eager"]
    data = np.concatenate([x] * steps)

    def train():
        return flow.fit(data, batch_size=batch, epochs=1, verbose=0,
                        shuffle=False).history["loss"][-1]

    log_prob = _wrap(flow.distribution.log_prob, mode)
    sample = _wrap(flow.bijector.forward, mode)
    timing = dict(repeats=case["repeats"], min_seconds=case["min_seconds"])
    # Fresh tensors each call: TFP's bijector cache would otherwise return the previous
    # eager result without computing anything.
    return dict(
        mode=mode,
        train_steps_per_s=best_rate(train, steps, **timing),
        log_prob_rows_per_s=best_rate(lambda: log_prob(tf.constant(x)), batch, **timing),
        samples_per_s=best_rate(lambda: sample(tf.constant(z)), batch, **timing),
    )


def peak_rss_mib():
    """This process's peak resident memory in MiB.

    `VmHWM` rather than `ru_maxrss`: after `exec`, Linux's `ru_maxrss` also counts the
    parent's resident memory at the time of the fork.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(name, mode, smoke, repeats):
    """In a child process: prints the JSON row of one (case, mode), or the import baseline."""
    row = {} if name == "baseline" else bench_mode(settings(name, smoke, repeats), mode)
    print(json.dumps({**row, "peak_rss_mib": peak_rss_mib()}), flush=True)


def run_child(name, mode, smoke, repeats):
    command = [sys.executable, os.path.abspath(__file__), "--child", name, mode]
    command += ["--smoke"] * smoke + ["--repeats", str(repeats)] * bool(repeats)
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _number(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


_RATES = (("train_steps_per_s", "train"), ("log_prob_rows_per_s", "log_prob"),
          ("samples_per_s", "sampling"))
# Ratios within this margin of 1 are reported as level: run-to-run noise on a shared CPU.
_LEVEL_MARGIN = 0.05


def _ratios(rows, faster, slower):
    """`{rate label: rate in mode `faster` / rate in mode `slower`}` for one case."""
    by_mode = {row["mode"]: row for row in rows}
    if faster not in by_mode or slower not in by_mode:
        return {}
    return {label: by_mode[faster][key] / by_mode[slower][key]
            for key, label in _RATES if by_mode[slower][key] > 0}


def _verdict(ratio):
    if ratio > 1 + _LEVEL_MARGIN:
        return "faster"
    if ratio < 1 - _LEVEL_MARGIN:
        return "slower"
    return "level"


def _comparison_text(rows):
    """One sentence per case comparing XLA and eager with the plain graph, from `rows`."""
    xla = _ratios(rows, "xla", "function")
    eager = _ratios(rows, "eager", "function")
    parts = [f"{label} x{ratio:.2f} ({_verdict(ratio)})" for label, ratio in xla.items()]
    text = "XLA against the plain graph: " + ", ".join(parts) + "." if parts else ""
    if "train" in eager:
        text += f" Eager trains at x{eager['train']:.2f} the plain graph's rate."
    return text.strip()


def _defaults_text(sections):
    """What the measured cases say about XLA on this machine, counted from the numbers."""
    ratios = [_ratios(rows, "xla", "function") for _, _, rows in sections]
    counts = []
    for _, label in _RATES:
        verdicts = [_verdict(case[label]) for case in ratios if label in case]
        if verdicts:
            counts.append((label, len(verdicts), {
                word: verdicts.count(word) for word in ("faster", "level", "slower")}))
    if not counts:
        return "No case was measured in this run."
    text = (f"XLA against a plain graph over the {len(sections)} case(s) of this run "
            f"(level: within {_LEVEL_MARGIN:.0%}): " + "; ".join(
                f"{label} faster in {c['faster']}, level in {c['level']}, slower in "
                f"{c['slower']} of {n}" for label, n, c in counts) + ".")
    mostly_faster = [label for label, n, c in counts if c["faster"] > n / 2]
    if mostly_faster:
        text += f" XLA is faster in most cases for: {', '.join(mostly_faster)}."
    others = [label for label, n, c in counts if label not in mostly_faster]
    if others:
        text += f" It is not faster in most cases for: {', '.join(others)}."
    return (text + " The library's defaults on CPU: `Flow.compile` keeps Keras' "
            "`jit_compile=\"auto\"` (plain graphs on CPU, XLA with an accelerator); "
            "inference methods run as plain graphs except those a family lists in "
            "`_xla_on_cpu`. Eager mode is for debugging only.")


def markdown(sections, info, baseline_mib):
    """`{section name: markdown}`: the introduction, then one section per case."""
    lines = ["## Speed and memory", "",
             "Measured by `python benchmarks/run.py --write` (best of several timed runs, "
             "after a warm-up that excludes tracing and compilation).", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             _defaults_text(sections), "",
             "Peak memory is the peak resident memory (RSS high-water mark, `VmHWM`) of a "
             "separate process that measured that mode alone: it includes the TensorFlow "
             "runtime, the model and optimizer state, the traced or compiled graphs and the "
             "activations of training, `log_prob` and sampling. A process that imports "
             "TensorFlow, TensorFlow Probability, Keras and tfp_flows and builds nothing "
             f"peaks at {baseline_mib:,.0f} MiB.", ""]
    texts = {"speed": "\n".join(lines)}
    for name, case, rows in sections:
        eager_steps, graph_steps = case["train_steps"]
        lines = [f"### {case['title']}", "",
                 f"Timing: best of {case['repeats']} run(s) of at least "
                 f"{case['min_seconds']:g} s; {eager_steps} (eager) or {graph_steps} "
                 "(function, xla) train steps per timed `fit` call.", "",
                 f"| mode | train steps/s | log_prob {case['unit']}/s | samples/s "
                 "| peak memory (MiB) |",
                 "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['mode']} | {_number(r['train_steps_per_s'])} | "
                  f"{_number(r['log_prob_rows_per_s'])} | {_number(r['samples_per_s'])} | "
                  f"{r['peak_rss_mib']:,.0f} |" for r in rows]
        lines += ["", _comparison_text(rows)]
        texts[f"speed-{name}"] = "\n".join(lines)
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--repeats", type=int, help="timed runs per rate (default: per case)")
    parser.add_argument("--only", choices=sorted(CASES))
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.child:
        return child(*args.child, args.smoke, args.repeats)
    if args.write and args.smoke:
        parser.error("--smoke results are not benchmarks; run without --write")
    baseline_mib = run_child("baseline", "none", args.smoke, args.repeats)["peak_rss_mib"]
    sections = []
    for name in CASES:
        if args.only not in (None, name):
            continue
        case = settings(name, args.smoke, args.repeats)
        rows = []
        for mode in MODES:
            rows.append(run_child(name, mode, args.smoke, args.repeats))
            print(json.dumps({"case": case["title"], **rows[-1]}), flush=True)
        sections.append((name, case, rows))
    texts = markdown(sections, machine(), baseline_mib)
    print("\n\n".join(texts.values()))
    if args.write:
        for section, text in texts.items():
            # The introduction counts every case: only a run of all of them rewrites it.
            if section != "speed" or args.only is None:
                write_section(section, text)


if __name__ == "__main__":
    main()
