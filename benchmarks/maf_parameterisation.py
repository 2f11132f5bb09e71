"""MAF against zuko's MAF at equal steps: test NLL and training speed over seeds.

Both libraries train a MAF of 5 steps with MADEs of 256x256 (alternating orders, affine
transformers) on the same 63-d image patches for the same number of steps (600 by
default), Adam at 1e-3, batch 512, batches drawn from a fresh permutation of the training
set each epoch; the test NLL (nats per patch) is then taken over the whole test set. The
data are written once to an `.npz` that both read: 8x8 grey patches of the two images
bundled with scikit-learn (`sklearn.datasets.load_sample_images`, no download), their
levels uniformly dequantized and scaled to [0, 1), each patch's mean removed and the
last pixel dropped, BSDS300's preprocessing in the MAF paper (Papamakarios et al.,
arXiv:1705.07057). Training patches come from the top three quarters of each image, test
patches from the bottom quarter. The pixels' standard deviation is about 0.08: far from
the base density's scale, which is what the data-end ActNorm and `standardize` are for.

Our variants (`--variant`):

- `default`: `tff.models.MAF([63])` as shipped (the MADEs give the density direction
  `u = x * exp(s) + t`, fan-in uniform kernels, zero-initialised outputs, a data-end
  ActNorm initialised by `fit`).
- `default_one_step`: the same, compiled with Keras' default `steps_per_execution=1`
  (every other variant runs 10 steps per execution, as the `tfp-flows` command does: the
  same updates, with less Python between steps).
- `no_actnorm`: the same with `actnorm=False`.
- `previous`: the parameterisation before the change (`transformer=tff.bijectors.Affine()`,
  the sampling direction `x = u * exp(s) + t`, Glorot kernels, no ActNorm).
- `standardize`: `default` plus `standardize=tff.bijectors.Standardize.from_data(train)`.

zuko (`--variant plain` or `standardize`, the latter training on standardised data and
adding the log-det back) runs in a Python with torch and zuko: `--peer-python`.

Speeds are training steps per second over the steps after the first 100 (compilation and
warm-up excluded): ours through `flow.fit` (a plain TensorFlow graph, as Keras chooses on
CPU), timed inside the call from the end of its first execution of 10 steps, zuko's
through its own loop; each library uses every core. The machine may be
shared: runs alternate between the libraries, seed by seed, so both see similar load,
and the spread over seeds is reported with the means. The `speed` command alternates
short speed-only runs of both and reports each library's best and median rate.

Usage:
    python benchmarks/maf_parameterisation.py run --peer-python PYTHON [--seeds 0 1 2]
        [--variants default previous] [--out results.json]
    python benchmarks/maf_parameterisation.py speed --peer-python PYTHON [--rounds 5]
    python benchmarks/maf_parameterisation.py data --out patches.npz
    python benchmarks/maf_parameterisation.py ours --data patches.npz --seed 0
    PYTHON benchmarks/maf_parameterisation.py zuko --data patches.npz --seed 0
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SETTINGS = dict(num_layers=5, hidden_units=[256, 256], steps=600, warmup_steps=100,
                batch_size=512, learning_rate=1e-3, num_train=60_000, num_test=10_000,
                patch=8, steps_per_execution=10)
OUR_VARIANTS = ("default", "default_one_step", "no_actnorm", "previous", "standardize")
PEER_VARIANTS = ("plain", "standardize")


# -- data --------------------------------------------------------------------------------


def _patches(image, rows, count, rng, size):
    top = rng.integers(rows[0], rows[1] - size, count)
    left = rng.integers(0, image.shape[1] - size, count)
    offsets = np.arange(size)
    return image[top[:, None, None] + offsets[None, :, None],
                 left[:, None, None] + offsets[None, None, :]].reshape(count, size * size)


def make_data(path, seed=0):
    """Writes `train` and `test` patches `[N, 63]` (float32) to the `.npz` at `path`."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    images = load_sample_images().images
    size = SETTINGS["patch"]
    train, test = [], []
    for image in images:
        grey = np.round(image.astype(np.float64).mean(axis=-1))
        cut = int(grey.shape[0] * 0.75)
        train.append(_patches(grey, (0, cut), SETTINGS["num_train"] // len(images), rng, size))
        test.append(_patches(grey, (cut, grey.shape[0]), SETTINGS["num_test"] // len(images),
                             rng, size))

    def prepare(levels):
        x = (levels + rng.uniform(size=levels.shape)) / 256.0
        x = x - x.mean(axis=1, keepdims=True)
        return x[:, :-1].astype(np.float32)

    train, test = prepare(np.concatenate(train)), prepare(np.concatenate(test))
    rng.shuffle(train)
    np.savez(path, train=train, test=test)
    return path


# -- ours --------------------------------------------------------------------------------


def run_ours(path, seed, variant, steps=None, evaluate=True, threads=None):
    """Trains our MAF for `steps` (default `SETTINGS["steps"]`); returns its JSON row."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import tfp_flows as tff

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    data = np.load(path)
    train, test = data["train"], data["test"]
    keras.utils.set_random_seed(seed)
    options = dict(num_layers=SETTINGS["num_layers"], hidden_units=SETTINGS["hidden_units"])
    if variant == "no_actnorm":
        options.update(actnorm=False)
    elif variant == "previous":
        options.update(transformer=tff.bijectors.Affine(3.0), kernel_initializer="glorot_uniform",
                       actnorm=False)
    elif variant == "standardize":
        options.update(standardize=tff.bijectors.Standardize.from_data(train))
    flow = tff.models.MAF([train.shape[1]], **options)
    flow.compile(optimizer=keras.optimizers.Adam(SETTINGS["learning_rate"]),
                 steps_per_execution=(1 if variant == "default_one_step"
                                      else SETTINGS["steps_per_execution"]))
    batches = (tf.data.Dataset.from_tensor_slices(train)
               .shuffle(len(train), seed=seed, reshuffle_each_iteration=True).repeat()
               .batch(SETTINGS["batch_size"], drop_remainder=True).prefetch(4))
    warmup, steps = SETTINGS["warmup_steps"], steps or SETTINGS["steps"]
    flow.fit(batches, epochs=1, steps_per_epoch=warmup, verbose=0)
    # Timed inside the second fit, from the end of its first execution to its last one (the
    # batch index Keras passes is that of an execution's last step): the call's own start,
    # which makes the dataset's iterator and fills its shuffle buffer, is not a training
    # step, and zuko's clock, inside its loop, has no such start either.
    clock = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: clock.append((batch, time.perf_counter())))
    flow.fit(batches, initial_epoch=1, epochs=2, steps_per_epoch=steps - warmup, verbose=0,
             callbacks=[timer])
    (first, start), (last, end) = clock[0], clock[-1]
    row = {"library": "tfp_flows", "variant": variant, "seed": seed,
           "steps_per_second": (last - first) / (end - start),
           "parameters": flow.count_params()}
    if evaluate:
        log_prob = np.concatenate([flow.log_prob(test[i:i + 2000]).numpy()
                                   for i in range(0, len(test), 2000)])
        row["test_nll"] = float(-log_prob.mean())
    return row


# -- zuko --------------------------------------------------------------------------------


def run_zuko(path, seed, variant, steps=None, evaluate=True, threads=None):
    """Trains zuko's MAF for `steps` (default `SETTINGS["steps"]`); returns its JSON row."""
    import torch
    import zuko

    if threads:
        torch.set_num_threads(threads)

    data = np.load(path)
    train, test = data["train"], data["test"]
    log_det = 0.0
    if variant == "standardize":
        mean, std = train.mean(axis=0), train.std(axis=0)
        train, test = (train - mean) / std, (test - mean) / std
        log_det = float(-np.log(std.astype(np.float64)).sum())
    torch.manual_seed(seed)
    flow = zuko.flows.MAF(train.shape[1], transforms=SETTINGS["num_layers"],
                          hidden_features=SETTINGS["hidden_units"])
    optimizer = torch.optim.Adam(flow.parameters(), lr=SETTINGS["learning_rate"])
    train = torch.from_numpy(train)
    rng = np.random.default_rng(seed)
    batch_size, warmup = SETTINGS["batch_size"], SETTINGS["warmup_steps"]
    steps = steps or SETTINGS["steps"]
    order, position, start = rng.permutation(len(train)), 0, None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        if position + batch_size > len(train):
            order, position = rng.permutation(len(train)), 0
        batch = train[order[position:position + batch_size]]
        position += batch_size
        loss = -flow().log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    row = {"library": "zuko", "variant": variant, "seed": seed,
           "steps_per_second": (steps - warmup) / seconds,
           "parameters": sum(p.numel() for p in flow.parameters()),
           "torch_threads": torch.get_num_threads()}
    if evaluate:
        with torch.no_grad():
            log_prob = torch.cat([flow().log_prob(torch.from_numpy(test[i:i + 2000]))
                                  for i in range(0, len(test), 2000)]).numpy()
        row["test_nll"] = float(-log_prob.mean() - log_det)
    return row


# -- orchestration -----------------------------------------------------------------------


def _subprocess(python, command, path, seed, variant, steps=None, threads=None):
    """One run in a fresh process (its own threads and memory); returns its JSON row.
    With `steps`, a speed-only run of that many steps (no evaluation)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(
        [python, os.path.abspath(__file__), command, "--data", path, "--seed", str(seed),
         "--variant", variant, *(["--speed-steps", str(steps)] if steps else []),
         *(["--threads", str(threads)] if threads else [])],
        check=True, capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(rows):
    """`{(library, variant): (mean nll, spread, mean steps/s, spread, n)}`."""
    groups = {}
    for row in rows:
        groups.setdefault((row["library"], row["variant"]), []).append(row)
    summary = {}
    for key, group in groups.items():
        nll = np.array([row["test_nll"] for row in group])
        speed = np.array([row["steps_per_second"] for row in group])
        summary[key] = (nll.mean(), nll.std(ddof=1) if len(nll) > 1 else 0.0, speed.mean(),
                        speed.std(ddof=1) if len(speed) > 1 else 0.0, len(group))
    return summary


def table(rows):
    """A Markdown table of means (+- sample standard deviation over seeds)."""
    lines = ["| library | variant | seeds | test NLL (nats) | train steps/s |",
             "|---|---|---:|---:|---:|"]
    for (library, variant), (nll, nll_sd, speed, speed_sd, n) in _summary(rows).items():
        lines.append(f"| {library} | {variant} | {n} | {nll:.1f} +- {nll_sd:.1f} | "
                     f"{speed:.1f} +- {speed_sd:.1f} |")
    return "\n".join(lines)


def run_speed(args):
    """Alternating speed-only runs of both libraries: the best and the median rate of each.

    On a shared machine a run's rate depends on what else runs at that moment; the best
    of several alternating runs is each library's rate with the least interference.
    """
    rates = {"tfp_flows": [], "zuko": []}
    with tempfile.TemporaryDirectory() as directory:
        path = args.data or make_data(os.path.join(directory, "patches.npz"))
        for round_ in range(args.rounds):
            for library, python, command in (("tfp_flows", sys.executable, "ours"),
                                             ("zuko", args.peer_python, "zuko")):
                variant = "default" if command == "ours" else "plain"
                row = _subprocess(python, command, path, round_, variant, args.steps,
                                  args.threads)
                rates[library].append(row["steps_per_second"])
                print(json.dumps(row), flush=True)
    best = {library: max(values) for library, values in rates.items()}
    median = {library: float(np.median(values)) for library, values in rates.items()}
    print("| library | best steps/s | median steps/s | runs |\n|---|---:|---:|---:|")
    for library in rates:
        print(f"| {library} | {best[library]:.1f} | {median[library]:.1f} | "
              f"{len(rates[library])} |")
    print(f"ratio tfp_flows / zuko: best {best['tfp_flows'] / best['zuko']:.2f}, median "
          f"{median['tfp_flows'] / median['zuko']:.2f}")


def run_all(args):
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = args.data or make_data(os.path.join(directory, "patches.npz"))
        for seed in args.seeds:
            # Alternating libraries, seed by seed: both see the machine's load of the moment.
            for variant in args.variants:
                rows.append(_subprocess(sys.executable, "ours", path, seed, variant))
                print(json.dumps(rows[-1]), flush=True)
            for variant in args.peer_variants:
                rows.append(_subprocess(args.peer_python, "zuko", path, seed, variant))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"settings": SETTINGS, "rows": rows}, file, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="write the patches to an .npz")
    data.add_argument("--out", required=True)
    for name, variants in (("ours", OUR_VARIANTS), ("zuko", PEER_VARIANTS)):
        one = commands.add_parser(name, help=f"one {name} run; prints a JSON line")
        one.add_argument("--data", required=True)
        one.add_argument("--seed", type=int, default=0)
        one.add_argument("--variant", choices=variants, default=variants[0])
        one.add_argument("--speed-steps", type=int,
                         help="a speed-only run of this many steps (no evaluation)")
        one.add_argument("--threads", type=int, help="threads of the library's ops")
    run = commands.add_parser("run", help="every variant and seed, then the table")
    run.add_argument("--peer-python", required=True, help="a Python with torch and zuko")
    run.add_argument("--data", help="an .npz from `data` (default: written afresh)")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--variants", nargs="+", choices=OUR_VARIANTS,
                     default=["default", "previous"])
    run.add_argument("--peer-variants", nargs="+", choices=PEER_VARIANTS, default=["plain"])
    run.add_argument("--out", help="write the rows and settings as JSON")
    speed = commands.add_parser("speed", help="alternating speed-only runs of both libraries")
    speed.add_argument("--peer-python", required=True, help="a Python with torch and zuko")
    speed.add_argument("--data", help="an .npz from `data` (default: written afresh)")
    speed.add_argument("--rounds", type=int, default=5)
    speed.add_argument("--steps", type=int, default=300,
                       help="steps per run, the first warmup_steps untimed")
    speed.add_argument("--threads", type=int,
                       help="threads of each library's ops (default: the library's own, "
                            "every core)")
    args = parser.parse_args(argv)
    if args.command == "data":
        print(make_data(args.out))
    elif args.command in ("ours", "zuko"):
        run = run_ours if args.command == "ours" else run_zuko
        print(json.dumps(run(args.data, args.seed, args.variant, steps=args.speed_steps,
                             evaluate=args.speed_steps is None, threads=args.threads)))
    elif args.command == "speed":
        run_speed(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
