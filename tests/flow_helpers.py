"""Small helpers shared by test modules (imported as a plain module, like
`distributed_scenarios`)."""

import numpy as np


def perturb(flow, seed=0, scale=0.3):
    """Random weights: a fresh flow is the identity, which hides most bugs."""
    rng = np.random.default_rng(seed)
    flow.set_weights([rng.normal(0.0, scale, w.shape) for w in flow.get_weights()])
    return flow
