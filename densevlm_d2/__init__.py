"""densevlm_d2: DenseVLM region-language alignment for CLIP ViTs, as a detectron2 extension.

Importing the package makes the installed detectron2 work with today's numpy/Pillow/setuptools
(:mod:`densevlm_d2.compat`) and registers the CLIP backbone. Import it before ``detectron2.data``.
"""

from . import compat

compat.apply()

from . import data, modeling  # noqa: E402,F401  (registers datasets, backbone, meta-architectures)
from .api import CLIPRegionEncoder, load_clip  # noqa: E402
from .clip import (  # noqa: E402
    CheckpointFormat,
    CheckpointMismatchError,
    available_models,
    build_clip_model,
    export_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from .config import add_densevlm_config  # noqa: E402
from .modeling import set_vocabulary  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CLIPRegionEncoder",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "add_densevlm_config",
    "available_models",
    "build_clip_model",
    "export_state_dict",
    "load_checkpoint",
    "load_clip",
    "save_checkpoint",
    "set_vocabulary",
]
