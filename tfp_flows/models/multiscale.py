"""The multi-scale recursion that RealNVP, Glow and later image families share.

A multi-scale family supplies its steps; this module supplies the rest: squeeze, the
family's steps, factor out half of the channels (optionally through a learned prior),
recurse on the kept half, unsqueeze.

**Direction convention.** Every list of bijectors here, the ones the family's callables
return and the members of the chains built from them, is in **data -> noise** order: the
order in which data meets the bijectors when `log_prob` normalises it (the inverse pass).
This is also the order in which `tfp.bijectors.Chain` (and `FlowChain`) lists its members:
`FlowChain([b_0, b_1])` maps data with `b_1^{-1}(b_0^{-1}(x))` and samples with
`b_0(b_1(z))`. A bijector in such a list is written as its sampling (forward) map, so the
squeeze of the data -> noise direction is `tfb.Invert(Squeeze(shape))`.
"""

import tensorflow_probability as tfp

from tfp_flows import bijectors
from tfp_flows._validation import check_bool, check_choice, check_positive_int
from tfp_flows.bijectors.base import check_event_shape

__all__ = ["CREATION_ORDERS", "multiscale_bijector"]

CREATION_ORDERS = ("data_to_noise", "noise_to_data")


def _level_name(level):
    return f"level_{level}"


def _call_hook(hook, hook_name, shape, level, allow_none=False):
    """Calls `hook(shape, level)`; checks it returns shape-preserving bijectors."""
    result = hook(list(shape), level)
    if result is None and allow_none:
        return []
    members = [result] if allow_none else result
    if not isinstance(members, list | tuple) or not all(
            isinstance(b, tfp.bijectors.Bijector) for b in members):
        expected = "a tfp.bijectors.Bijector or None" if allow_none else \
            "a list of tfp.bijectors.Bijector"
        raise TypeError(f"{hook_name} must return {expected}, got {result!r} for level {level}")
    for bijector in members:
        output = bijector.forward_event_shape(shape).as_list()
        if output != list(shape):
            raise ValueError(f"{hook_name} must return bijectors that keep the event shape "
                             f"{list(shape)} of level {level}, but {bijector.name} maps it to "
                             f"{output}")
    return list(members)


