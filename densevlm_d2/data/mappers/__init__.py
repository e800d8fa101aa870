from .region_eval_mapper import REGION_TYPES, RegionEvalMapper

__all__ = ["REGION_TYPES", "RegionEvalMapper"]
