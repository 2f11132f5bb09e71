"""The training loop of a `tfp-flows` run: building the flow, checkpoints and `--resume`."""

import contextlib
import inspect
import json
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from tfp_flows.bijectors import Standardize
from tfp_flows.cli.arguments import DISTRIBUTE_CHOICES, KEEP_CHECKPOINTS
from tfp_flows.cli.data import (
    EVAL_BATCH_SIZE,
    dequantizes_itself,
    evaluation_batches,
    is_streamed,
    load_data,
    training_batches,
)
from tfp_flows.cli.errors import ResumeError, UsageError
from tfp_flows.cli.outputs import write_outputs
from tfp_flows.models.registry import get_family
from tfp_flows.training import (
    EpochCheckpoint,
    checkpoint_path,
    list_checkpoints,
)
from tfp_flows.training import resume as load_newest_checkpoint
from tfp_flows.training.checkpoints import CHECKPOINT_INDEX

__all__ = ["StepProgbarLogger", "build_flow", "run"]

# Settings a resumed run may change from the checkpoint it continues (none other).
_RESUMABLE_CHANGES = ("epochs",)
# Settings added after checkpoints were first written, with the value a checkpoint that
# does not record them was trained with.
_ADDED_SETTINGS = {"standardize": False}


class StepProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, never counting past the steps an epoch has.

    With `steps_per_execution=k`, Keras reports the last step of each `k`-step execution,
    also for the last, shorter one: 22 steps at `k=10` showed `30/22`. Training is right
    (the last execution stops with the data); only the count is clamped here.
    """

    def _clamped(self, batch):
        return batch if self.target is None else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._clamped(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._clamped(batch), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(self._clamped(batch), logs)


def _takes_keyword(builder, name):
    """Whether `builder` accepts the keyword argument `name` (or any, by `**kwargs`)."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def build_flow(settings, event_shape, num_bins=None, train=None):
    """The flow a run's settings ask for, built by its registered family.

    With the `standardize` setting, vector data get a `tff.bijectors.Standardize` fitted to
    `train` (the training set) at the flow's data end.

    Raises:
        UsageError: the family's builder rejects the settings on this data.
    """
    family = get_family(settings["model"])
    extra = {"seed": settings["seed"]}
    if len(event_shape) == 3:
        extra.update(num_bins=num_bins, logit_alpha=settings.get("logit_alpha"))
    elif settings.get("standardize") and train is not None:
        if _takes_keyword(family.load_builder(), "standardize"):
            extra["standardize"] = Standardize.from_data(train)
        else:  # a family registered with a builder of its own
            print(f"--model {family.name}: its builder takes no standardize argument; "
                  "training on the data as they are")
    try:
        return family.build(event_shape, settings, **extra)
    except ValueError as error:
        data = "images" if len(event_shape) == 3 else "vectors"
        raise UsageError(f"--model {family.name} on {settings['dataset']} ({data} of shape "
                         f"{list(event_shape)}): {error}") from error


