"""Training and evaluation engine: trainer, checkpointer, launcher."""

from .checkpointer import CLIPCheckpointer
from .launch import launch
from .preflight import check_run
from .trainer import Trainer

__all__ = ["CLIPCheckpointer", "Trainer", "check_run", "launch"]
