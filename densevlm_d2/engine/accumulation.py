"""Gradient accumulation (``SOLVER.ACCUMULATION_STEPS``): the micro-batch loader's config and the
weight of each micro-batch's losses in the optimiser step.

``SOLVER.IMS_PER_BATCH`` is the effective batch (the images of one optimiser step over all
processes); each of the ``k`` micro-batches has ``IMS_PER_BATCH / k`` of them. A loss that averages
over a batch (regions, pixels, proposals) must average over the effective batch. A model that knows
how many terms each of its losses averages over in a batch says so with
``loss_counts(batched_inputs) -> {loss name: count}``, run without gradients before the
micro-batches' forward passes; the step multiplies micro-batch ``i``'s loss by ``count_i / sum of
the counts``, so that each loss becomes the sum of its terms over the effective batch divided by
their number, as one large batch computes it. A loss the model does not count is weighted by its
micro-batch's share of the images.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["LossWeights", "loss_weights", "micro_batch_config"]

_IMAGES = "images"


def micro_batch_config(cfg, world_size: int):
    """``cfg`` with ``SOLVER.IMS_PER_BATCH`` the images of one micro-batch over all processes (the
    train loader's batch); ``cfg`` itself when there is no accumulation. Checks that the effective
    batch splits evenly into ``ACCUMULATION_STEPS`` micro-batches on ``world_size`` processes."""
    k, batch = cfg.SOLVER.ACCUMULATION_STEPS, cfg.SOLVER.IMS_PER_BATCH
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"SOLVER.ACCUMULATION_STEPS must be an integer >= 1, got {k!r}")
    if batch % (k * world_size):
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({batch}, the images of one optimiser step over all processes) "
            f"must be divisible by SOLVER.ACCUMULATION_STEPS ({k}) x the number of processes "
            f"({world_size})"
        )
    if k == 1:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SOLVER.IMS_PER_BATCH = batch // k
    if frozen:
        cfg.freeze()
    return cfg


class LossWeights(dict):
    """One micro-batch's weight for each counted loss; ``weights(name)`` also answers for a loss
    that was not counted (its share of the images)."""

    def __call__(self, name: str) -> float:
        return self.get(name, self[_IMAGES])


def loss_weights(model: nn.Module, batches: Sequence[list[dict]]) -> list[LossWeights]:
    """The weights of each micro-batch's losses (see the module docstring). ``model`` is the
    unwrapped model; call it without gradients."""
    counter = getattr(model, "loss_counts", None)
    counts = [{**(counter(batch) if counter else {}), _IMAGES: len(batch)} for batch in batches]
    totals: dict[str, float] = {}
    for c in counts:
        for name, n in c.items():
            totals[name] = totals.get(name, 0) + n
    return [
        LossWeights({k: n / totals[k] if totals[k] else 0.0 for k, n in c.items()}) for c in counts
    ]
