"""Scenarios of tests/test_distributed.py that run in their own processes.

`tf.distribute` needs its devices or its cluster before TensorFlow initialises, so each
scenario runs as `python tests/distributed_scenarios.py SCENARIO ...` and prints (or
writes) JSON that the tests check:

- `mirrored OUT`: one `fit` step of every registered family (vector and image data), of a
  bound flow and of a `Distiller`, on one device and under a `MirroredStrategy` over two
  logical CPUs, from the same weights and batch; then, in the same process (TensorFlow
  starts once), an ActNorm initialised inside `fit` on two replicas, and `tfp-flows train`
  on one device and with `--distribute mirrored` (then `--resume`), into `OUT`;
- `worker INDEX OUT EPOCHS [backup]`: one worker of a `MultiWorkerMirroredStrategy`
  cluster described by `TF_CONFIG`, training a tiny flow (with `backup`, through
  `keras.callbacks.BackupAndRestore`).

Nothing happens on import (pytest imports this file for its doctests).
"""

import contextlib
import io
import json
import os
import sys
import time

# A fixed, small problem: the same in every process.
VECTOR_SHAPE = [3]
IMAGE_SHAPE = [4, 4, 2]
NUM_BINS = 17
LEARNING_RATE = 0.05


def two_logical_cpus():
    """Splits the CPU into two logical devices; call before TensorFlow initialises."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def perturbed_weights(model, seed=1, scale=0.1):
    """Seeded random values for the trainable weights (a fresh flow is the identity, whose
    first step leaves most weights untouched), the others as they are."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.normal(scale=scale, size=w.shape) if w.trainable else np.asarray(w))
            .astype(w.dtype) for w in model.weights]


def _flat(model):
    import numpy as np

    return np.concatenate([np.asarray(w, np.float64).ravel() for w in model.trainable_weights])


def _compare(one, many, before):
    """Largest relative differences of the reported numbers and of the weights."""
    import numpy as np

    numbers = {key: abs(many["numbers"][key] - value) / max(abs(value), 1e-12)
               for key, value in one["numbers"].items()}
    weights_one, weights_many = np.asarray(one["weights"]), np.asarray(many["weights"])
    return {
        "numbers": numbers,
        "one": one["numbers"], "mirrored": many["numbers"],
        # Relative to the weights, and to the update itself (a doubled update is 100%).
        "weights": float(np.max(np.abs(weights_many - weights_one))
                         / np.max(np.abs(weights_one))),
        "update": float(np.max(np.abs(weights_many - weights_one))
                        / np.max(np.abs(weights_one - before))),
    }


def _flow_step(strategy, build, x, batch_size, weights, run_eagerly=False):
    import keras

    with strategy.scope():
        flow = build()
        flow.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), run_eagerly=run_eagerly)
        if weights is None:
            weights = perturbed_weights(flow)
        flow.set_weights(weights)
    before = _flat(flow)
    history = flow.fit(x, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                       validation_data=x)
    evaluated = flow.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
    numbers = {key: float(values[-1]) for key, values in history.history.items()}
    numbers.update({f"evaluate_{key}": float(value) for key, value in evaluated.items()})
    return {"numbers": numbers, "weights": _flat(flow).tolist()}, before, weights, flow


