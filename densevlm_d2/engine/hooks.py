"""Training hooks of this project."""

from __future__ import annotations

import logging
import os

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..clip.checkpoint import save_checkpoint
from .blend import blended_student

__all__ = ["ExportCLIP"]

logger = logging.getLogger(__name__)


class ExportCLIP(HookBase):
    """When training has finished, write the student CLIP (blended with its initial weights when
    ``alpha < 1``) in the EVA-CLIP release layout (EVA02 models) and in open_clip's layout:
    ``OUTPUT_DIR/clip_final_{eva_clip,open_clip}.pt``."""

    def __init__(self, output_dir: str, alpha: float = 1.0):
        self.output_dir = output_dir
        self.alpha = alpha

    def after_train(self):
        if self.trainer.iter + 1 < self.trainer.max_iter or not comm.is_main_process():
            return  # not finished (stopped by an error): nothing to export
        model = self.trainer.model
        model = getattr(model, "module", model)
        from ..clip.towers import EvaTower, vision_tower

        formats = ["open_clip"]
        if isinstance(vision_tower(model.backbone.clip.visual), EvaTower):
            formats.insert(0, "eva_clip")
        with blended_student(model, self.alpha):
            for fmt in formats:
                path = save_checkpoint(
                    model.backbone.clip, os.path.join(self.output_dir, f"clip_final_{fmt}.pt"), fmt
                )
                logger.info("exported the student CLIP (alpha %s) to %s", self.alpha, path)
