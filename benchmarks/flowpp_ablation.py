"""Flow++ ablation on the offline 8x8 digits at matched parameter counts.

Trains, for the same number of steps on the same data, the full Flow++ (variational
dequantization, logistic-mixture couplings, attention), then one change at a time
(uniform dequantization, affine couplings, no attention) and a Glow of the same size
(uniform dequantization, the conv ResNet conditioner `conditioner="resnet"`). The smaller
variants get wider conditioners, as in the paper, until their parameter count is within 5%
of the full model's. Reports test bits/dim of
the discrete digits by the ELBO and by the IWBO with k samples, training steps/s, samples/s
and parameters. With `--write` the table replaces its section of `docs/benchmarks.md`.

Usage: python benchmarks/flowpp_ablation.py [--epochs N] [--eval-samples K] [--write]
"""

import argparse
import inspect
import json
import sys

import keras
from _ablation import TABLE_HEADER, matched, table_row, train_and_measure
from _report import machine, write_section

import tfp_flows as tff

NUM_BINS = tff.datasets.DIGITS_NUM_BINS
EVENT_SHAPE = [8, 8, 1]
TOLERANCE = 0.05
VARIANTS = {
    "Flow++": {},
    "uniform dequantization": {"dequantization": "uniform"},
    "affine coupling": {"coupling": "affine"},
    "no attention": {"attention": False},
}


def flowpp(filters, **changes):
    # Four attention heads where they divide the width, else two (the head count does not
    # change the parameters, so widths can step by 2 to match them).
    heads = 4 if filters % 4 == 0 else 2
    return tff.models.FlowPlusPlus(EVENT_SHAPE, num_bins=NUM_BINS, filters=filters,
                                   heads=heads, **changes)


def glow(hidden_channels):
    return tff.models.Glow(EVENT_SHAPE, num_levels=2, num_steps=4,
                           hidden_channels=hidden_channels, num_bins=NUM_BINS,
                           dequantization="uniform", conditioner="resnet")


def markdown(rows, args, info):
    lines = [
        "## Flow++ ablation on the digits", "",
        f"Measured by `python benchmarks/flowpp_ablation.py --epochs {args.epochs} "
        f"--eval-samples {args.eval_samples} --write` on {info['cpu']} "
        f"({info.get('cores', '?')} cores), TensorFlow {info.get('tensorflow', '?')}. "
        f"Each model trains {args.epochs} epochs of the 1,437 training digits "
        f"(batch {args.batch_size}, Adam 1e-3 with cosine decay, gradient norm clipped at "
        f"1, XLA); the full Flow++ has `FlowPlusPlus`'s defaults and the "
        f"others wider conditioners, to within 5% of its parameters (4 attention heads, 2 "
        f"where 4 do not divide the width); Glow has its conv ResNet "
        f"conditioner (`conditioner=\"resnet\"`). Test bits/dim are "
        f"those of the discrete digits (17 levels) on the 360 test digits, by the ELBO and "
        f"by the IWBO with k = {args.eval_samples} importance samples (for uniform "
        f"dequantization too). Steps/s exclude the first epoch (tracing).", "",
        *TABLE_HEADER]
    lines += [table_row(name, row) for name, row in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--only", help="run only the variants whose name contains this")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    train, test = tff.datasets.load_digits(seed=0)
    train, test = train.astype("float32"), test.astype("float32")
    defaults = inspect.signature(tff.models.FlowPlusPlus).parameters
    width = defaults["filters"].default
    target = flowpp(width).count_params()
    rows = []
    builds = {name: (lambda w, c=changes: flowpp(w, **c)) for name, changes in VARIANTS.items()}
    builds["Glow (same size)"] = glow
    for name, build in builds.items():
        if args.only and args.only not in name:
            continue
        keras.utils.set_random_seed(0)
        if name == "Flow++":
            chosen = width
        else:
            step = 8 if name.startswith("Glow") else 2
            chosen, count = matched(build, target, step, start=step)
            if abs(count - target) > TOLERANCE * target:
                sys.exit(f"{name}: no width within 5% of {target} parameters (best {count})")
        keras.utils.set_random_seed(0)
        row = train_and_measure(build(chosen), train, test, args.epochs, args.batch_size,
                                args.eval_samples, seed=10)
        row["width"] = chosen
        print(name, json.dumps(row), flush=True)
        rows.append((name, row))
    if args.write:
        write_section("flowpp-ablation", markdown(rows, args, machine()))


if __name__ == "__main__":
    main()