def _actnorm_replicas(flow, strategy):
    """Largest difference between replicas, over every ActNorm variable."""
    import numpy as np

    worst = 0.0
    for layer in flow._flatten_layers():
        if type(layer).__name__ != "ActNormParams":
            continue
        for variable in (layer.log_scale, layer.bias, layer.initialized):
            copies = [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
            worst = max(worst, *(float(np.max(np.abs(c - copies[0]))) for c in copies))
    return worst


def _family_cases():
    import tfp_flows as tff

    settings = {"num_layers": 2, "hidden_units": [8], "hidden_channels": 8, "num_blocks": 1,
                "num_levels": 1, "num_steps": 2, "coupling": "affine"}
    cases = {}
    for name, family in tff.models.FAMILIES.items():
        if "vector" in family.data_kinds:
            cases[f"{name}/vector"] = (
                lambda family=family: family.build(VECTOR_SHAPE, settings, seed=0), "vector")
        if "image" in family.data_kinds:
            cases[f"{name}/image"] = (
                lambda family=family: family.build(IMAGE_SHAPE, settings, seed=0,
                                                   num_bins=NUM_BINS), "image")
    return cases


def _uniform_realnvp():
    import tfp_flows as tff

    return tff.models.RealNVP(VECTOR_SHAPE, num_layers=2, hidden_units=[8],
                              dequantization="uniform", num_bins=NUM_BINS, seed=0)


def _bound_case(one_device, mirrored, x, build=_uniform_realnvp):
    """A bound flow (by default a uniformly dequantized RealNVP): the mirrored step against
    a hand-made one-device step over the same two halves, each with its replica's noise
    seed."""
    import keras
    import numpy as np
    import tensorflow as tf

    with mirrored.scope():
        flow = build()
        flow.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
        # ActNorms (Flow++) count as initialised: the hand-made step below does not run
        # their data-dependent initialisation.
        weights = [np.ones_like(w) if v.name == "initialized" else w
                   for w, v in zip(perturbed_weights(flow), flow.weights, strict=True)]
        flow.set_weights(weights)
    seed = tf.identity(flow.noise_seed_generator.state.value)
    history = flow.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    with one_device.scope():
        reference = build()
        reference.set_weights(weights)
    half = len(x) // 2
    variables = reference.trainable_variables
    with tf.GradientTape() as tape:
        parts = []
        for replica, rows in enumerate((x[:half], x[half:])):
            replica_seed = tf.cast(tf.random.experimental.stateless_fold_in(
                tf.cast(seed, tf.int64), replica), seed.dtype)
            parts.append(reference._bound(tf.constant(rows), None, 1, replica_seed))
        loss = -tf.reduce_mean(tf.concat(parts, axis=0))
    for variable, gradient in zip(variables, tape.gradient(loss, variables)):
        variable.assign_sub(LEARNING_RATE * gradient)
    before = np.concatenate([np.asarray(w, np.float64).ravel() for w, v in
                             zip(weights, reference.weights) if v.trainable])
    one = {"numbers": {"loss": float(loss)}, "weights": _flat(reference).tolist()}
    many = {"numbers": {"loss": float(history.history["loss"][-1])},
            "weights": _flat(flow).tolist()}
    return _compare(one, many, before)


def _distiller_case(strategy, num_samples, run_eagerly=False):
    import keras

    import tfp_flows as tff

    with strategy.scope():
        teacher = tff.models.MAF(VECTOR_SHAPE, num_layers=2, hidden_units=[8], seed=0)
        student = tff.models.IAF(VECTOR_SHAPE, num_layers=2, hidden_units=[8], seed=1)
        teacher.set_weights(perturbed_weights(teacher, seed=2))
        student.set_weights(perturbed_weights(student, seed=3))
        distiller = tff.training.Distiller(teacher, student, num_samples=num_samples, seed=5)
        distiller.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                          run_eagerly=run_eagerly)
    before = _flat(student)
    history = distiller.fit(epochs=1, steps_per_epoch=1, verbose=0)
    evaluated = distiller.evaluate(steps=2, verbose=0, return_dict=True)
    numbers = {key: float(values[-1]) for key, values in history.history.items()}
    numbers.update({f"evaluate_{key}": float(value) for key, value in evaluated.items()})
    return {"numbers": numbers, "weights": _flat(student).tolist()}, before


def _actnorm_fit(strategy):
    """The ActNorm flow of tests/test_actnorm.py fitted for one batch of 32 on two replicas."""
    import keras
    from test_actnorm import ActNormFlow, _data

    x = _data([64, 4], "float32")
    with strategy.scope():
        flow = ActNormFlow([4])
        flow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    flow.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return {"flag": float(flow.actnorm_params.initialized.numpy()),
            "bias": flow.actnorm_params.bias.numpy().tolist()}


