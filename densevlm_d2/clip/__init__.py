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
from .models import available_models, build_clip_model
from .towers import TowerOutput, VisionTower, vision_tower

__all__ = [
    "CheckpointFormat",
    "CheckpointMismatchError",
    "TowerOutput",
    "VisionTower",
    "available_models",
    "build_clip_model",
    "export_state_dict",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "vision_tower",
]
