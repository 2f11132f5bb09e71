"""Fit a RealNVP to two moons, report its test likelihood and plot what it learned.

    python examples/two_moons_realnvp.py              # about a minute on 2 CPU cores
    python examples/two_moons_realnvp.py --epochs 1 --num-points 2000   # a smoke test

Writes `two_moons_density.png` and `two_moons_samples.png` into `--out`. With the
defaults the test NLL is about 0.3 nats (the density's entropy is about 0.26 nats).
"""

import argparse
import os

import keras
import tensorflow as tf

import tfp_flows as tff


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--num-points", type=int, default=20000)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    # Points in scikit-learn's two-moons coordinates (O(1), not standardised): the NLL
    # printed below is in nats per example in these coordinates.
    x_train, x_test = tff.datasets.load_toy("two_moons", args.num_points, test_fraction=0.2)

    # Many small couplings fit the thin moons better than a few wide ones.
    flow = tff.models.RealNVP(event_shape=[2], num_layers=16, hidden_units=[64, 64])
    batch_size = min(256, len(x_train))
    steps = args.epochs * (len(x_train) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps)
    # Clipping keeps a rare huge gradient from undoing what was learned.
    flow.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0),
                 jit_compile=True)
    # Dropping the last partial batch keeps one batch shape, so XLA compiles once.
    batches = (tf.data.Dataset.from_tensor_slices(x_train).shuffle(len(x_train), seed=0)
               .batch(batch_size, drop_remainder=True))
    flow.fit(batches, epochs=args.epochs, shuffle=False, verbose=2)

    test_nll = -float(tf.reduce_mean(flow.log_prob(x_test)))
    print(f"test NLL: {test_nll:.4f} nats per example")

    os.makedirs(args.out, exist_ok=True)
    tff.datasets.plot_density(flow.log_prob, x_test,
                              os.path.join(args.out, "two_moons_density.png"))
    samples = flow.sample(2000, temperature=1.0, seed=0)
    tff.datasets.plot_samples(samples.numpy(), os.path.join(args.out, "two_moons_samples.png"),
                              data=x_test)


if __name__ == "__main__":
    main()
