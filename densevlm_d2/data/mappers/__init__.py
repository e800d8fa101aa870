from .detection_mapper import build_detection_mapper, lsj_augmentations
from .region_eval_mapper import REGION_TYPES, RegionEvalMapper
from .region_train_mapper import RegionTrainMapper, grid_boxes, grid_choices
from .sem_seg_mapper import SemSegTestMapper
from .sem_seg_train_mapper import SemSegTrainMapper

__all__ = [
    "REGION_TYPES",
    "RegionEvalMapper",
    "RegionTrainMapper",
    "SemSegTestMapper",
    "SemSegTrainMapper",
    "build_detection_mapper",
    "grid_boxes",
    "grid_choices",
    "lsj_augmentations",
]
