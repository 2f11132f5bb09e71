"""NanoFlow's sharing variants, for every builder whose steps share one estimator."""

from tfp_flows import _validation, nets

__all__ = ["SHARINGS", "SharedTrunkSteps"]

SHARINGS = ("none", "naive", "decomposed", "nanoflow")


class SharedTrunkSteps:
    """Mixin of `Flow` builders whose `num_steps` step conditioners share trunks.

    A builder calls `_init_sharing` in its constructor, sets the lists `trunks`,
    `projections` and `conditioners` (attributes, so that Keras tracks the layers in
    them: a shared trunk or projection is in its list once and referenced by each of its
    steps' conditioners), defines `_trunk(name)` (a new trunk of its kind, made for
    `_trunk_channels()` and appended to `trunks`) and builds each stack of steps from
    `_step_conditioners`. The variants (`sharing`):
    `"none"` (a trunk and a projection per step), `"naive"` (one trunk and one projection),
    `"decomposed"` (one trunk, a projection per step) and `"nanoflow"` (decomposed plus a
    flow indication embedding per step).
    """

    def _init_sharing(self, sharing, embedding, embedding_channels, default_embedding):
        """Checks and sets `sharing`, `embedding` (as given), `embedding_kinds` and
        `embedding_channels`; `default_embedding` is the embedding `None` means with
        `sharing="nanoflow"`."""
        self.sharing = _validation.check_choice("sharing", sharing, SHARINGS)
        if embedding is not None and self.sharing != "nanoflow":
            raise ValueError(f"embedding applies to sharing='nanoflow' only, got "
                             f"embedding={embedding!r} with sharing={sharing!r}")
        self.embedding_kinds = (nets.embedding_kinds(default_embedding if embedding is None
                                                     else embedding)
                                if self.sharing == "nanoflow" else ())
        self.embedding = list(embedding) if isinstance(embedding, list | tuple) else embedding
        self.embedding_channels = _validation.check_positive_int("embedding_channels",
                                                                 embedding_channels)

    def _trunk_channels(self):
        """`concat_channels` and `bias_channels` of a trunk for this flow's embedding."""
        return tuple(self.embedding_channels if kind in self.embedding_kinds else None
                     for kind in ("concat", "bias"))

    def _projection(self, output_channels, trunk, name):
        """A zero-initialised projection from `trunk`'s features to `output_channels`."""
        del trunk  # a builder whose projections depend on the trunk overrides this
        projection = nets.StepProjection(output_channels, dtype=self.dtype_policy, name=name)
        self.projections.append(projection)
        return projection

    def _step_conditioners(self, output_channels, prefix=""):
        """The `num_steps` conditioners of one stack of steps, named `{prefix}step_{k}_...`,
        sharing trunks and projections as `sharing` says."""
        trunk = None if self.sharing == "none" else self._trunk(f"{prefix}trunk")
        projection = (self._projection(output_channels, trunk, f"{prefix}projection")
                      if self.sharing == "naive" else None)
        conditioners = []
        for k in range(self.num_steps):
            name = f"{prefix}step_{k}"
            step_trunk = trunk if trunk is not None else self._trunk(f"{name}_trunk")
            conditioner = nets.SharedTrunkConditioner(
                step_trunk,
                projection if projection is not None
                else self._projection(output_channels, step_trunk, f"{name}_projection"),
                embedding=self.embedding_kinds or None, dtype=self.dtype_policy,
                name=f"{name}_conditioner")
            self.conditioners.append(conditioner)
            conditioners.append(conditioner)
        return conditioners

    def _sharing_config(self):
        return {"sharing": self.sharing,
                "embedding": (list(self.embedding) if isinstance(self.embedding, list)
                              else self.embedding),
                "embedding_channels": self.embedding_channels}
