"""The speed benchmark's conclusions come from its numbers, not from a fixed sentence."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
run = pytest.importorskip("run")


def _rows(xla_speedup):
    def row(mode, factor):
        return {"mode": mode, "train_steps_per_s": 10.0 * factor,
                "log_prob_rows_per_s": 1000.0 * factor, "samples_per_s": 500.0 * factor,
                "peak_rss_mib": 900.0}
    return [row("eager", 0.1), row("function", 1.0), row("xla", xla_speedup)]


def test_case_sentence_follows_the_numbers():
    assert "train x1.50 (faster)" in run._comparison_text(_rows(1.5))
    assert "train x0.50 (slower)" in run._comparison_text(_rows(0.5))
    assert "log_prob x1.02 (level)" in run._comparison_text(_rows(1.02))
    assert "Eager trains at x0.10" in run._comparison_text(_rows(1.0))


def test_summary_counts_the_cases():
    faster = run._defaults_text([("a", None, _rows(1.5)), ("b", None, _rows(1.3))])
    slower = run._defaults_text([("a", None, _rows(0.5)), ("b", None, _rows(1.0))])
    assert "train faster in 2, level in 0, slower in 0 of 2" in faster
    assert "XLA is faster in most cases for: train, log_prob, sampling." in faster
    assert "train faster in 0, level in 1, slower in 1 of 2" in slower
    assert "not faster in most cases for: train, log_prob, sampling" in slower
    assert faster != slower
