"""The only module that imports TensorFlow Probability's private names.

Why each is needed (TFP 0.25 has no public equivalent; `setup.cfg` pins TFP to 0.25.x so
that a TFP release that moves them cannot break an installed tfp_flows silently):

- `BijectorCacheWithGreedyAttrs`: the cache TFP's own FFJORD uses to keep the log-det
  computed together with a transform. With it, `TransformedDistribution.log_prob` runs
  each conditioner once instead of twice (once for the value, once for the log-det).
- `Chain`: `tfb.Chain` is a factory around this class; `FlowChain` subclasses it to hand one
  `context` keyword to every conditional member. The public `tfb.Composition` would need
  the event-rank bookkeeping `Chain` already does, copied.
- `Invert`: `tfb.Invert(b)` returns an instance of this class (or of a composite-tensor
  subclass of it); `FlowChain` checks for it to see which bijector an `Invert` wraps.
"""

from tensorflow_probability.python.bijectors.chain import _Chain as Chain
from tensorflow_probability.python.bijectors.invert import _Invert as Invert
from tensorflow_probability.python.internal.cache_util import BijectorCacheWithGreedyAttrs

__all__ = ["BijectorCacheWithGreedyAttrs", "Chain", "Invert"]