def _compiled_flow(settings, data, steps_per_epoch, distributed=False):
    """A fresh flow compiled with the run's optimizer and learning-rate schedule."""
    flow = build_flow(settings, list(data.event_shape), data.num_bins,
                      train=None if data.is_image else data.train)
    learning_rate = keras.optimizers.schedules.CosineDecay(
        settings["learning_rate"], decay_steps=steps_per_epoch * settings["epochs"])
    # Clipping stops the rare huge gradient of a far-out point from undoing training.
    if settings.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(learning_rate, global_clipnorm=1.0,
                                           weight_decay=settings["weight_decay"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=1.0)
    # XLA even on CPU (unlike Keras' "auto"): for the demo it took 0.7 s per epoch
    # against 1.1 s in a plain graph, which repays the extra ~7 s of compilation.
    # (A checkpoint keeps these compile settings.)
    flow.compile(optimizer=optimizer, jit_compile=True,
                 steps_per_execution=min(10, steps_per_epoch))
    if distributed:
        _distributed_execution(flow)
    return flow


def _distributed_execution(flow):
    """Compile settings that work under `tf.distribute` (also for a restored flow)."""
    # XLA does not compile the replicas' collectives, and with Keras 3.15 / TF 2.21 more
    # than one step per execution fails under MirroredStrategy ("You must feed a value for
    # placeholder tensor"), for any Keras model: plain graphs, one step at a time.
    flow.jit_compile = False
    flow.steps_per_execution = 1


def _read_checkpoint_settings(directory):
    """The settings stored in `directory/checkpoint.json`, or `None` if unreadable."""
    try:
        with open(os.path.join(directory, CHECKPOINT_INDEX)) as file:
            settings = json.load(file)["metadata"]["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


def _check_same_settings(settings, directory):
    """Raises `ResumeError` if `directory`'s checkpoints were written with other settings."""
    saved = _read_checkpoint_settings(directory)
    if saved is None:
        print(f"--resume: {directory} has no readable checkpoint.json; cannot compare "
              "settings, trusting the command line")
        return
    saved = {**_ADDED_SETTINGS, **saved}
    different = {key: (saved.get(key), value) for key, value in settings.items()
                 if key not in _RESUMABLE_CHANGES and saved.get(key) != value}
    if different:
        described = ", ".join(f"{key}: checkpoint {old!r}, now {new!r}"
                              for key, (old, new) in sorted(different.items()))
        raise ResumeError(
            f"--resume: the checkpoints in {directory} were written with other settings "
            f"({described}); rerun with the same settings, or without --resume to "
            "start over")


def resume_from_checkpoint(settings, directory, steps_per_epoch):
    """Loads the newest checkpoint of `directory` -> `(flow, completed_epochs)`.

    Returns `(None, 0)` when there is none. Raises `ResumeError` if the checkpoint was
    written with settings (other than `epochs`) that differ from `settings`.
    """
    flow, completed = load_newest_checkpoint(directory)
    if flow is None:
        found = list_checkpoints(directory)
        if found:
            print(f"--resume: all {len(found)} checkpoint(s) in {directory} are damaged or "
                  "fail to load (see the warnings above); starting fresh: they will be "
                  "replaced once this run's first checkpoint is written")
        else:
            print(f"--resume: no usable checkpoint in {directory}; starting fresh")
        return None, 0
    _check_same_settings(settings, directory)
    print(f"--resume: continuing from {completed} completed epoch(s) "
          f"({os.path.basename(checkpoint_path(directory, completed))}), "
          f"{settings['epochs']} in all")
    schedule = getattr(flow.optimizer, "_learning_rate", None)
    decay_steps = steps_per_epoch * settings["epochs"]
    cosine = isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    if completed < settings["epochs"] and cosine and schedule.decay_steps != decay_steps:
        # --epochs changed: stretch the schedule over the new total. The learning rate
        # jumps once, but training goes on instead of continuing at a rate of zero.
        print(f"--resume: --epochs differs from the checkpointed run; the cosine "
              f"learning-rate schedule now decays over {settings['epochs']} epochs")
        schedule.decay_steps = decay_steps
    return flow, completed


def _checkpoint_callbacks(settings, out, initial_epoch, keep_checkpoints, resume=False):
    """Checkpoints every epoch into `out/checkpoints`, TensorBoard logs into `out/logs`.

    With `resume`, a fresh start has said why already (no usable checkpoint).
    """
    checkpoint_dir = os.path.join(out, "checkpoints")
    log_dir = os.path.join(out, "logs")
    if initial_epoch == 0:
        # A fresh run: logs of an earlier one would be drawn over these.
        shutil.rmtree(log_dir, ignore_errors=True)
        if list_checkpoints(checkpoint_dir) and not resume:
            print(f"{checkpoint_dir} holds checkpoints of an earlier run; they will be "
                  "replaced once this run's first checkpoint is written (use --resume to "
                  "continue that run instead)")
    return [
        EpochCheckpoint(checkpoint_dir, keep=keep_checkpoints, fresh=initial_epoch == 0,
                        metadata={"settings": settings}),
        keras.callbacks.TensorBoard(log_dir, write_graph=False),
    ]


def _fit(flow, data, settings, initial_epoch, callbacks, verbose):
    """Trains `flow` on freshly shuffled batches until `settings["epochs"]` are complete."""
    if initial_epoch >= settings["epochs"]:
        print(f"--resume: {initial_epoch} epoch(s) already complete (--epochs "
              f"{settings['epochs']}); evaluating without training")
        return
    dequantize = not dequantizes_itself(flow)
    batches, epoch_counter = training_batches(data, settings["batch_size"], settings["seed"],
                                              dequantize=dequantize)
    validation = {}
    test_seed = settings["seed"] + 1 if dequantize else None
    if flow.num_eval_samples > 1:
        # Each test image would cost k passes of the flow every epoch: the bound is
        # evaluated once, at the end.
        print(f"validation: the test bound ({flow.log_prob_estimator}) is evaluated after "
              "training, not every epoch")
    elif is_streamed(data):
        validation = {"validation_data": evaluation_batches(data, "test", test_seed)}
    elif data.is_image:
        validation = {"validation_data": evaluation_batches(data, "test", test_seed),
                      "validation_batch_size": EVAL_BATCH_SIZE}
    flow.fit(batches, epochs=settings["epochs"], initial_epoch=initial_epoch, shuffle=False,
             verbose=verbose, callbacks=[epoch_counter, StepProgbarLogger(), *callbacks],
             **validation)


def _strategy(distribute):
    """The `tf.distribute` strategy of `--distribute`, or `None`."""
    if distribute is None:
        return None
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise UsageError(
                "--distribute multi-worker reads the cluster and this worker's task from the "
                "TF_CONFIG environment variable, which is not set (see docs/distributed.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UsageError(f"--distribute must be one of {DISTRIBUTE_CHOICES}, got {distribute!r}")


def _is_chief(strategy):
    """Whether this process writes the run's outputs: the chief, or worker 0 without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def run(settings, out, verbose=1, *, checkpoints=False, resume=False,
        keep_checkpoints=KEEP_CHECKPOINTS, temperature=1.0, data_dir=None, distribute=None):
    """Trains a flow with `settings` (see `settings_of`) and writes outputs to `out`.

    Args:
        settings: the run's settings, as made by `tfp_flows.cli.arguments.settings_of`.
        out: output directory (must exist).
        verbose: Keras verbosity.
        checkpoints: whether to checkpoint every epoch into `out/checkpoints` and write
            TensorBoard logs to `out/logs`.
        resume: whether to continue from the newest checkpoint in `out/checkpoints` (implies
            `checkpoints`); training stops once `settings["epochs"]` epochs are complete in
            all.
        keep_checkpoints: how many checkpoints to keep.
        temperature: temperature of the sampled images.
        data_dir: tensorflow-datasets data directory.
        distribute: `None` (one device), `"mirrored"` (`tf.distribute.MirroredStrategy`
            over this machine's devices) or `"multi-worker"`
            (`tf.distribute.MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG`;
            every worker runs the same command). The flow is built, compiled (without
            XLA) and restored inside the strategy's scope. Only the chief writes into
            `out`; every other worker writes into a temporary directory it removes at
            the end. With `resume`, every worker reads the newest checkpoint from
            `out/checkpoints`, so `out` must be on storage all workers read.

    Returns:
        The metrics written to `out/metrics.json`.

    Raises:
        UsageError: the settings do not fit the data; `ResumeError`: `resume` found
            checkpoints written with other settings.
    """
    start = time.perf_counter()
    # Before any other TensorFlow work: a multi-worker strategy connects to its cluster.
    strategy = _strategy(distribute)
    keras.utils.set_random_seed(settings["seed"])
    # Settings that do not fit a tfds set's images fail before it is downloaded.
    data = load_data(settings, data_dir, check_event_shape=lambda shape, num_bins: build_flow(
        settings, list(shape), num_bins))
    batch_size = settings["batch_size"]
    if batch_size > data.num_train:
        raise UsageError(f"--batch-size {batch_size} is larger than the {data.num_train} "
                         "training examples")
    steps_per_epoch = data.num_train // batch_size
    with contextlib.ExitStack() as stack:
        written = out
        if strategy is not None:
            stack.enter_context(strategy.scope())
            print(f"--distribute {distribute}: {strategy.num_replicas_in_sync} replicas in "
                  f"sync, a global batch of {batch_size}")
            if not _is_chief(strategy):
                # Every worker writes (checkpoints, exports) as Keras' multi-worker guide
                # recommends, but only the chief into OUT.
                written = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="tfp-flows-worker-"))
        flow, initial_epoch = None, 0
        if resume:
            # Every worker resumes from the chief's checkpoints: all start alike.
            flow, initial_epoch = resume_from_checkpoint(
                settings, os.path.join(out, "checkpoints"), steps_per_epoch)
        if flow is None:
            flow = _compiled_flow(settings, data, steps_per_epoch,
                                  distributed=strategy is not None)
        elif strategy is not None:
            _distributed_execution(flow)
        callbacks = []
        if checkpoints or resume:
            callbacks = _checkpoint_callbacks(settings, written, initial_epoch,
                                              keep_checkpoints, resume=resume)
        _fit(flow, data, settings, initial_epoch, callbacks, verbose)
        return write_outputs(flow, data, settings, written, start=start,
                             train_seconds=time.perf_counter() - start,
                             initial_epoch=initial_epoch, temperature=temperature)
