"""Training under `tf.distribute` gives one device's updates and numbers.

The strategies need their devices (two logical CPUs) or their cluster (`TF_CONFIG`) before
TensorFlow initialises, so the scenarios run in subprocesses (tests/distributed_scenarios.py):
one process for every family, an ActNorm's initialisation and the command line under
`MirroredStrategy`, and two worker processes on loopback ports for
`MultiWorkerMirroredStrategy`.
"""

import json
import os
import socket
import subprocess
import sys
import time
import warnings

import distributed_scenarios
import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import _replicas
from tfp_flows.models import FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "tests", "distributed_scenarios.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
TOLERANCE = 1e-5


# -- outside a strategy the helpers are the one-device computations --------------------------


def test_replica_helpers_outside_a_strategy_are_plain():
    x = tf.constant([[1.0, 2.0], [3.0, 5.0], [4.0, 11.0]])
    assert _replicas.replica_context() is None
    seed = tf.constant([3, 4])
    assert _replicas.replica_seed(seed) is seed
    mean, variance = _replicas.global_moments(x, axes=[0])
    expected_mean, expected_variance = tf.nn.moments(x, axes=[0])
    np.testing.assert_allclose(mean, expected_mean)
    np.testing.assert_allclose(variance, expected_variance)
    loss = _replicas.global_mean_loss(tf.constant(6.0), tf.constant(3.0), 3)
    assert float(loss) == 2.0
    assert _replicas.step_logs({"loss": tf.constant(1.0)})["loss"].shape == []


# -- MirroredStrategy: every family, a bound flow and the Distiller ---------------------------


def _run_mirrored(tmp_path_factory):
    """The mirrored scenarios in a subprocess, repeated once if a signal killed it; returns
    the finished process and its output directory (each attempt has its own).

    The process has died with a segmentation fault (return code -11) between two cases,
    rarely and only under load (about one run in eight with two runs sharing 2 cores).
    Such a run is repeated once, with a warning that shows its last output (Python's
    faulthandler adds the stack of the crash); a second crash, or any other failure, fails
    the tests.
    """
    for attempt in (1, 2):
        out = tmp_path_factory.mktemp("mirrored")
        result = subprocess.run(
            [sys.executable, "-X", "faulthandler", SCENARIOS, "mirrored", str(out)],
            capture_output=True, text=True, timeout=900, env=ENV)
        if result.returncode >= 0 or attempt == 2:
            return result, out
        warnings.warn(f"the mirrored scenarios were killed by signal {-result.returncode}; "
                      f"running them again. Their last output:\n{result.stderr[-1500:]}",
                      stacklevel=2)


@pytest.fixture(scope="module")
def mirrored_report(tmp_path_factory):
    result, out = _run_mirrored(tmp_path_factory)
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "out": out}


@pytest.mark.slow
def test_one_mirrored_step_is_one_device_step_for_every_family(mirrored_report):
    assert mirrored_report["replicas"] == 2
    cases = mirrored_report["cases"]
    expected = {f"{name}/{kind}" for name, family in FAMILIES.items()
                for kind in family.data_kinds}
    assert expected <= set(cases)
    assert {"bound (uniform dequantization)", "distiller, 7 samples",
            "realnvp/vector, 9 in batches of 4"} <= set(cases)
    for name, case in cases.items():
        # loss, val_loss, bits_per_dim, evaluate(...) (kl, log_q, log_p for the Distiller)
        assert case["numbers"], name
        for key, difference in case["numbers"].items():
            assert difference < TOLERANCE, (name, key, case["one"][key],
                                            case["mirrored"][key])
        assert case["weights"] < TOLERANCE, (name, case["weights"])
        # The step moved the weights; a doubled (or halved) update would be off by 100%.
        assert case["update"] < 1e-3, (name, case["update"])
    # Bound families (their step is compared by hand, like the uniform bound) report loss.
    for name in expected - set(mirrored_report["bound families"]):
        if not name.startswith("distiller"):
            assert {"loss", "val_loss", "bits_per_dim", "val_bits_per_dim", "evaluate_loss",
                    "evaluate_bits_per_dim"} <= set(cases[name]["numbers"]), name


@pytest.mark.slow
def test_actnorm_init_is_the_same_on_every_replica(mirrored_report):
    # Glow's ActNorms initialise in the step above from the global batch: the weights
    # match one device (previous test) and every replica holds the same values.
    assert mirrored_report["actnorm"], "no Glow case ran"
    for name, difference in mirrored_report["actnorm"].items():
        assert difference == 0.0, name


@pytest.mark.slow
def test_distiller_needs_a_sample_per_replica(mirrored_report):
    message = mirrored_report["distiller, 1 sample"]
    assert "num_samples=1" in message and "2 replicas" in message


@pytest.mark.slow
def test_actnorm_fit_initialises_under_a_mirrored_strategy(mirrored_report):
    """Two replicas initialise the ActNorm of tests/test_actnorm.py inside `fit` once."""
    from test_actnorm import _data

    result = mirrored_report["actnorm fit"]
    x = _data([64, 4], "float32")
    assert result["flag"] == 1.0
    # Each replica saw half of the first batch; the mean of their means is the batch mean.
    np.testing.assert_allclose(result["bias"], -x[:32].mean(0), rtol=1e-5)


