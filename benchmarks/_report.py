"""Shared by the benchmark scripts: timing, the machine, and their sections of the page."""

import os
import platform
import time

import numpy as np

from tfp_flows._atomic import write_text

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")
HEADER = "# Benchmarks\n"


def write_section(name, text, path=PATH):
    """Replaces the block between `<!-- begin NAME -->` and `<!-- end NAME -->` (or appends
    it), writing through a temporary file so the page is never half-written. Run the
    benchmark scripts one at a time: they share the page (and the machine)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}\n"
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        current = HEADER
    if begin in current and end in current:
        before, rest = current.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        updated = before + block + ("\n" + after if after else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + block
    write_text(path, updated)


def read_section(name, path=PATH):
    """The text between `<!-- begin NAME -->` and `<!-- end NAME -->`, or `""`."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        return ""
    if begin not in current or end not in current:
        return ""
    return current.split(begin, 1)[1].split(end, 1)[0]


def machine():
    """The machine and library versions, for the record."""
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfp_flows as tff

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


def best_rate(fn, count, repeats, min_seconds):
    """Best rate (count / s) over `repeats` timings, each running `fn` for >= min_seconds."""
    fn()  # warm-up: tracing, compilation and ActNorm's data-dependent init are excluded
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
