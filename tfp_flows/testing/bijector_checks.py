"""`check_bijector`: the contract every bijector must satisfy, as one assertion helper."""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["DEFAULT_TOLERANCES", "check_bijector", "discover_trainable_variables"]

# (rtol, atol) per dtype. float32 has to absorb the error of several stacked couplings whose
# scales reach exp(log_scale_bound), and XLA's reassociation of sums.
DEFAULT_TOLERANCES = {
    tf.float64: (1e-7, 1e-8),
    tf.float32: (1e-3, 1e-4),
}

_MODES = ("eager", "function", "jit")


def discover_trainable_variables(bijector):
    """Returns the trainable variables a bijector reaches, deduplicated, in discovery order.

    Keras 3 layers are not `tf.Module`s, so `bijector.trainable_variables` misses every
    weight held by a Keras conditioner. This walks the bijector's attributes (and nested
    bijectors, lists, tuples and dicts) and collects `trainable_weights` of Keras layers,
    `trainable_variables` of `tf.Module`s, and trainable variables held directly.

    Keras layers create their weights on first call: call the bijector once before this.
    A `tf.Variable` that backs a Keras variable found here (as `FlowChain.expose_variables`
    lists them) counts as that Keras variable, which is the one returned.

    Args:
        bijector: a `tfp.bijectors.Bijector` (or any object holding layers and variables).

    Returns:
        A list of `keras.Variable`s and `tf.Variable`s.
    """
    found, seen_vars, seen_objects = [], {}, set()

    def add(variable):
        if not getattr(variable, "trainable", False):
            return
        keras_variable = isinstance(variable, keras.Variable)
        # A Keras variable and the tf.Variable behind it are one variable.
        key = id(variable.value) if keras_variable else id(variable)
        if key not in seen_vars:
            seen_vars[key] = len(found)
            found.append(variable)
        elif keras_variable and not isinstance(found[seen_vars[key]], keras.Variable):
            found[seen_vars[key]] = variable

    def walk(obj):
        if id(obj) in seen_objects:
            return
        seen_objects.add(id(obj))
        if isinstance(obj, keras.Variable | tf.Variable):
            add(obj)
        elif isinstance(obj, keras.layers.Layer):
            for variable in obj.trainable_weights:
                add(variable)
        elif isinstance(obj, dict):
            for value in list(obj.values()):
                walk(value)
        elif isinstance(obj, list | tuple):
            for value in obj:
                walk(value)
        elif isinstance(obj, tf.Module):
            for variable in obj.trainable_variables:
                add(variable)
            # A Keras layer is invisible to tf.Module's own walk: look in the attributes.
            for value in list(vars(obj).values()):
                walk(value)

    walk(bijector)
    return found


def _call_kwargs(context):
    return {} if context is None else {"context": context}


def _flatten_event(tensor, event_ndims):
    batch = tf.shape(tensor)[:tf.rank(tensor) - event_ndims]
    return tf.reshape(tensor, tf.concat([batch, [-1]], axis=0))


def _nll(values, log_det, event_ndims):
    """`mean(0.5 * |values|^2 - log_det)`, the standard-normal NLL up to a constant."""
    squared = tf.reduce_sum(_flatten_event(values, event_ndims) ** 2, axis=-1)
    return tf.reduce_mean(0.5 * squared - log_det)


def _log_det(bijector, method, value, event_ndims, kwargs):
    log_det = getattr(bijector, method)(value, event_ndims=event_ndims, **kwargs)
    # Constant-Jacobian bijectors (Permute, Scale by a scalar) return a scalar.
    return tf.broadcast_to(log_det, tf.shape(value)[:1])


