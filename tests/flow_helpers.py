"""Small helpers shared by test modules (imported as a plain module, like
`distributed_scenarios`)."""

import json

import numpy as np


def perturb(flow, seed=0, scale=0.3, trainable_only=False):
    """Random weights: a fresh flow is the identity, which hides most bugs.

    With `trainable_only`, noise is added to the trainable weights and the others (ActNorm
    flags, fixed LU factors) keep their values.
    """
    rng = np.random.default_rng(seed)
    if trainable_only:
        for weight in flow.trainable_weights:
            weight.assign(weight.numpy() + rng.normal(0.0, scale, weight.shape))
        return flow
    flow.set_weights([rng.normal(0.0, scale, w.shape) for w in flow.get_weights()])
    return flow


_BOUND_LOADER = r"""
import json, sys
import tensorflow as tf

request = json.loads(sys.argv[1])
model = tf.saved_model.load(request["path"])
x = tf.constant(request["x"], tf.float32)
results = {
    "iwbo": model.log_prob(x, tf.constant(request["num_samples"]),
                           tf.constant(3)).numpy().tolist(),
    "elbo": model.log_prob(x, tf.constant(1), tf.constant(3)).numpy().tolist(),
    "sample": model.sample(tf.constant(4), tf.constant(7), tf.constant(1.0)).numpy().tolist(),
    "imported": sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tfp_flows", "tensorflow_probability")),
}
print("RESULTS" + json.dumps(results))
"""


def load_exported_bound(path, x, num_samples, python_without_tfp_flows):
    """Evaluates a bound flow's SavedModel at `path` in a process that never imports
    tfp_flows (the `python_without_tfp_flows` fixture of conftest.py).

    Returns a dict: `iwbo` (`log_prob(x, num_samples, seed=3)`), `elbo`
    (`log_prob(x, 1, seed=3)`), `sample` (`sample(4, seed=7, temperature=1.0)`) and
    `imported` (the tfp_flows and TFP modules the process imported: none, if it works).
    """
    request = {"path": path, "x": np.asarray(x).tolist(), "num_samples": num_samples}
    done = python_without_tfp_flows.run(_BOUND_LOADER, json.dumps(request))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULTS", 1)[1])


_LOADER = r"""
import json, sys
import tensorflow as tf
request = json.loads(sys.argv[1])
model = tf.saved_model.load(request["path"])
x = tf.constant(request["x"], tf.float32)
print("RESULTS" + json.dumps({
    "log_prob": model.log_prob(x).numpy().tolist(),
    "sample": model.sample(tf.constant(3), tf.constant(5), tf.constant(0.7)).numpy().tolist(),
    "imported": sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tfp_flows", "tensorflow_probability")),
}))
"""


def load_exported(path, x, python_without_tfp_flows):
    """Evaluates a flow's SavedModel at `path` in a process that never imports tfp_flows.

    Returns a dict: `log_prob` (of `x`), `sample` (`sample(3, seed=5, temperature=0.7)`)
    and `imported` (the tfp_flows and TFP modules the process imported: none, if it works).
    """
    request = {"path": path, "x": np.asarray(x).tolist()}
    done = python_without_tfp_flows.run(_LOADER, json.dumps(request))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULTS", 1)[1])
