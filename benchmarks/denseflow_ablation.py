"""DenseFlow ablation on the offline 8x8 digits at matched parameter counts.

Trains, for the same number of steps on the same data, DenseFlow with cross-unit coupling
(`DenseFlow`'s defaults), the same flow with unconditional standard Normal augmentation,
the plain flow without augmentation (`growth_rate=0`) and DenseFlow without the attention
branch. The variants get wider coupling networks until their parameter count is within 5%
of the full model's. Each model trains and is measured in a fresh process. Reports test
bits/dim of the discrete digits by the ELBO and by the IWBO with k = 10 and 100 samples
(over the dequantization and augmentation noise together), training steps/s, samples/s,
parameters and the process's peak memory. With `--write` the table replaces its section
of `docs/benchmarks.md`. Each model prints one line, its name and its results as JSON;
`--reuse LOG` takes the results of the models named in such a printout instead of
training them again.

Usage: python benchmarks/denseflow_ablation.py [--epochs N] [--only TEXT] [--reuse LOG]
    [--write]
"""

import argparse
import inspect
import json
import sys

import keras
from _ablation import in_fresh_process, matched, reused_results, train_and_measure
from _report import machine, write_section

import tfp_flows as tff

NUM_BINS = tff.datasets.DIGITS_NUM_BINS
EVENT_SHAPE = [8, 8, 1]
TOLERANCE = 0.05
VARIANTS = {
    "DenseFlow (cross-unit coupling)": {},
    "unconditional augmentation": {"augmentation": "unconditional"},
    "no augmentation (growth rate 0)": {"growth_rate": 0},
    "cross-unit coupling, no attention": {"attention": False},
}
EVAL_SAMPLES = (10, 100)


def denseflow(filters, **changes):
    return tff.models.DenseFlow(EVENT_SHAPE, num_bins=NUM_BINS, filters=filters, **changes)


def measure(filters, changes, epochs, batch_size):
    keras.utils.set_random_seed(0)
    train, test = tff.datasets.load_digits(seed=0)
    train, test = train.astype("float32"), test.astype("float32")
    return train_and_measure(denseflow(filters, **changes), train, test, epochs, batch_size,
                             list(EVAL_SAMPLES), seed=10)


def markdown(rows, args, info):
    lines = [
        "## DenseFlow ablation on the digits", "",
        f"Measured by `python benchmarks/denseflow_ablation.py --epochs {args.epochs} "
        f"--write` on {info['cpu']} "
        f"({info.get('cores', '?')} cores), TensorFlow {info.get('tensorflow', '?')}. "
        f"Each model trains {args.epochs} epochs of the 1,437 training digits "
        f"(batch {args.batch_size}, Adam 1e-3 with cosine decay, gradient norm clipped at "
        f"1, XLA); the full model has `DenseFlow`'s defaults and the others wider coupling "
        f"networks, to within 5% of its parameters. Test bits/dim are those of the discrete "
        f"digits (17 levels) on the 360 test digits, by the ELBO (k = 1) and by the IWBO "
        f"with k importance samples over all the noise. Steps/s exclude the first epoch "
        f"(tracing). Each model runs in a fresh process; its peak memory is that process's "
        f"peak resident set (TensorFlow included).", "",
        "| model | width | parameters | test bpd k = 1 (ELBO) | IWBO k = 10 | IWBO k = 100 "
        "| train steps/s | samples/s | peak memory | finite samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in rows:
        iwbo = {int(k): bpd for k, bpd in row["iwbo_bpd"].items()}  # JSON keys are text
        lines.append(
            f"| {name} | {row['width']} | {row['params']:,} | {row['elbo_bpd']:.3f} | "
            f"{iwbo[10]:.3f} | {iwbo[100]:.3f} | {row['steps_per_second']:.2f} | "
            f"{row['samples_per_second']:.0f} | {row['peak_memory_mib']:.0f} MiB | "
            f"{'yes' if row['samples_finite'] else 'no'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--only", help="run only the variants whose name contains this")
    parser.add_argument("--reuse", help="a printout of this script with the same settings")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    done = reused_results(args.reuse, VARIANTS)
    if args.write and args.only:
        parser.error("--write records every variant; run without --only")
    width = inspect.signature(tff.models.DenseFlow).parameters["filters"].default
    target = denseflow(width).count_params()
    rows = []
    for name, changes in VARIANTS.items():
        if args.only and args.only not in name:
            continue
        if name in done:
            rows.append((name, done[name]))
            print(name, json.dumps(done[name]), flush=True)
            continue
        keras.utils.set_random_seed(0)
        chosen = width
        if changes:
            chosen, count = matched(lambda w, c=changes: denseflow(w, **c), target, 2, start=2)
            if abs(count - target) > TOLERANCE * target:
                sys.exit(f"{name}: no width within 5% of {target} parameters (best {count})")
        row = in_fresh_process(measure, chosen, changes, args.epochs, args.batch_size)
        row["width"] = chosen
        print(name, json.dumps(row), flush=True)
        rows.append((name, row))
    if args.write:
        write_section("denseflow-ablation", markdown(rows, args, machine()))


if __name__ == "__main__":
    main()
