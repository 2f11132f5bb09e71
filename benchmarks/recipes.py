"""Training recipes with targets: run each one as a user would, time it, check its results.

Each recipe runs the `tfp-flows` command in a fresh process on this machine (nothing else
should run meanwhile) and is timed from start to exit, imports and compilation included.
The exit status is 1 if a target is missed. With `--write` the results replace the recipes
section of `docs/benchmarks.md` (with `--only`, that recipe's row; the others are kept).

Usage: python benchmarks/recipes.py [--write] [--only NAME]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _report import machine, read_section, write_section

RECIPES = {
    "glow_digits": dict(
        title="Glow on the offline 8x8 digits (17 levels), `tfp-flows train` defaults",
        command=["train", "--model", "glow", "--dataset", "digits", "--verbose", "2"],
        # Issue targets: test bits/dim of the discrete digits and wall time on 2 CPU cores.
        targets={"test_bpd": 2.20, "wall_seconds": 600.0}),
    "flowpp_digits": dict(
        title="Flow++ on the offline 8x8 digits (17 levels), `tfp-flows train` defaults "
              "(test bpd by the IWBO with 64 samples)",
        command=["train", "--model", "flowpp", "--dataset", "digits", "--verbose", "2"],
        # Issue targets: below Glow's test bits/dim above, within 15 minutes on 2 CPU cores.
        targets={"test_bpd": 2.098, "wall_seconds": 900.0}),
    "denseflow_digits": dict(
        title="DenseFlow on the offline 8x8 digits (17 levels), `tfp-flows train` defaults "
              "(test bpd by the IWBO with 64 samples)",
        command=["train", "--model", "denseflow", "--dataset", "digits", "--verbose", "2"],
        # Issue targets: below Glow's test bits/dim above, within 15 minutes on 2 CPU cores.
        targets={"test_bpd": 2.098, "wall_seconds": 900.0}),
}


def run_recipe(recipe, out):
    """Runs one recipe into `out`; returns its measured results."""
    command = [sys.executable, "-m", "tfp_flows.cli", *recipe["command"], "--out", out]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall_seconds = time.perf_counter() - start
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    results = {"wall_seconds": wall_seconds, "train_bpd": metrics["train_bpd"],
               "test_bpd": metrics["test_bpd"], "samples_finite": metrics["samples_finite"],
               "sample_temperature": metrics["sample_temperature"],
               "epochs": metrics["completed_epochs"]}
    missed = [f"{key} {results[key]:.3f} > {limit}" for key, limit in recipe["targets"].items()
              if results[key] > limit]
    if not results["samples_finite"]:
        missed.append("non-finite samples")
    return {**results, "missed": missed}


def _row(recipe, result):
    targets = ", ".join(f"{key} <= {limit:g}" for key, limit in recipe["targets"].items())
    return (f"| {recipe['title']} | `tfp-flows {' '.join(recipe['command'])} --out DIR` | "
            f"{result['epochs']} | {result['wall_seconds']:.0f} s | {result['train_bpd']:.3f} "
            f"| {result['test_bpd']:.3f} | {'all' if result['samples_finite'] else 'no'} "
            f"(T={result['sample_temperature']:g}) | {targets} | "
            f"{'yes' if not result['missed'] else 'no: ' + '; '.join(result['missed'])} |")


def _kept_rows(run):
    """Rows of the recorded table for the recipes not in `run`, by recipe name."""
    kept = {}
    for line in read_section("recipes").splitlines():
        for name, recipe in RECIPES.items():
            if name not in run and f"`tfp-flows {' '.join(recipe['command'])} " in line:
                kept[name] = line
    return kept


def markdown(rows, kept=None):
    lines = ["## Training recipes", "",
             "Measured by `python benchmarks/recipes.py --write`: each recipe is the "
             "`tfp-flows` command a user would type, run once in a fresh process and timed "
             "from start to exit (imports, data, XLA compilation, training, evaluation, "
             "samples and export). Bits per dimension are those of the discrete data "
             "(see the Image data page); samples are drawn at the temperature shown.", "",
             "| recipe | command | epochs | wall time | train bpd | test bpd | finite samples "
             "| targets | met |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]
    measured = {name: _row(recipe, result) for name, recipe, result in rows}
    lines += [measured.get(name) or (kept or {}).get(name) for name in RECIPES
              if name in measured or name in (kept or {})]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--only", choices=sorted(RECIPES))
    args = parser.parse_args()
    rows = []
    for name, recipe in RECIPES.items():
        if args.only in (None, name):
            with tempfile.TemporaryDirectory() as out:
                rows.append((name, recipe, run_recipe(recipe, out)))
            print(json.dumps({"recipe": name, **rows[-1][2]}), flush=True)
    text = markdown(rows, _kept_rows({name for name, _, _ in rows}) if args.only else None)
    print(text)
    if args.write:
        write_section("recipes", text)
    return 1 if any(result["missed"] for _, _, result in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
