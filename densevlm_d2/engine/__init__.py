"""Training and evaluation engine: trainer, checkpointer, launcher."""

from .checkpointer import CLIPCheckpointer
from .launch import launch
from .trainer import Trainer

__all__ = ["CLIPCheckpointer", "Trainer", "launch"]
