"""Speed benchmark of tfp_flows: train steps/s, log_prob rows/s and samples/s per mode.

Modes: `eager` (no graph), `function` (`tf.function`), `xla` (`tf.function(jit_compile=True)`;
for training, `compile(jit_compile=True)`). Results are printed and written to
`docs/benchmarks.md` (with `--write`).

Usage: python benchmarks/run.py [--write] [--repeats 3] [--only vector|image]
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402

MODES = ("eager", "function", "xla")

CASES = {
    "vector": dict(
        title="RealNVP, event 64, 8 couplings, MLP 256x256, batch 512",
        build=lambda: tff.models.RealNVP([64], num_layers=8, hidden_units=[256, 256]),
        event_shape=[64], batch=512),
    "image": dict(
        title="RealNVP, event 28x28x1, 4 checkerboard couplings, ConvResNet 64ch x 2 blocks, "
              "batch 64",
        build=lambda: tff.models.RealNVP([28, 28, 1], num_layers=4, hidden_channels=64,
                                         num_blocks=2),
        event_shape=[28, 28, 1], batch=64),
}


def _rate(fn, count, repeats, min_seconds=1.0):
    """Best rate (count / s) over `repeats` timings, each running `fn` for >= min_seconds."""
    fn()  # warm-up: tracing and compilation are excluded
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            result = fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        np.asarray(result)  # make sure the work is done
        best = max(best, calls * count / elapsed)
    return best


def _wrap(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"))


def bench_mode(case, mode, repeats):
    """Rates of one flow in one mode: training by `fit`, `log_prob`, sampling."""
    rng = np.random.default_rng(0)
    batch = case["batch"]
    x = rng.normal(size=[batch, *case["event_shape"]]).astype("float32")
    z = rng.normal(size=x.shape).astype("float32")
    keras.utils.set_random_seed(0)
    flow = case["build"]()
    flow.compile(optimizer=keras.optimizers.Adam(1e-4), run_eagerly=(mode == "eager"),
                 jit_compile=(mode == "xla"))
    steps = 5 if mode == "eager" else 20
    data = np.concatenate([x] * steps)

    def train():
        return flow.fit(data, batch_size=batch, epochs=1, verbose=0,
                        shuffle=False).history["loss"][-1]

    log_prob = _wrap(flow.distribution.log_prob, mode)
    sample = _wrap(flow.bijector.forward, mode)
    # Fresh tensors each call: TFP's bijector cache would otherwise return the previous
    # eager result without computing anything.
    return dict(
        mode=mode,
        train_steps_per_s=_rate(train, steps, repeats),
        log_prob_rows_per_s=_rate(lambda: log_prob(tf.constant(x)), batch, repeats),
        samples_per_s=_rate(lambda: sample(tf.constant(z)), batch, repeats),
    )


def bench_case(case, repeats):
    rows = []
    for mode in MODES:
        rows.append(bench_mode(case, mode, repeats))
        print(json.dumps({"case": case["title"], **rows[-1]}), flush=True)
    return rows


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": ", ".join(d.name for d in tf.config.list_physical_devices("GPU")) or "none",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tensorflow_probability": tfp.__version__,
        "keras": keras.__version__,
        "tfp_flows": tff.__version__,
    }


def markdown(results, info):
    lines = ["# Benchmarks", "",
             "Measured by `python benchmarks/run.py --write` (best of several timed runs, "
             "after a warm-up that excludes tracing and compilation).", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             "Defaults that follow from these numbers: on a CPU-only machine neither `fit` "
             "nor inference gains consistently from XLA at these sizes, so `Flow.compile` "
             "keeps Keras' `jit_compile=\"auto\"` (plain graphs on CPU, XLA with an "
             "accelerator) and `log_prob`/`sample`/`forward`/`inverse` run as plain graphs "
             "on CPU and under XLA with an accelerator. Small models whose steps are "
             "dominated by per-op overhead are faster under XLA even on CPU: `tfp-flows "
             "demo` (16 couplings of 64x64 on 2-D data) compiles with `jit_compile=True`. "
             "Eager mode is for debugging only.", ""]
    for title, rows in results.items():
        lines += [f"## {title}", "",
                  "| mode | train steps/s | log_prob rows/s | samples/s |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['mode']} | {r['train_steps_per_s']:.1f} | "
                  f"{r['log_prob_rows_per_s']:,.0f} | {r['samples_per_s']:,.0f} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    results = {}
    for name, case in CASES.items():
        if args.only in (None, name):
            results[case["title"]] = bench_case(case, args.repeats)
    text = markdown(results, machine())
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