def _reference(bijector, x, context, event_ndims, inverse_event_ndims, jacobian):
    """Eager reference values, each computed from scratch (no cache involved).

    `autodiff log-det` is `log|det J|` of the forward map from `batch_jacobian` on the
    flattened event (`slogdet` has no XLA kernel, so it is computed once, eagerly); `fresh
    fldj` and `fresh ildj` are the log-det methods called on tensors no transform has seen.
    """
    kwargs = _call_kwargs(context)
    out = {}
    y = bijector.forward(tf.identity(x), **kwargs)
    out["fresh fldj"] = _log_det(bijector, "forward_log_det_jacobian", tf.identity(x),
                                 event_ndims, kwargs).numpy()
    out["fresh ildj"] = _log_det(bijector, "inverse_log_det_jacobian", tf.identity(y),
                                 inverse_event_ndims, kwargs).numpy()
    if jacobian:
        x_flat = _flatten_event(x, event_ndims)
        # A loop of backward passes is cheaper than tracing pfor for a few rows.
        use_pfor = x_flat.shape[-1] > 16
        with tf.GradientTape(persistent=not use_pfor) as tape:
            tape.watch(x_flat)
            # A tensor born inside the tape: a cache hit would return a result without
            # gradient.
            x_in = tf.reshape(tf.identity(x_flat), tf.shape(x))
            y_flat = _flatten_event(bijector.forward(x_in, **kwargs), inverse_event_ndims)
        matrix = tape.batch_jacobian(y_flat, x_flat, experimental_use_pfor=use_pfor)
        if matrix.shape[-1] != matrix.shape[-2]:
            raise AssertionError(
                f"check_bijector({bijector.name}): forward maps an event of size "
                f"{matrix.shape[-1]} to one of size {matrix.shape[-2]}; not a bijection")
        out["autodiff log-det"] = tf.linalg.slogdet(matrix)[1].numpy()
    return out


def _gradients(tape, loss, variables, direction, out):
    grads = tape.gradient(loss, variables)
    # tf.function cannot return None: a missing gradient becomes zeros plus a flag.
    out[f"{direction} gradient missing"] = tf.constant([g is None for g in grads], tf.bool)
    for i, (grad, variable) in enumerate(zip(grads, variables, strict=True)):
        if grad is None:
            grad = tf.zeros(variable.shape, variable.dtype)
        elif isinstance(grad, tf.IndexedSlices):
            grad = tf.convert_to_tensor(grad)
        out[f"{direction} gradient {i}"] = grad


def _compute(bijector, x, context, variables, event_ndims, inverse_event_ndims):
    """Everything the checks compare in one mode, with no cache hit hiding a bug.

    TFP caches forward/inverse results (and tfp_flows bijectors also their log-dets) keyed by
    the tensor object, so each transform gets a fresh tensor made by `tf.identity`. The
    log-dets are then taken of the same tensors, as `TransformedDistribution` does, and
    differentiated together with the transforms.
    """
    kwargs = _call_kwargs(context)
    out = {}
    with tf.GradientTape(persistent=False) as tape:
        x_in = tf.identity(x)
        y = bijector.forward(x_in, **kwargs)
        fldj = _log_det(bijector, "forward_log_det_jacobian", x_in, event_ndims, kwargs)
        forward_loss = _nll(y, fldj, inverse_event_ndims)
    out["y"], out["fldj"] = y, fldj
    if variables:
        _gradients(tape, forward_loss, variables, "forward", out)
    with tf.GradientTape(persistent=False) as tape:
        y_in = tf.identity(tf.stop_gradient(y))
        x_rec = bijector.inverse(y_in, **kwargs)
        ildj = _log_det(bijector, "inverse_log_det_jacobian", y_in, inverse_event_ndims,
                        kwargs)
        inverse_loss = _nll(x_rec, ildj, event_ndims)
    out["inverse(forward(x))"], out["ildj"] = x_rec, ildj
    if variables:
        _gradients(tape, inverse_loss, variables, "inverse", out)
    out["forward(inverse(y))"] = bijector.forward(tf.identity(x_rec), **kwargs)
    return out


class _Failure:
    """Formats failures the same way for every check."""

    def __init__(self, name):
        self.name = name

    def fail(self, check, mode, detail):
        raise AssertionError(f"check_bijector({self.name}): {check} failed in {mode} mode: "
                             f"{detail}")

    def close(self, check, mode, actual, expected, rtol, atol, what="max abs error"):
        actual, expected = np.asarray(actual), np.asarray(expected)
        if actual.shape != expected.shape:
            self.fail(check, mode, f"shape {list(actual.shape)} != expected "
                                   f"{list(expected.shape)}")
        error = np.abs(actual - expected)
        limit = atol + rtol * np.abs(expected)
        if not np.all(error <= limit):
            self.fail(check, mode, f"{what} {float(np.max(error)):.3g} (rtol={rtol:g}, "
                                   f"atol={atol:g})")
        return float(np.max(error)) if error.size else 0.0


