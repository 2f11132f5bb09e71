"""Global-batch losses and statistics for steps that run on several `tf.distribute` replicas.

Under a `tf.distribute` strategy Keras runs one train step per replica on the replica's
share of the global batch, sums the replicas' gradients and averages the reported values
in a particular way (its loss tracker multiplies each replica's loss by the number of
replicas and weights it by the replica's batch size). The helpers here make a likelihood
loss and per-channel statistics come out as if one device had seen the whole global
batch, whatever the split (even an uneven one, such as a last batch of 7 on 2 replicas).
Outside a strategy, or with a single replica, they are the plain one-device computations.
"""

import tensorflow as tf

__all__ = []


def replica_context():
    """The replica context of a step running on more than one replica, else `None`."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_share(total, context):
    """`(start, size)` of this replica's rows among `total` rows split over the replicas.

    Rows are split as evenly as possible, the first replicas taking one more when
    `total` does not divide: the order in which `tf.distribute` splits a batch.
    """
    base, extra = divmod(int(total), context.num_replicas_in_sync)
    replica_id = context.replica_id_in_sync_group
    static_id = tf.get_static_value(replica_id)
    if static_id is not None:
        replica_id = int(static_id)
        return replica_id * base + min(replica_id, extra), base + int(replica_id < extra)
    replica_id = tf.cast(replica_id, tf.int32)
    start = replica_id * base + tf.minimum(replica_id, extra)
    return start, base + tf.cast(replica_id < extra, tf.int32)


def replica_seed(seed):
    """A stateless seed of this replica's own: `seed` folded with the replica id.

    Every replica of a step reads the same `seed`; folding in the replica id keeps their
    random draws (a bound flow's noise) independent instead of repeating one draw on
    every replica. Outside a multi-replica step, `seed` itself.
    """
    context = replica_context()
    if context is None:
        return seed
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    folded = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), replica_id)
    return tf.cast(folded, seed.dtype)


def global_mean_loss(local_sum, local_weight, local_count):
    """The per-replica loss of a weighted mean over the global batch.

    On one device this is `local_sum / local_weight`. On several replicas the returned
    tensor has two parts. Its gradient is that of `local_sum / W`, with `W` the sum of the
    weights over all replicas, so that the sum of the replicas' gradients (what
    `tf.distribute` applies) is the gradient of the global weighted mean, the same as one
    device would compute. Its value is what Keras' loss tracker turns back into that
    global mean: the tracker multiplies it by the number of replicas `R` and weights it
    by the replica's example count `n`, so the value is `local_sum / W * N / (n * R)`,
    with `N` the global example count (and 0 on a replica without examples).

    Args:
        local_sum: the sum of (weighted) per-example losses on this replica, a scalar.
        local_weight: the sum of the weights on this replica (the example count when
            unweighted).
        local_count: the number of examples on this replica.
    """
    dtype = local_sum.dtype
    local_weight = tf.cast(local_weight, dtype)
    tiny = tf.constant(1e-12, dtype)
    context = replica_context()
    if context is None:
        return local_sum / tf.maximum(local_weight, tiny)
    local_count = tf.cast(local_count, dtype)
    totals = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                tf.stack([local_weight, local_count]))
    share = local_sum / tf.maximum(totals[0], tiny)
    replicas = tf.constant(context.num_replicas_in_sync, dtype)
    value = share * tf.math.divide_no_nan(totals[1], local_count * replicas)
    return share + tf.stop_gradient(value - share)


def per_replica(loss):
    """A loss every replica computes identically (a regulariser), scaled so the summed
    gradients and Keras' loss tracker count it once, as Keras scales its own losses."""
    context = replica_context()
    if context is None:
        return loss
    return loss / tf.constant(context.num_replicas_in_sync, loss.dtype)


def global_moments(x, axes):
    """`(mean, variance)` of `x` over `axes` and, under a strategy, over every replica.

    Exactly the moments of the global batch (up to rounding): counts, sums and centred
    sums of squares are all-reduced in two passes, in float64 at least for the sums.
    """
    context = replica_context()
    if context is None:
        return tf.nn.moments(x, axes=axes)
    sum_dtype = tf.float64
    values = tf.cast(x, sum_dtype)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), sum_dtype)
    summed = tf.reduce_sum(values, axis=axes)
    # One all-reduce of the count and the sums (any shape, e.g. per-element statistics).
    sums = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.concat([[count], tf.reshape(summed, [-1])], axis=0))
    total = tf.maximum(sums[0], 1.0)
    mean = tf.reshape(sums[1:], tf.shape(summed)) / total
    squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                 tf.reduce_sum(tf.square(values - mean), axis=axes))
    return tf.cast(mean, x.dtype), tf.cast(squares / total, x.dtype)



def step_logs(logs):
    """A train or test step's logs, shaped so Keras can reduce them over workers.

    Under a `MultiWorkerMirroredStrategy` with several workers, Keras (3.x) reduces each
    step's logs with `strategy.reduce("MEAN", value, axis=0)`, which fails for the usual
    scalars ("Invalid reduction dimension 0"). There each value becomes a `[1]` vector,
    which that reduction turns back into the scalar mean over the replicas; elsewhere the
    logs are returned as they are. The logs of a whole epoch (the `History`, `evaluate`)
    are read from the metrics summed over every replica either way.
    """
    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if (not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            or in_multi_worker_mode is None or not in_multi_worker_mode()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}
