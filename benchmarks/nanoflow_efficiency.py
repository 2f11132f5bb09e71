"""NanoFlow's parameter efficiency on the offline 8x8 digits.

Trains, for the same number of steps on the same data, Glow with `K` steps (its own
conditioner in every step: the conv ResNet, `conditioner="resnet"`, the network NanoFlow's
trunk is built like), the same layout built by `NanoFlow(sharing="none")`, the
NanoFlow variants at the same `K` (naive: one trunk and one projection; decomposed: one
trunk, a projection per step; NanoFlow with each kind of flow indication embedding and the
original's concat + gate) and NanoFlow with `2K` and `4K` steps (the default concat
embedding, and the bias embedding). Every model has 2 levels,
hidden width 32 and uniform dequantization of the 17-level digits; each trains and is
measured in a fresh process. Reports parameters, test bits/dim of the discrete digits by
the ELBO (k = 1) and by the IWBO with k = 16 dequantization samples, training steps/s,
samples/s and the process's peak memory. With `--write` the table replaces its section of
`docs/benchmarks.md`.

Each model prints one line, its name and its results as JSON; `--reuse LOG` takes the
results of the models named in such a printout instead of training them again.

Usage: python benchmarks/nanoflow_efficiency.py [--epochs N] [--only TEXT] [--reuse LOG]
    [--write]
"""

import argparse
import json

import keras
from _ablation import in_fresh_process, reused_results, train_and_measure
from _report import machine, write_section

import tfp_flows as tff

EVENT_SHAPE = [8, 8, 1]
NUM_STEPS = 8
COMMON = {"num_levels": 2, "hidden_channels": 32, "num_bins": tff.datasets.DIGITS_NUM_BINS,
          "dequantization": "uniform"}
# name -> (builder, its arguments besides COMMON)
MODELS = {
    f"Glow, K = {NUM_STEPS}": ("Glow", {"num_steps": NUM_STEPS, "conditioner": "resnet"}),
    f"NanoFlow none (K conditioners), K = {NUM_STEPS}": (
        "NanoFlow", {"num_steps": NUM_STEPS, "sharing": "none"}),
    f"NanoFlow naive, K = {NUM_STEPS}": ("NanoFlow", {"num_steps": NUM_STEPS,
                                                      "sharing": "naive"}),
    f"NanoFlow decomposed, K = {NUM_STEPS}": ("NanoFlow", {"num_steps": NUM_STEPS,
                                                           "sharing": "decomposed"}),
    **{f"NanoFlow {kind} embedding, K = {NUM_STEPS}": (
        "NanoFlow", {"num_steps": NUM_STEPS, "embedding": kind})
       for kind in ("concat", "bias", "gate")},
    f"NanoFlow concat + gate embedding, K = {NUM_STEPS}": (
        "NanoFlow", {"num_steps": NUM_STEPS, "embedding": ["concat", "gate"]}),
    **{f"NanoFlow {kind} embedding, K = {steps}": (
        "NanoFlow", {"num_steps": steps, "embedding": kind})
       for kind in ("concat", "bias") for steps in (2 * NUM_STEPS, 4 * NUM_STEPS)},
}
EVAL_SAMPLES = 16


def measure(builder, changes, epochs, batch_size):
    keras.utils.set_random_seed(0)
    train, test = tff.datasets.load_digits(seed=0)
    train, test = train.astype("float32"), test.astype("float32")
    flow = getattr(tff.models, builder)(EVENT_SHAPE, **COMMON, **changes)
    return train_and_measure(flow, train, test, epochs, batch_size, EVAL_SAMPLES, seed=10)


def markdown(rows, args, info):
    glow = next((row for name, row in rows if name.startswith("Glow")), None)
    lines = [
        "## NanoFlow parameter efficiency on the digits", "",
        f"Measured by `python benchmarks/nanoflow_efficiency.py --epochs {args.epochs} "
        f"--write` on {info['cpu']} ({info.get('cores', '?')} cores), TensorFlow "
        f"{info.get('tensorflow', '?')}. Every model has 2 levels, conditioner width 32 "
        f"(Glow's the conv ResNet, `conditioner=\"resnet\"`, like NanoFlow's trunk) "
        f"and trains {args.epochs} epochs of the 1,437 training digits (batch "
        f"{args.batch_size}, Adam 1e-3 with cosine decay, gradient norm clipped at 1, XLA) "
        f"on uniformly dequantized levels. Test bits/dim are those of the discrete digits "
        f"(17 levels) on the 360 test digits, by the ELBO (k = 1) and by the IWBO with "
        f"k = {EVAL_SAMPLES} dequantization samples. Steps/s exclude the first epoch "
        f"(tracing). Each model runs in a fresh process; its peak memory is that process's "
        f"peak resident set (TensorFlow included).", "",
        "| model | parameters | share of Glow's | test bpd (ELBO) | test bpd (IWBO) "
        "| train steps/s | samples/s | peak memory | finite samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in rows:
        share = f"{row['params'] / glow['params']:.0%}" if glow else "-"
        lines.append(
            f"| {name} | {row['params']:,} | {share} | {row['elbo_bpd']:.3f} | "
            f"{row['iwbo_bpd']:.3f} | {row['steps_per_second']:.2f} | "
            f"{row['samples_per_second']:.0f} | {row['peak_memory_mib']:.0f} MiB | "
            f"{'yes' if row['samples_finite'] else 'no'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--only", help="run only the models whose name contains this")
    parser.add_argument("--reuse", help="a printout of this script with the same settings")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    done = reused_results(args.reuse, MODELS)
    if args.write and args.only:
        parser.error("--write records every model; run without --only")
    rows = []
    for name, (builder, changes) in MODELS.items():
        if args.only and args.only not in name:
            continue
        row = done.get(name) or in_fresh_process(measure, builder, changes, args.epochs,
                                                 args.batch_size)
        print(name, json.dumps(row), flush=True)
        rows.append((name, row))
    if args.write:
        write_section("nanoflow-efficiency", markdown(rows, args, machine()))


if __name__ == "__main__":
    main()
