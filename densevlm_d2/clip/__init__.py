"""CLIP models through upstream open_clip: building, checkpoint formats, dense features, text
embeddings, preprocessing. Plain PyTorch + open_clip; nothing here imports detectron2."""

from .checkpoint import (
    CheckpointFormat,
    CheckpointMismatchError,
    export_state_dict,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from .models import available_models, build_clip_model, register_model_config
from .prompts import PROMPT_SETS, PROMPT_STYLES
from .text import DEFAULT_TEXT_SPEC, TextSpec
from .towers import TowerOutput, VisionTower, vision_tower
from .vocabulary import Vocabulary, VocabularyError

__all__ = [
    "DEFAULT_TEXT_SPEC",
    "PROMPT_SETS",
    "PROMPT_STYLES",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "TextSpec",
    "TowerOutput",
    "VisionTower",
    "Vocabulary",
    "VocabularyError",
    "available_models",
    "build_clip_model",
    "export_state_dict",
    "load_checkpoint",
    "read_state_dict",
    "register_model_config",
    "save_checkpoint",
    "vision_tower",
]
