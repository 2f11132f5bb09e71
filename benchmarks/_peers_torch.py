"""The PyTorch side of `benchmarks/peers.py`: normflows' Glow and zuko's MAF.

Run only by the Python that `peers.py --peer-python` names (torch, normflows and zuko
installed); nothing of the library imports it. It reads the `.npz` that `peers.py` wrote
(the training stream, already dequantized, and the test set), trains for as many steps as
the stream holds batches, measures, and prints one JSON line. With `--count` it only builds
the model and prints its parameter count and the versions of its libraries.

Usage: python benchmarks/_peers_torch.py --model glow|maf --spec JSON
    [--threads N]
    (--count | --data NPZ --seed N --batch N --lr LR --optimizer adam|adamax --warmup N
     [--floor-steps N --floor-channels N])
"""

import argparse
import json
import math
import os
import platform
import time
import warnings

import numpy as np
import torch

# `peers.py` imports only the standard library and NumPy at module level.
from peers import FLOOR_CHANNELS, median_step

# normflows' LU 1x1 convolution calls the deprecated `torch.lu`: one warning per build.
warnings.filterwarnings("ignore", category=UserWarning)


def build_glow(spec):
    """normflows' Glow as its own Glow example builds it (`GlowBlock`s with
    `split_mode="channel"`, `scale=True`, a `Squeeze` per level, `MultiscaleFlow`), with an
    unconditional trainable `DiagGaussian` per latent where the example has the class-
    conditional `ClassCondDiagGaussian`."""
    import normflows as nf

    levels, steps, hidden = spec["num_levels"], spec["num_steps"], spec["hidden_channels"]
    height, width, channels = spec["event_shape"]
    q0, merges, flows = [], [], []
    for i in range(levels):
        level = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden,
                                    split_mode="channel", scale=True) for _ in range(steps)]
        flows.append(level + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            size = 2 ** (levels - i)
            latent = (channels * size, height // size, width // size)
        else:
            size = 2 ** levels
            latent = (channels * 2 * size, height // size, width // size)
        q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def build_maf(spec):
    """zuko's `MAF(features=D, transforms=T, hidden_features=H)`."""
    import zuko

    return zuko.flows.MAF(features=spec["event_shape"][0], transforms=spec["num_layers"],
                          hidden_features=tuple(spec["hidden_units"]))


class GlowSide:
    """normflows' Glow on images in `[0, 256)` (NHWC): it models them scaled to `[0, 1)`."""

    def __init__(self, spec):
        self.model = build_glow(spec)
        self.num_bins = spec["num_bins"]

    def _images(self, x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) / self.num_bins))

    def loss(self, x):
        return self.model.forward_kld(self._images(x))

    def log_prob(self, x):
        # The density of x / num_bins in [0, 1)^D; that of x in [0, num_bins)^D divides by
        # num_bins per dimension: the same count of the scaling as the library's bits/dim.
        images = self._images(x)
        dims = images[0].numel()
        return self.model.log_prob(images, None) - dims * math.log(self.num_bins)

    def sample(self, n):
        return self.model.sample(n)[0]


class MAFSide:
    """zuko's MAF on vectors."""

    def __init__(self, spec):
        self.model = build_maf(spec)

    def loss(self, x):
        return -self.model().log_prob(torch.from_numpy(x)).mean()

    def log_prob(self, x):
        return self.model().log_prob(torch.from_numpy(x))

    def sample(self, n):
        return self.model().sample((n,))


SIDES = {"glow": GlowSide, "maf": MAFSide}


def count_params(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def versions():
    import normflows
    import zuko

    return {"python": platform.python_version(), "torch": torch.__version__,
            "normflows": normflows.__version__, "zuko": zuko.__version__,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads()}


def best_rate(fn, count, repeats=3, min_seconds=1.0):
    """Best rate (count / s) over `repeats` timings of >= min_seconds each, after a warm-up
    call (the same rule as `_report.best_rate`, which this process cannot import)."""
    fn()
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, calls * count / elapsed)
    return best


def train_steps(side, train, args):
    """Trains `side` one step per batch of `train`, in order: `(end time of each step,
    number of steps skipped)`."""
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[args.optimizer](
        side.model.parameters(), lr=args.lr)
    stamps, skipped = [], 0
    side.model.train()
    for step in range(len(train) // args.batch):
        optimizer.zero_grad()
        loss = side.loss(train[step * args.batch:(step + 1) * args.batch])
        # As normflows' Glow example does: a step whose loss is not finite is skipped.
        if torch.isfinite(loss):
            loss.backward()
            optimizer.step()
        else:
            skipped += 1
        stamps.append(time.perf_counter())
    return stamps, skipped


def measure(args, spec):
    data = np.load(args.data)
    train, test = data["train"], data["test"]
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    side = SIDES[args.model](spec)
    stamps, skipped = train_steps(side, train, args)
    side.model.eval()
    with torch.no_grad():
        log_probs = torch.cat([side.log_prob(test[i:i + args.batch])
                               for i in range(0, len(test), args.batch)]).numpy()
        batch = test[:args.batch]
        log_prob_rate = best_rate(lambda: side.log_prob(batch), len(batch))
        sample_rate = best_rate(lambda: side.sample(args.batch), args.batch)
        samples = side.sample(args.batch).numpy()
    result = {
        "params": count_params(side.model),
        "steps": len(stamps),
        "skipped_steps": skipped,
        "first_step_s": stamps[0] - start,
        "step_s": median_step(stamps, args.warmup),
        "test_nll": float(-np.mean(log_probs)),
        "test_log_prob_finite": bool(np.all(np.isfinite(log_probs))),
        "log_prob_per_s": log_prob_rate,
        "samples_per_s": sample_rate,
        "samples_finite": bool(np.all(np.isfinite(samples))),
        "versions": versions(),
    }
    if args.model == "glow" and args.floor_steps:
        floor = SIDES[args.model]({**spec, "hidden_channels": args.floor_channels})
        floor_stamps, _ = train_steps(floor, train[:args.floor_steps * args.batch], args)
        result["floor_step_s"] = median_step(floor_stamps, args.warmup)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SIDES), required=True)
    parser.add_argument("--spec", required=True, help="the model's sizes as JSON")
    parser.add_argument("--count", action="store_true", help="print the parameter count only")
    parser.add_argument("--data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "adamax"], default="adam")
    parser.add_argument("--floor-steps", type=int, default=0,
                        help="also train Glow this many steps with narrow conditioners")
    parser.add_argument("--floor-channels", type=int, default=FLOOR_CHANNELS,
                        help="hidden channels of those conditioners")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = json.loads(args.spec)
    if args.count:
        result = {"params": count_params(SIDES[args.model](spec).model), "versions": versions()}
    else:
        result = measure(args, spec)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