def _cli_runs(out):
    """`tfp-flows train` on one device, with `--distribute mirrored`, then `--resume`d."""
    import tensorflow as tf

    from tfp_flows.cli import main

    # The command's strategies would reuse the collective keys of the scenario's strategy
    # (and a key's first shapes stick in this process): another key range, as TensorFlow's
    # own tests do.
    tf.distribute.MirroredStrategy._collective_key_base = 1000
    common = ["train", "--model", "realnvp", "--dataset", "two_moons", "--num-points", "400",
              "--num-layers", "2", "--hidden-units", "8", "--batch-size", "80",
              "--verbose", "0"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = [main(common + ["--epochs", "2", "--out", os.path.join(out, "one")]),
                  main(common + ["--epochs", "2", "--out", os.path.join(out, "mirrored"),
                                 "--distribute", "mirrored"])]
        metrics = {}
        for name in ("one", "mirrored"):
            with open(os.path.join(out, name, "metrics.json")) as file:
                metrics[name] = json.load(file)
        status.append(main(common + ["--epochs", "3", "--out", os.path.join(out, "mirrored"),
                                     "--distribute", "mirrored", "--resume"]))
    return {"status": status, "printed": printed.getvalue(), "metrics": metrics}


def mirrored(out):
    """Every case on one device and on two mirrored replicas -> a JSON-able report."""
    import keras
    import numpy as np
    import tensorflow as tf

    two_logical_cpus()
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    data = {"vector": rng.normal(size=[8, *VECTOR_SHAPE]).astype("float32"),
            "image": rng.uniform(0, NUM_BINS, size=[4, *IMAGE_SHAPE]).astype("float32")}
    report = {"replicas": strategy.num_replicas_in_sync, "cases": {}, "actnorm": {},
              "bound families": []}
    cases = _family_cases()
    # Uneven splits: batches of 4, 4 and 1 on 2 replicas (Keras needs an even first one).
    cases["realnvp/vector, 9 in batches of 4"] = (cases["realnvp/vector"][0], "vector9")
    data["vector9"] = rng.normal(size=[9, *VECTOR_SHAPE]).astype("float32")
    for name, (build, kind) in cases.items():
        start = time.perf_counter()
        keras.utils.set_random_seed(0)
        x = data[kind]
        with one_device.scope():
            bound = build().surjection is not None
        if bound:
            # A family that dequantizes its images itself (Flow++): integer levels, and
            # each replica draws its own noise.
            keras.utils.set_random_seed(0)
            levels = rng.integers(0, NUM_BINS, size=[4, *IMAGE_SHAPE]).astype("float32")
            report["cases"][name] = _bound_case(one_device, strategy, levels, build)
            report["bound families"].append(name)
            print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            continue
        batch_size = 4 if kind == "vector9" else len(x)
        # The reference runs eagerly: one step does not repay tracing it.
        one, before, weights, _ = _flow_step(one_device, build, x, batch_size, None,
                                             run_eagerly=True)
        many, _, _, flow = _flow_step(strategy, build, x, batch_size, weights)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        report["cases"][name] = _compare(one, many, before)
        if name.startswith("glow"):
            report["actnorm"][name] = _actnorm_replicas(flow, strategy)
    keras.utils.set_random_seed(0)
    levels = rng.integers(0, NUM_BINS, size=[8, *VECTOR_SHAPE]).astype("float32")
    report["cases"]["bound (uniform dequantization)"] = _bound_case(
        one_device, strategy, levels)
    # 7 samples: an uneven split of each step's samples.
    one, before = _distiller_case(one_device, 7, run_eagerly=True)
    many, _ = _distiller_case(strategy, 7)
    report["cases"]["distiller, 7 samples"] = _compare(one, many, before)
    try:
        _distiller_case(strategy, 1)
    except ValueError as error:
        report["distiller, 1 sample"] = str(error)
    report["actnorm fit"] = _actnorm_fit(strategy)
    report["cli"] = _cli_runs(out)
    return report


# -- multi-worker --------------------------------------------------------------------------


def tiny_flow_run(strategy, epochs, callbacks=()):
    """A tiny RealNVP trained with SGD on fixed data, batch 8, no shuffling -> (flow, history)."""
    import keras
    import numpy as np

    import tfp_flows as tff

    x = np.random.default_rng(0).normal(size=[32, 2]).astype("float32")
    with strategy.scope():
        flow = tff.models.RealNVP([2], num_layers=2, hidden_units=[8], seed=0)
        flow.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
        flow.set_weights(perturbed_weights(flow))
    history = flow.fit(x, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                       callbacks=list(callbacks))
    return flow, history


def worker(index, out, epochs, backup=False):
    """One worker of the `TF_CONFIG` cluster; writes `out/worker-INDEX.json`."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    progress = os.path.join(out, f"progress-{index}.txt")

    class Progress(keras.callbacks.Callback):
        """Records the epochs this process runs (and slows them, so a test can kill it
        mid-run)."""

        def on_epoch_begin(self, epoch, logs=None):
            with open(progress, "a") as file:
                file.write(f"begin {epoch}\n")

        def on_epoch_end(self, epoch, logs=None):
            with open(progress, "a") as file:
                file.write(f"end {epoch}\n")
            if backup:
                time.sleep(0.3)

    callbacks = []
    if backup:
        # Keras 3's BackupAndRestore does not coordinate workers: one directory each.
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(out, "backup", f"worker-{index}")))
    callbacks.append(Progress())
    flow, history = tiny_flow_run(strategy, epochs, callbacks)
    result = {"replicas": strategy.num_replicas_in_sync,
              "history": {key: [float(v) for v in values]
                          for key, values in history.history.items()},
              "weights": _flat(flow).tolist()}
    with open(os.path.join(out, f"worker-{index}.json"), "w") as file:
        json.dump(result, file)


def main(argv):
    scenario = argv[0]
    if scenario == "mirrored":
        print(json.dumps(mirrored(argv[1])))
    elif scenario == "worker":
        worker(int(argv[1]), argv[2], int(argv[3]), backup=argv[4:] == ["backup"])
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
