"""Density distillation at event size 64: a MAF teacher, an IAF student, their sampling rates.

The teacher is a MAF fitted by maximum likelihood to the offline 8x8 digits, flattened to
64 dimensions, dequantized and scaled to [0, 1) (NLL in nats per example in those
coordinates). The student is an IAF of the same architecture distilled from it with
`tff.training.Distiller` (reverse KL, no data). Sampling rates are the best of several
timed batches after a warm-up. The exit status is 1 if the student samples less than
`--target` times as fast as the teacher. With `--write` the results replace the
distillation section of `docs/benchmarks.md`.

Usage: python benchmarks/distillation.py [--write] [--smoke]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _report import best_rate, machine, write_section  # noqa: E402

import tfp_flows as tff  # noqa: E402

SETTINGS = dict(num_layers=5, hidden_units=[256, 256], teacher_epochs=60, batch_size=128,
                distill_steps=3000, num_samples=256, sample_batch=512, repeats=3,
                min_seconds=2.0)
SMOKE = dict(num_layers=2, hidden_units=[16], teacher_epochs=1, distill_steps=5,
             sample_batch=16, repeats=1, min_seconds=0.1)


def _digits():
    """`(train, test)` digits as `[N, 64]` float32 in [0, 1): levels + uniform noise, / 17."""
    train, test = tff.datasets.load_digits(seed=0)
    levels = tff.datasets.DIGITS_NUM_BINS

    def prepare(images, seed):
        flat = images.reshape(len(images), -1)
        return (tff.distributions.uniform_dequantize(flat, seed=seed).numpy() / levels)

    return prepare(train, 0), prepare(test, 1)


def _schedule(rate, steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, steps),
                                 global_clipnorm=1.0)


def _sampling_rates(flow, settings):
    """Samples per second of `flow.bijector.forward` in a graph and under XLA."""
    noise = np.random.default_rng(0).normal(
        size=[settings["sample_batch"], *flow.event_shape]).astype("float32")
    timing = dict(repeats=settings["repeats"], min_seconds=settings["min_seconds"])
    rates = {}
    for mode, jit in (("function", False), ("xla", True)):
        forward = tf.function(flow.bijector.forward, jit_compile=jit)
        # Fresh tensors each call: TFP's bijector cache would return the previous result.
        rates[mode] = best_rate(lambda f=forward: f(tf.constant(noise)),
                                settings["sample_batch"], **timing)
    return rates


def run(settings):
    keras.utils.set_random_seed(0)
    train, test = _digits()
    architecture = dict(num_layers=settings["num_layers"],
                        hidden_units=settings["hidden_units"])
    start = time.perf_counter()
    teacher = tff.models.MAF([64], **architecture)
    steps = settings["teacher_epochs"] * (len(train) // settings["batch_size"])
    teacher.compile(optimizer=_schedule(1e-3, steps))
    teacher.fit(train, batch_size=settings["batch_size"], epochs=settings["teacher_epochs"],
                verbose=0)
    teacher_seconds = time.perf_counter() - start

    start = time.perf_counter()
    student = tff.models.IAF([64], **architecture)
    distiller = tff.training.Distiller(teacher, student, num_samples=settings["num_samples"],
                                       seed=0)
    distiller.compile(optimizer=_schedule(1e-3, settings["distill_steps"]))
    distiller.fit(epochs=1, steps_per_epoch=settings["distill_steps"], verbose=0)
    distill_seconds = time.perf_counter() - start

    estimate = distiller.estimate(num_samples=10000, seed=1)
    teacher_rates = _sampling_rates(teacher, settings)
    student_rates = _sampling_rates(student, settings)
    return {
        "teacher_test_nll": -float(np.mean(teacher.log_prob(test))),
        "student_test_nll": -float(np.mean(student.log_prob(test))),
        "kl": estimate["kl"],
        "student_samples_nll_under_teacher": -estimate["log_p"],
        "teacher_fit_seconds": teacher_seconds,
        "distill_seconds": distill_seconds,
        "teacher_samples_per_s": teacher_rates,
        "student_samples_per_s": student_rates,
        "speedup": {mode: student_rates[mode] / teacher_rates[mode] for mode in teacher_rates},
    }


def markdown(result, settings, target):
    layers, units = settings["num_layers"], "x".join(map(str, settings["hidden_units"]))
    met = min(result["speedup"].values()) >= target
    lines = [
        "## Density distillation", "",
        "Measured by `python benchmarks/distillation.py --write`. Teacher: "
        f"`MAF([64], num_layers={layers})` with MADE {units}, fitted by maximum likelihood "
        f"for {settings['teacher_epochs']} epochs to the 1,437 training digits (flattened "
        "to 64 dimensions, dequantized, divided by 17). Student: `IAF` of the same "
        "architecture, distilled with `tff.training.Distiller` for "
        f"{settings['distill_steps']} steps of {settings['num_samples']} samples. NLLs are "
        "in nats per example in the [0, 1) coordinates, on the 360 test digits; the KL is "
        "estimated from 10,000 student samples. Sampling: `bijector.forward` on batches of "
        f"{settings['sample_batch']}, best of {settings['repeats']} timings.", "",
        "| flow | test NLL | samples/s (function) | samples/s (xla) | training |",
        "|---|---:|---:|---:|---:|",
        f"| MAF teacher | {result['teacher_test_nll']:.2f} | "
        f"{result['teacher_samples_per_s']['function']:,.0f} | "
        f"{result['teacher_samples_per_s']['xla']:,.0f} | "
        f"fit {result['teacher_fit_seconds']:.0f} s |",
        f"| IAF student | {result['student_test_nll']:.2f} | "
        f"{result['student_samples_per_s']['function']:,.0f} | "
        f"{result['student_samples_per_s']['xla']:,.0f} | "
        f"distilled {result['distill_seconds']:.0f} s |", "",
        f"Student sampling speedup: {result['speedup']['function']:.1f}x (function), "
        f"{result['speedup']['xla']:.1f}x (xla); target >= {target:g}x: "
        f"{'met' if met else 'missed'}. KL(student || teacher) estimate: "
        f"{result['kl']:.2f} nats; NLL of the student's samples under the teacher: "
        f"{result['student_samples_nll_under_teacher']:.2f} nats.", "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()), ""]
    return "\n".join(lines), met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--target", type=float, default=10.0,
                        help="required sampling speedup of the student (default: 10)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write and args.smoke:
        parser.error("--smoke results are not benchmarks; run without --write")
    settings = {**SETTINGS, **(SMOKE if args.smoke else {})}
    result = run(settings)
    print(json.dumps(result), flush=True)
    text, met = markdown(result, settings, args.target)
    print(text)
    if args.write:
        write_section("distillation", text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