def multiscale_bijector(event_shape, num_levels, steps, steps_before_squeeze=None,
                        factor_out_prior=None, squeeze_last_level=True,
                        creation_order="data_to_noise"):
    """Builds a multi-scale flow from a family's steps, as one shape-preserving bijector.

    Level `i` on an input of shape `[h, w, c]` is, in the data -> noise direction:

    1. `steps_before_squeeze([h, w, c], i)`, if given;
    2. a squeeze `[h, w, c] -> [h/2, w/2, 4c]` (bijector `level_{i}_squeeze`);
    3. `steps([h/2, w/2, 4c], i)`;
    4. on every level but the last, `factor_out_prior([h/2, w/2, 4c], i)`, if given: a
       bijector that leaves the first `2c` channels alone and normalises the last `2c`
       given them (Glow's learned prior, `eps = (z_2 - mu(z_1)) * exp(-log_sigma(z_1))`);
    5. on every level but the last, the factor-out (`level_{i}_split`, a
       `SplitChannels`): the first `2c` channels go on through level `i + 1`, the last `2c`
       leave the flow, modelled by the standard Normal base from here on;
    6. an unsqueeze back to `[h, w, c]` (bijector `level_{i}_unsqueeze`).

    With `squeeze_last_level=False` the last level has neither squeeze nor unsqueeze: its
    `steps_before_squeeze` and `steps` both act on its input shape (RealNVP's last scale).
    Level `i` is the chain `level_{i}`; the returned bijector is `level_0`, which contains
    the others. It maps `event_shape` to `event_shape`, so a flow built on it keeps one
    standard Normal base over the data's shape, and the log-dets of all levels add up.

    The callables say what one step and one level are; everything else is here. Each
    takes `(shape, level)` (the event shape it acts on, a list, and the level index from
    0, the finest) and returns its bijectors in data -> noise order, each keeping `shape`.
    Name them `level_{level}_...` (for example `f"level_{level}_step_{k}"`), the scheme of
    the bijectors made here. The callables create the family's Keras layers; the family
    keeps those layers as attributes of its `Flow` model, or Keras does not track them.

    Building a new family (Flow++, DenseFlow, NanoFlow, ...) is then writing its step:

    ```python
    class MyFlow(Flow):
        def __init__(self, event_shape, num_levels=2, num_steps=4, **kwargs):
            super().__init__(event_shape, **kwargs)
            self.num_steps = num_steps
            self.conditioners = []  # Keras tracks the layers appended to this list
            level_0 = multiscale_bijector(self.event_shape, num_levels, self._steps)
            self._set_bijectors([level_0])

        def _steps(self, shape, level):  # what one level is: num_steps of my step
            return [self._coupling(shape, f"level_{level}_step_{k}", parity=k % 2)
                    for k in range(self.num_steps)]
    ```

    where `_coupling` (what one step is) creates a conditioner, appends it to
    `self.conditioners` and returns the coupling bijector on `shape`.

    References: Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
    arXiv:1605.08803 (section 3.6, the multi-scale architecture); Kingma, Dhariwal, "Glow:
    Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039 (section 3,
    levels with split priors).

    Args:
        event_shape: `[H, W, C]`; `H` and `W` divisible by `2 ** S` with `S` the number of
            levels that squeeze (`num_levels`, or `num_levels - 1` with
            `squeeze_last_level=False`).
        num_levels: number of levels `L >= 1`.
        steps: `(shape, level) -> list of bijectors` acting on the squeezed shape (on the
            input shape on a last level that does not squeeze).
        steps_before_squeeze: `None` or `(shape, level) -> list of bijectors` acting on
            the level's input shape, before its squeeze.
        factor_out_prior: `None` or `(shape, level) -> bijector or None`, run before each
            factor-out on the squeezed shape.
        squeeze_last_level: whether the last level squeezes (Glow) or not (RealNVP).
        creation_order: the order in which the callables are called, which is the order in
            which they create Keras layers (and so the order of the model's `weights`, of
            its checkpoints and of any per-layer seed): `"data_to_noise"` (level 0 first,
            and within a level `steps_before_squeeze`, `steps`, `factor_out_prior`, then the
            deeper levels) or `"noise_to_data"`, the reverse (deepest level first; Glow's
            order; a callable that makes several steps then creates them last step
            first, as Glow's does). The bijectors are the same either way.

    Returns:
        A `FlowChain` named `level_0` that maps `event_shape` to itself.

    Raises:
        TypeError: a callable is not callable, returns something other than bijectors, or
            an argument has the wrong type.
        ValueError: `event_shape` is not an image shape divisible as above, `num_levels` is
            not positive, `creation_order` is unknown, or a step changes its event shape.

    Example:
        >>> import numpy as np
        >>> import tensorflow_probability as tfp
        >>> def steps(shape, level):  # a toy step: scale everything by 2 on every level
        ...     return [tfp.bijectors.Scale(2.0, name=f"level_{level}_scale")]
        >>> bijector = multiscale_bijector([4, 4, 1], 2, steps)
        >>> [b.name for b in bijector.bijectors]
        ['level_0_squeeze', 'level_0_scale', 'level_0_split', 'level_0_unsqueeze']
        >>> z = bijector.inverse(np.ones([1, 4, 4, 1], "float32"))
        >>> sorted(set(z.numpy().ravel().tolist()))  # factored out: / 2; kept: / 4
        [0.25, 0.5]
    """
    event_shape = check_event_shape(event_shape, ranks=(3,))
    num_levels = check_positive_int("num_levels", num_levels)
    squeeze_last_level = check_bool("squeeze_last_level", squeeze_last_level)
    check_choice("creation_order", creation_order, CREATION_ORDERS)
    for hook_name, hook in (("steps", steps), ("steps_before_squeeze", steps_before_squeeze),
                            ("factor_out_prior", factor_out_prior)):
        if not callable(hook) and (hook is not None or hook_name == "steps"):
            raise TypeError(f"{hook_name} must be a callable (shape, level) -> bijectors, "
                            f"got {hook!r}")
    num_squeezes = num_levels if squeeze_last_level else num_levels - 1
    size = 2 ** num_squeezes
    if event_shape[0] % size or event_shape[1] % size:
        raise ValueError(f"{num_levels} levels ({num_squeezes} squeezes) need height and "
                         f"width divisible by {size}, got event_shape {event_shape}")

    def level_bijector(shape, level):
        name = _level_name(level)
        last = level + 1 == num_levels
        squeezes = squeeze_last_level or not last
        squeezed = bijectors.Squeeze(shape).output_event_shape if squeezes else shape
        keep = squeezed[-1] // 2

        def before():
            if steps_before_squeeze is None:
                return []
            return _call_hook(steps_before_squeeze, "steps_before_squeeze", shape, level)

        def main():
            return _call_hook(steps, "steps", squeezed, level)

        def prior():
            if last or factor_out_prior is None:
                return []
            return _call_hook(factor_out_prior, "factor_out_prior", squeezed, level,
                              allow_none=True)

        def split():
            if last:
                return []
            deeper = level_bijector([*squeezed[:-1], keep], level + 1)
            return [bijectors.SplitChannels(deeper, squeezed, keep, name=f"{name}_split")]

        # Each part is built once; only the order of the calls depends on creation_order.
        parts = {}
        order = [("before", before), ("main", main), ("prior", prior), ("split", split)]
        if creation_order == "noise_to_data":
            order.reverse()
        for key, build in order:
            parts[key] = build()
        members = list(parts["before"])
        if squeezes:
            members.append(tfp.bijectors.Invert(bijectors.Squeeze(shape),
                                                name=f"{name}_squeeze"))
        members += parts["main"] + parts["prior"] + parts["split"]
        if squeezes:
            members.append(bijectors.Squeeze(shape, name=f"{name}_unsqueeze"))
        return bijectors.FlowChain(members, name=name)

    return level_bijector(event_shape, 0)