# -- MultiWorkerMirroredStrategy: two worker processes on loopback ----------------------------


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(out, epochs, *extra):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        log = open(os.path.join(out, f"log-{index}.txt"), "a")
        workers.append(subprocess.Popen(
            [sys.executable, SCENARIOS, "worker", str(index), out, str(epochs), *extra],
            env={**ENV, "TF_CONFIG": json.dumps(config)}, stdout=log,
            stderr=subprocess.STDOUT))
        log.close()
    return workers


def _stop(workers):
    for process in workers:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _wait(workers, out, timeout):
    deadline = time.monotonic() + timeout
    for index, process in enumerate(workers):
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {index} did not finish in {timeout} s: "
                        f"{_log(out, index)[-3000:]}")
        assert process.returncode == 0, _log(out, index)[-3000:]


def _log(out, index):
    with open(os.path.join(out, f"log-{index}.txt")) as file:
        return file.read()


def _result(out, index):
    with open(os.path.join(out, f"worker-{index}.json")) as file:
        return json.load(file)


def _progress(out, index):
    path = os.path.join(out, f"progress-{index}.txt")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return file.read().split("\n")


def _one_device(epochs):
    flow, history = distributed_scenarios.tiny_flow_run(tf.distribute.get_strategy(), epochs)
    return distributed_scenarios._flat(flow), history.history


@pytest.mark.slow
def test_two_workers_train_like_one_device_and_resume_after_a_killed_worker(tmp_path):
    out, epochs = str(tmp_path), 4
    workers = _start_workers(out, epochs, "backup")
    try:
        # Both workers have backed up epoch 1 (index 1): kill one mid-run.
        deadline = time.monotonic() + 120
        while not all("end 1" in _progress(out, index) for index in range(2)):
            assert all(process.poll() is None for process in workers), _log(out, 0)[-3000:]
            assert time.monotonic() < deadline, "the workers did not reach epoch 2"
            time.sleep(0.1)
        workers[1].kill()
        workers[1].wait(timeout=30)
        assert not os.path.exists(os.path.join(out, "worker-1.json"))
    finally:
        # The cluster restarts as a whole (Keras' multi-worker guide): stop the chief too.
        _stop(workers)
    killed_at = len([line for line in _progress(out, 0) if line.startswith("end")])
    assert killed_at < epochs
    workers = _start_workers(out, epochs, "backup")
    try:
        _wait(workers, out, timeout=120)
    finally:
        _stop(workers)
    weights, history = _one_device(epochs)
    for index in range(2):
        begins = [int(line.split()[1]) for line in _progress(out, index)
                  if line.startswith("begin")]
        # The restarted run began after the backed-up epochs, not at epoch 0 again.
        assert begins.count(0) == 1, begins
        assert begins[-1] == epochs - 1 and sorted(set(begins)) == list(range(epochs))
        # Resumed from the backup, two workers end like an uninterrupted run on one
        # device: the same weights, and the same loss in every epoch they ran.
        result = _result(out, index)
        assert result["replicas"] == 2
        np.testing.assert_allclose(result["weights"], weights, rtol=0,
                                   atol=TOLERANCE * np.max(np.abs(weights)))
        for key, values in history.items():
            ran = len(result["history"][key])
            assert 0 < ran < epochs
            np.testing.assert_allclose(result["history"][key], values[-ran:], rtol=TOLERANCE)


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_distribute_mirrored_trains_like_one_device_and_resumes(mirrored_report):
    # Run in the mirrored scenario's process (two logical CPUs), into its OUT directory.
    cli = mirrored_report["cli"]
    assert cli["status"] == [0, 0, 0]
    printed, metrics = cli["printed"], cli["metrics"]
    assert "--distribute mirrored: 2 replicas in sync, a global batch of 80" in printed
    assert "--resume: continuing from 2 completed epoch(s)" in printed
    # The one-device run uses XLA and 10 steps per execution, the mirrored one neither:
    # the same up to float rounding through 8 Adam steps.
    for key in ("train_nll", "test_nll", "test_bpd"):
        assert metrics["mirrored"][key] == pytest.approx(metrics["one"][key], rel=1e-4), key
    out = mirrored_report["out"]
    mirrored = json.loads((out / "mirrored" / "metrics.json").read_text())
    for name in ("epoch-0002.keras", "epoch-0003.keras"):
        assert (out / "mirrored" / "checkpoints" / name).exists()
    assert (out / "mirrored" / "saved_model").is_dir()
    # The resumed run trained a third epoch.
    index = json.loads((out / "mirrored" / "checkpoints" / "checkpoint.json").read_text())
    assert index["completed_epochs"] == 3
    assert mirrored["initial_epoch"] == 2 and mirrored["completed_epochs"] == 3
    assert np.isfinite(mirrored["test_nll"])


def test_cli_multi_worker_needs_tf_config(tmp_path, monkeypatch):
    from tfp_flows.cli import UsageError, run
    from tfp_flows.cli.arguments import DEMO_DEFAULTS, QUICK_SETTINGS

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="TF_CONFIG"):
        run({**DEMO_DEFAULTS, **QUICK_SETTINGS}, str(tmp_path), distribute="multi-worker")
