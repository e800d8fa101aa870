"""densevlm_d2: DenseVLM region-language alignment for CLIP ViTs, as a detectron2 extension.

Importing the package makes the installed detectron2 work with today's numpy/Pillow/setuptools
(:mod:`densevlm_d2.compat`) and registers the CLIP backbone. Import it before ``detectron2.data``.
"""

from . import compat

compat.apply()

from .clip import (  # noqa: E402
    CheckpointFormat,
    CheckpointMismatchError,
    available_models,
    build_clip_model,
    load_checkpoint,
)

__version__ = "0.1.0"
