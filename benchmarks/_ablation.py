"""Shared by the ablation scripts: width matching, training and measuring one model."""

import json
import math
import multiprocessing
import resource
import time

import keras
import numpy as np


def matched(build, target, step, start):
    """The width (a multiple of `step`) whose flow is closest to `target` parameters."""
    best = None
    width = start
    while True:
        count = build(width).count_params()
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (width, count)
        if count > target:
            return best
        width += step


def train_and_measure(flow, train, test, epochs, batch_size, eval_samples, seed):
    """Trains `flow` for `epochs` (Adam 1e-3, cosine decay, clipping, XLA); returns its
    parameters, test bits/dim by the ELBO and the IWBO (`eval_samples`: one k, or several:
    then `iwbo_bpd` maps each k to its bits/dim), train steps/s and samples/s."""
    steps_per_epoch = math.ceil(len(train) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps_per_epoch * epochs)
    flow.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0),
                 jit_compile=True)
    flow.fit(train, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
    start = time.perf_counter()
    flow.fit(train, batch_size=batch_size, initial_epoch=1, epochs=epochs, verbose=0,
             shuffle=True)
    steps_per_second = steps_per_epoch * (epochs - 1) / (time.perf_counter() - start)
    num_dims = int(np.prod(train.shape[1:]))

    def bpd(num_samples):
        bounds = [flow.log_prob(test[i:i + 40], num_samples=num_samples, seed=seed + i)
                  for i in range(0, len(test), 40)]
        return float(-np.concatenate(bounds).mean() / (num_dims * math.log(2)))

    flow.sample(8, seed=0)  # trace once
    start = time.perf_counter()
    samples = flow.sample(512, seed=1).numpy()
    samples_per_second = 512 / (time.perf_counter() - start)
    iwbo = ({k: bpd(k) for k in eval_samples} if isinstance(eval_samples, list | tuple)
            else bpd(eval_samples))
    return {"params": flow.count_params(), "elbo_bpd": bpd(1),
            "iwbo_bpd": iwbo, "steps_per_second": steps_per_second,
            "samples_per_second": samples_per_second,
            "samples_finite": bool(np.all(np.isfinite(samples)))}


def _with_peak_memory(fn, args):
    result = fn(*args)
    # Linux reports the peak resident set size in KiB.
    result["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def in_fresh_process(fn, *args):
    """`fn(*args)` (a dict) run in a new Python process, with the process's peak resident
    memory (`peak_memory_mib`, TensorFlow's own included) added: each model of an ablation
    gets its own process, so its peak is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_with_peak_memory, (fn, args))


TABLE_HEADER = [
    "| model | width | parameters | test bpd (ELBO) | test bpd (IWBO) | train steps/s "
    "| samples/s | finite samples |",
    "|---|---:|---:|---:|---:|---:|---:|---|"]


def table_row(name, row):
    return (f"| {name} | {row['width']} | {row['params']:,} | {row['elbo_bpd']:.3f} | "
            f"{row['iwbo_bpd']:.3f} | {row['steps_per_second']:.2f} | "
            f"{row['samples_per_second']:.0f} | {'yes' if row['samples_finite'] else 'no'} |")


def reused_results(path, names):
    """The results of the models in `names` that a printout of an ablation script at `path`
    holds (its lines are a model's name, a space and its results as JSON), by name."""
    results = {}
    if path:
        with open(path) as log:
            for line in log:
                name, _, result = line.partition(" {")
                if name in names:
                    results[name] = json.loads("{" + result)
    return results
