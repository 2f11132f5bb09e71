"""What a `tfp-flows` run writes after training: plots, the SavedModel and `metrics.json`.

Each output is written atomically (temporary file, then `os.replace`), and `metrics.json`
comes last, so an interrupted run never leaves a half-written file or metrics of outputs
that are missing.
"""

import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows._atomic import write_json
from tfp_flows.cli.data import EVAL_BATCH_SIZE, dequantizes_itself, evaluation_batches
from tfp_flows.datasets import plot_density, plot_image_grid, plot_samples
from tfp_flows.distributions import uniform_dequantize
from tfp_flows.training import bits_per_dim

__all__ = ["EVAL_BATCH_SIZE", "NUM_IMAGE_SAMPLES", "NUM_SAMPLES", "mean_nll", "write_outputs"]

NUM_SAMPLES = 5000
NUM_IMAGE_SAMPLES = 64


def eval_batch_size(flow, num_samples=None):
    """Examples per `log_prob` call: a bound flow with `k` samples evaluates `k` times as
    many latents per example, so it takes `EVAL_BATCH_SIZE // k` (at least one)."""
    return max(1, EVAL_BATCH_SIZE // (num_samples or flow.num_eval_samples))


def mean_nll(flow, x, dequantize_seed=None, num_samples=None):
    """Mean negative log-likelihood of `x` in nats, in float64, evaluated in batches.

    `x` is an array, or a `tf.data.Dataset` of batches (streamed, never held whole). With
    `dequantize_seed`, an integer array `x` is dequantized batch by batch (seeded by the
    seed and the batch), so no float copy of the whole set is made.
    """
    log_probs = []
    if isinstance(x, tf.data.Dataset):
        for batch in x:
            log_probs.append(flow.log_prob(batch, num_samples=num_samples).numpy()
                             .astype(np.float64))
        return float(-np.mean(np.concatenate(log_probs)))
    step = eval_batch_size(flow, num_samples)
    for start in range(0, len(x), step):
        batch = x[start:start + step]
        if dequantize_seed is not None:
            batch = uniform_dequantize(batch, seed=[dequantize_seed, start]).numpy()
        log_probs.append(flow.log_prob(batch, num_samples=num_samples).numpy()
                         .astype(np.float64))
    return float(-np.mean(np.concatenate(log_probs)))


def _image_outputs(flow, data, settings, out, temperature):
    """Plots sampled images; returns `(train_nll, samples, nll_units)`."""
    seed = None if dequantizes_itself(flow) else settings["seed"] + 2
    # A bound flow's training set is scored by the ELBO, its training objective: the IWBO
    # costs k passes per image (the test set gets it).
    num_samples = None if flow.surjection is None else 1
    train = evaluation_batches(data, "train", seed,
                               batch_size=eval_batch_size(flow, num_samples))
    train_nll = mean_nll(flow, train, dequantize_seed=seed, num_samples=num_samples)
    samples = flow.sample(NUM_IMAGE_SAMPLES, temperature=temperature,
                          seed=settings["seed"]).numpy()
    plot_image_grid(samples, os.path.join(out, "samples.png"), data.num_bins,
                    data=data.test_levels,
                    title=f"{settings['model']} samples (T={temperature:g})")
    units = ("nats per image, probability of the discrete grey levels (by the bound named "
             "in log_prob_estimator)" if seed is None else
             "nats per image, density over the dequantized grey levels (one level wide)")
    return train_nll, samples, units


def _toy_outputs(flow, data, settings, out):
    """Plots the density and samples; returns `(train_nll, samples, nll_units)`."""
    train_nll = mean_nll(flow, data.train)
    samples = flow.sample(NUM_SAMPLES, seed=settings["seed"]).numpy()
    plot_density(flow.log_prob, data.test, os.path.join(out, "density.png"),
                 title=f"{settings['model']} density")
    plot_samples(samples, os.path.join(out, "samples.png"), data=data.test,
                 title=f"{settings['model']} samples")
    # A --standardize step's log-det is counted: the density is the data's either way.
    units = "nats per example in the dataset's generated coordinates"
    return train_nll, samples, units


def versions():
    """The versions of tfp_flows, the libraries it runs on and Python."""
    import tfp_flows

    return {"tfp_flows": tfp_flows.__version__, "tensorflow": tf.__version__,
            "tensorflow_probability": tfp.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def write_outputs(flow, data, settings, out, *, start, train_seconds, initial_epoch,
                  temperature=1.0):
    """Evaluates the trained `flow`, writes every output into `out`; returns the metrics.

    Args:
        flow: the trained flow.
        data: the run's `RunData`.
        settings: the run's settings (recorded in the metrics).
        out: output directory.
        start: `time.perf_counter()` at the start of the run.
        train_seconds: seconds from `start` to the end of training.
        initial_epoch: epochs complete before this process trained (after `--resume`).
        temperature: temperature of the sampled images.
    """
    if data.is_image:
        train_nll, samples, units = _image_outputs(flow, data, settings, out, temperature)
    else:
        train_nll, samples, units = _toy_outputs(flow, data, settings, out)
    test_seed = None if dequantizes_itself(flow) else settings["seed"] + 1
    test = evaluation_batches(data, "test", test_seed, batch_size=eval_batch_size(flow))
    test_nll = mean_nll(flow, test)
    flow.export(os.path.join(out, "saved_model"))
    space = ({} if data.num_bins is None
             else {"num_bins": data.num_bins, "density_space": "bins"})
    bpd = lambda nll: float(bits_per_dim(nll, flow.num_dims, **space))  # noqa: E731
    metrics = {
        **settings,
        "train_nll": train_nll,
        "test_nll": test_nll,
        "train_bpd": bpd(train_nll),
        "test_bpd": bpd(test_nll),
        "nll_units": units,
        # "exact", or for a flow whose density is a bound the estimator and its samples.
        "log_prob_estimator": flow.log_prob_estimator,
        "train_log_prob_estimator": ("elbo" if flow.surjection is not None and data.is_image
                                     else flow.log_prob_estimator),
        "num_bins": data.num_bins,
        "num_train": data.num_train,
        "num_test": data.num_test,
        "num_samples": len(samples),
        "sample_temperature": temperature if data.is_image else 1.0,
        "samples_finite": bool(np.all(np.isfinite(samples))),
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "initial_epoch": initial_epoch,
        "completed_epochs": max(initial_epoch, settings["epochs"]),
        "versions": versions(),
    }
    write_json(os.path.join(out, "metrics.json"), metrics)
    return metrics
