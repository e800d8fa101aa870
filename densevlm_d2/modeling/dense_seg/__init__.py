"""Training-free dense segmentation with a CLIP's dense map: the protocol's steps as plain functions
(the meta-architecture is :class:`~densevlm_d2.modeling.meta_arch.CLIPDenseSegmenter`)."""

from .protocol import (
    class_probabilities,
    decide,
    resize_short_side,
    resized_size,
    sliding_window_logits,
    window_boxes,
)

__all__ = [
    "class_probabilities",
    "decide",
    "resize_short_side",
    "resized_size",
    "sliding_window_logits",
    "window_boxes",
]
