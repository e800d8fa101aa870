"""Training hooks of this project."""

from __future__ import annotations

import logging
import os

from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import JSONWriter

from ..modeling import get_clip_backbone

__all__ = ["ExportCLIP", "LazyFile", "LazyJSONWriter"]

logger = logging.getLogger(__name__)


class LazyFile:
    """A file opened for appending on the first write, so that a run killed before it has anything
    to write leaves no empty file (detectron2's ``JSONWriter`` opens ``metrics.json`` at start)."""

    def __init__(self, path: str):
        self.path, self._file = path, None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = open(self.path, "a")  # noqa: SIM115 (closed by close())
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class LazyJSONWriter(JSONWriter):
    """detectron2's ``JSONWriter`` writing through a :class:`LazyFile`."""

    def __init__(self, json_file: str, window_size: int = 20):
        # JSONWriter.__init__ only opens the file and sets these
        self._file_handle = LazyFile(json_file)
        self._window_size = window_size
        self._last_write = -1


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
        student = get_clip_backbone(self.trainer.model)
        with student.blended(self.alpha):
            for fmt in student.export_formats:
                path = student.save(os.path.join(self.output_dir, f"clip_final_{fmt}.pt"), fmt)
                logger.info("exported the student CLIP (alpha %s) to %s", self.alpha, path)
