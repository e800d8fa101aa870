"""Training-free dense segmentation with a CLIP's dense map: the protocol's steps as plain functions
(the meta-architecture is :class:`~densevlm_d2.modeling.meta_arch.CLIPDenseSegmenter`)."""

from . import protocol
from .protocol import *  # noqa: F403  (the steps, as listed in protocol.__all__)

__all__ = list(protocol.__all__)
