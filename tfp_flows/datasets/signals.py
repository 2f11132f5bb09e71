"""Generated 1-D signals (audio-like): no download, deterministic given a seed.

`damped_sinusoids` draws short "plucked" sounds, sums of a few exponentially decaying
sinusoids plus a little white noise, as a small stand-in for audio in tests, examples and
the sequence flows (`tff.models.NanoWaveFlow`). Only NumPy is needed.
"""

import numpy as np

from tfp_flows._validation import check_int, check_number, check_positive_int

__all__ = ["damped_sinusoids"]

# Frequencies of the components, in Hz: the sample rate must exceed twice the highest.
FREQUENCY_RANGE = (100.0, 1500.0)
# Decay rates of the envelopes, in 1/s: time constants from 5 to 50 ms.
DECAY_RANGE = (20.0, 200.0)
MAX_COMPONENTS = 3


def damped_sinusoids(num_examples, length=256, sample_rate=8000, noise=0.01, seed=0):
    """Sums of 1 to 3 damped sinusoids plus Gaussian noise, sampled at `sample_rate`.

    Example `n` at time `t = j / sample_rate` (`j = 0, ..., length - 1`) is

    `x_n(t) = sum_{m=1}^{M_n} (a_m / M_n) exp(-d_m t) sin(2 pi f_m t + phi_m) + noise e_j`

    with `M_n` uniform in `{1, 2, 3}`, frequency `f_m` uniform in `[100, 1500]` Hz,
    amplitude `a_m` in `[0.2, 1]`, decay rate `d_m` in `[20, 200]` per second (time
    constants of 5 to 50 ms), phase `phi_m` in `[0, 2 pi)` and `e_j` standard normal. The
    division by `M_n` keeps `|x| <= 1` apart from the noise. At 8 kHz the default 256
    samples last 32 ms.

    Args:
        num_examples: number of signals `N`.
        length: samples per signal.
        sample_rate: samples per second, above 3000 (twice the highest frequency).
        noise: standard deviation of the white noise, `>= 0`.
        seed: seed of the NumPy generator, a non-negative int.

    Returns:
        A `float32` array `[N, length]`.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.

    Example:
        >>> x = damped_sinusoids(100, length=64, seed=1)
        >>> x.shape, x.dtype.name
        ((100, 64), 'float32')
        >>> bool(np.abs(x).max() < 1.1)
        True
    """
    num_examples = check_positive_int("num_examples", num_examples)
    length = check_positive_int("length", length)
    highest = FREQUENCY_RANGE[1]
    sample_rate = check_number("sample_rate", sample_rate, minimum=2 * highest,
                               exclusive_minimum=True)
    noise = check_number("noise", noise, minimum=0.0)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    shape = (num_examples, MAX_COMPONENTS)
    count = rng.integers(1, MAX_COMPONENTS + 1, size=num_examples)
    frequency = rng.uniform(*FREQUENCY_RANGE, size=shape)
    amplitude = rng.uniform(0.2, 1.0, size=shape)
    decay = rng.uniform(*DECAY_RANGE, size=shape)
    phase = rng.uniform(0.0, 2 * np.pi, size=shape)
    # Components past an example's count get no amplitude: one vectorised sum for all.
    used = np.arange(MAX_COMPONENTS)[None, :] < count[:, None]
    amplitude = np.where(used, amplitude / count[:, None], 0.0)
    t = np.arange(length) / sample_rate
    components = (amplitude[..., None] * np.exp(-decay[..., None] * t)
                  * np.sin(2 * np.pi * frequency[..., None] * t + phase[..., None]))
    signals = components.sum(axis=1) + noise * rng.standard_normal((num_examples, length))
    return signals.astype(np.float32)
