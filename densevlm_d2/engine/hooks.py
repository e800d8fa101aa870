"""Training hooks of this project."""

from __future__ import annotations

import logging
import os

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..modeling import get_clip_backbone

__all__ = ["ExportCLIP"]

logger = logging.getLogger(__name__)


class ExportCLIP(HookBase):
    """When training has finished, write the student CLIP (blended with its initial weights when
    ``alpha < 1``) in every layout it has: ``OUTPUT_DIR/clip_final_{eva_clip,open_clip}.pt``
    (the EVA-CLIP release layout for EVA02 models only)."""

    def __init__(self, output_dir: str, alpha: float = 1.0):
        self.output_dir = output_dir
        self.alpha = alpha

    def after_train(self):
        if self.trainer.iter + 1 < self.trainer.max_iter or not comm.is_main_process():
            return  # not finished (stopped by an error): nothing to export
        clip = get_clip_backbone(self.trainer.model)
        with clip.blended(self.alpha):
            for fmt in clip.export_formats:
                path = clip.save(os.path.join(self.output_dir, f"clip_final_{fmt}.pt"), fmt)
                logger.info("exported the student CLIP (alpha %s) to %s", self.alpha, path)