def _variable_name(variable):
    return getattr(variable, "path", None) or getattr(variable, "name", "?")


def check_bijector(bijector, x, *, context=None, variables=None, rtol=None, atol=None,
                   max_jacobian_dims=256, modes=_MODES):
    """Checks that a bijector is a correct, trainable, compilable bijection at `x`.

    Works on any `tfp.bijectors.Bijector` taking a single tensor. Checks, in each mode:

    - round trips: `inverse(forward(x)) == x` and `forward(inverse(y)) == y`, with TFP's
      cache defeated (every call gets a fresh tensor);
    - the forward log-det against autodiff: `slogdet` of the `batch_jacobian` of the
      forward map on the flattened event (skipped with a warning when the event has more
      than `max_jacobian_dims` entries);
    - `forward_log_det_jacobian(x) == -inverse_log_det_jacobian(forward(x))`, both computed
      fresh and through the cache (transform first, then log-det of the same tensor);
    - every trainable variable gets a finite, non-None gradient from the standard-normal
      NLL in each direction (`mean(0.5 |f(x)|^2 - fldj(x))` and its inverse counterpart),
      and at least one of those gradients is nonzero;
    - every output is finite;

    and that eager mode, `tf.function` and `tf.function(jit_compile=True)` agree.

    Args:
        bijector: the `tfp.bijectors.Bijector` to check.
        x: a float32 or float64 array `[batch, *event]`; the event rank is at least
            `bijector.forward_min_event_ndims` and is the `event_ndims` used throughout.
        context: passed as `context=` to every forward, inverse and log-det call
            (conditional tfp_flows bijectors), or `None`.
        variables: the trainable variables to check gradients of; by default those found by
            `discover_trainable_variables` (Keras layer weights and `tf.Module` variables
            reachable from the bijector's attributes).
        rtol: relative tolerance; default from `DEFAULT_TOLERANCES` for the dtype of `x`.
        atol: absolute tolerance; default from `DEFAULT_TOLERANCES`.
        max_jacobian_dims: largest event size for which the Jacobian is built.
        modes: a subset of `("eager", "function", "jit")`; the first one is the reference
            the others are compared with.

    Returns:
        A dict mapping check names to the largest absolute error seen over all modes.

    Raises:
        AssertionError: a check failed; the message names the check, the mode and the
            largest absolute error (or the variable without gradient).
        TypeError: `bijector` is not a `tfp.bijectors.Bijector` or `x` is not float32 or
            float64.
        ValueError: `x` has too few dimensions, or `modes` is empty or unknown.

    Example:
        >>> import numpy as np
        >>> import tensorflow_probability as tfp
        >>> x = np.random.default_rng(0).normal(size=[4, 3]).astype("float32")
        >>> report = check_bijector(tfp.bijectors.Shift([1.0, 2.0, 3.0]), x)
        >>> sorted(report)[:2]
        ['autodiff log-det', 'cached fldj']
    """
    if not isinstance(bijector, tfp.bijectors.Bijector):
        raise TypeError(f"bijector must be a tfp.bijectors.Bijector, got "
                        f"{type(bijector).__name__}")
    min_ndims = bijector.forward_min_event_ndims
    if not isinstance(min_ndims, int | np.integer):
        raise TypeError(f"check_bijector handles single-tensor bijectors; "
                        f"{bijector.name} has forward_min_event_ndims={min_ndims!r}")
    modes = tuple(modes)
    if not modes or any(mode not in _MODES for mode in modes):
        raise ValueError(f"modes must be a non-empty subset of {_MODES}, got {modes!r}")
    x = tf.convert_to_tensor(x)
    if x.dtype not in DEFAULT_TOLERANCES:
        raise TypeError(f"x must be float32 or float64, got dtype {x.dtype.name}")
    if x.shape.rank is None or x.shape.rank < 1 + int(min_ndims):
        raise ValueError(
            f"x must have shape [batch, *event] with event rank >= {int(min_ndims)} (the "
            f"forward_min_event_ndims of {bijector.name}), got shape {x.shape}")
    default_rtol, default_atol = DEFAULT_TOLERANCES[x.dtype]
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    if context is not None:
        context = tf.convert_to_tensor(context)
    event_ndims = x.shape.rank - 1
    inverse_event_ndims = int(bijector.inverse_event_ndims(event_ndims))
    event_size = math.prod(x.shape[1:])
    jacobian = event_size <= max_jacobian_dims
    if not jacobian:
        warnings.warn(
            f"check_bijector({bijector.name}): event size {event_size} > max_jacobian_dims="
            f"{max_jacobian_dims}; the log-det vs autodiff check was skipped", stacklevel=2)

    failure = _Failure(bijector.name)
    # The eager reference runs first: it also builds Keras layers (weights are created on
    # first call), so variables exist before discovery and before any tf.function traces.
    try:
        reference = _reference(bijector, x, context, event_ndims, inverse_event_ndims,
                               jacobian)
    except AssertionError:
        raise
    except Exception as error:  # noqa: BLE001 - any error is a failed check
        failure.fail("eager reference (forward, fresh log-dets, batch_jacobian)", "eager",
                     f"raised {type(error).__name__}: {error}")
    variables = list(discover_trainable_variables(bijector) if variables is None
                     else variables)

    def compute(x, context):
        return _compute(bijector, x, context, variables, event_ndims, inverse_event_ndims)

    runners = {
        "eager": compute,
        "function": tf.function(compute),
        "jit": tf.function(compute, jit_compile=True),
    }
    errors = {}

    def record(check, error):
        errors[check] = max(errors.get(check, 0.0), error)

    first = None
    for mode in modes:
        try:
            results = runners[mode](x, context)
        except Exception as error:  # noqa: BLE001 - any error is a failed check
            failure.fail("running the bijector", mode, f"raised {type(error).__name__}: {error}")
        results = {key: value.numpy() for key, value in results.items()}

        for key, value in results.items():
            if "missing" in key or np.all(np.isfinite(value)):
                continue
            failure.fail("finite outputs", mode,
                         f"{key} has {int(np.size(value) - np.isfinite(value).sum())} "
                         f"NaN/Inf value(s)")
        record("round trip inverse(forward(x))", failure.close(
            "round trip inverse(forward(x)) == x", mode, results["inverse(forward(x))"],
            x.numpy(), rtol, atol))
        record("round trip forward(inverse(y))", failure.close(
            "round trip forward(inverse(y)) == y", mode, results["forward(inverse(y))"],
            results["y"], rtol, atol))
        if jacobian:
            record("autodiff log-det", failure.close(
                "log-det vs autodiff (slogdet of batch_jacobian)", mode, results["fldj"],
                reference["autodiff log-det"], rtol, atol))
        record("fldj == -ildj", failure.close(
            "forward_log_det_jacobian(x) == -inverse_log_det_jacobian(forward(x))", mode,
            results["fldj"], -results["ildj"], rtol, atol))
        record("cached fldj", failure.close(
            "forward_log_det_jacobian after forward (cached) vs called alone (eager)", mode,
            results["fldj"], reference["fresh fldj"], rtol, atol))
        record("cached ildj", failure.close(
            "inverse_log_det_jacobian after inverse (cached) vs called alone (eager)", mode,
            results["ildj"], reference["fresh ildj"], rtol, atol))

        if variables:
            for direction in ("forward", "inverse"):
                missing = results[f"{direction} gradient missing"]
                for i, variable in enumerate(variables):
                    if missing[i]:
                        failure.fail(f"gradient of the {direction} NLL", mode,
                                     f"variable {_variable_name(variable)} gets no gradient "
                                     f"(None)")
                if not any(np.any(results[f"{direction} gradient {i}"] != 0)
                           for i in range(len(variables))):
                    failure.fail(f"gradient of the {direction} NLL", mode,
                                 f"all {len(variables)} gradients are zero")

        if first is None:
            first = (mode, results)
            continue
        reference_mode, reference_results = first
        for key, value in results.items():
            if "missing" in key:
                continue
            record(f"{mode} == {reference_mode}", failure.close(
                f"agreement with {reference_mode} mode on {key}", mode, value,
                reference_results[key], rtol, atol))
    return errors
