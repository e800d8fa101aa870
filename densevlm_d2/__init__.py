"""densevlm_d2: DenseVLM region-language alignment for CLIP ViTs, as a detectron2 extension.

Importing the package registers the CLIP backbone, the meta-architectures and the built-in
datasets and vocabularies with detectron2.
"""

# _quiet first: fvcore's deprecation warnings silenced before detectron2 imports it
from . import _quiet, data, modeling  # noqa: F401  (registers datasets, backbone, meta-architectures)
from .api import CLIPRegionEncoder, load_clip
from .clip import (
    CheckpointFormat,
    CheckpointMismatchError,
    TextSpec,
    Vocabulary,
    VocabularyError,
    available_models,
    build_clip_model,
    export_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from .config import add_densevlm_config
from .data import dataset_vocabulary, register_vocabulary
from .modeling import set_vocabulary

__version__ = "0.1.0"

__all__ = [
    "CLIPRegionEncoder",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "TextSpec",
    "Vocabulary",
    "VocabularyError",
    "add_densevlm_config",
    "available_models",
    "build_clip_model",
    "dataset_vocabulary",
    "export_state_dict",
    "load_checkpoint",
    "load_clip",
    "register_vocabulary",
    "save_checkpoint",
    "set_vocabulary",
]
