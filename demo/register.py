"""The CPU demo's datasets and model, registered the way any user registers their own.

Importing this module (``import demo.register``), or passing it to ``tools/train_net.py --register
demo/register.py``, registers:

* the model ``EVA02-Demo-16``: a small EVA02-CLIP (width 192, 4 blocks, 128 px; its open_clip
  config ``demo/model_configs/EVA02-Demo-16.json``, its timm trunk below);
* the world's datasets under ``$DETECTRON2_DATASETS/demo_world`` or, when
  ``DETECTRON2_DATASETS`` is not set, where ``make demo`` writes them:
  ``output/demo/datasets/demo_world`` (:data:`DEMO_DATASETS`; ``python -m demo --demo-dir D``
  writes ``D/datasets/demo_world``, ``demo/world.py``): ``densevlm_demo_world_{train,val}``
  (panoptic),
  ``densevlm_demo_world_train_images``, open-vocabulary detection
  ``densevlm_demo_world_det_{train_base,val}`` (ring and cross novel),
  ``densevlm_demo_world_train_regions`` (every segment's box: the teacher's refinement regions) and
  semantic segmentation ``densevlm_demo_world_{train,val}_sem_seg`` (the 11 classes in the region
  evaluation's order).
"""

from __future__ import annotations

import os
from pathlib import Path

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from densevlm_d2.clip.models import register_model_config, small_eva02
from densevlm_d2.data.datasets import (
    register_coco_boxes,
    register_image_folder,
    register_panoptic,
    register_sem_seg,
)
from densevlm_d2.data.datasets.ov_coco import register_ov_coco_instances
from densevlm_d2.data.datasets.panoptic_semantic import semantic_classes

__all__ = ["CATEGORIES", "DEMO_DATASETS", "NOVEL_THINGS", "register_demo_world"]

_THINGS = (
    ("ball", [220, 20, 60]),
    ("box", [0, 0, 142]),
    ("tent", [119, 11, 32]),
    ("kite", [0, 60, 100]),
    ("ring", [250, 170, 30]),
    ("cross", [190, 153, 153]),
)
_STUFF = (
    ("sky", [135, 206, 235]),
    ("grass", [34, 139, 34]),
    ("water", [30, 90, 200]),
    ("wall", [150, 60, 40]),
    ("sand", [230, 200, 140]),
)
#: six "thing" shapes and five "stuff" textures, in the COCO panoptic ``categories`` format
CATEGORIES = [
    {"id": i + 1, "name": n, "isthing": 1, "color": c} for i, (n, c) in enumerate(_THINGS)
] + [{"id": 101 + i, "name": n, "isthing": 0, "color": c} for i, (n, c) in enumerate(_STUFF)]
#: the open-vocabulary detection split trains on the other four things' boxes only
NOVEL_THINGS = ("ring", "cross")

# timm looks up a module-level ``default_cfgs`` when registering models; these have no weights
_TRUNK = "densevlm_eva02_small_patch16_clip_128"
_SIGLIP_TRUNK = "densevlm_vit_small_patch16_siglip_128"
default_cfgs = generate_default_cfgs(
    {_TRUNK: {"num_classes": 128}, _SIGLIP_TRUNK: {"num_classes": 0}}
)


@register_model
def densevlm_eva02_small_patch16_clip_128(pretrained: bool = False, **kwargs) -> Eva:
    """Width 192, 4 blocks, 128-px input: the CLIP of the CPU demo world."""
    return small_eva02(_TRUNK, pretrained, 128, 192, 4, 3, **kwargs)


@register_model
def densevlm_vit_small_patch16_siglip_128(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """SigLIP's vision tower (no class token, attention-pool head) at the demo's size: width 192,
    4 blocks, 128-px input."""
    if pretrained:
        raise ValueError(f"{_SIGLIP_TRUNK} has no pretrained weights")
    model_args = dict(
        img_size=128,
        patch_size=16,
        embed_dim=192,
        depth=4,
        num_heads=3,
        class_token=False,
        global_pool="map",
    )
    return build_model_with_cfg(
        VisionTransformer,
        _SIGLIP_TRUNK,
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        **dict(model_args, **kwargs),
    )


register_model_config(Path(__file__).resolve().parent / "model_configs")


#: the datasets root that ``make demo`` (``python -m demo``, default ``--demo-dir output/demo``)
#: writes the world into, relative to the repository root; used when DETECTRON2_DATASETS is unset
DEMO_DATASETS = os.path.join("output", "demo", "datasets")


def register_demo_world(world: str) -> None:
    """The world's datasets (see the module docstring) under ``world``."""
    layout = (
        f"{world}/{{train,val}}/, panoptic_{{train,val}}.json, panoptic_{{train,val}}/: written by "
        f"make demo into {os.path.join(DEMO_DATASETS, 'demo_world')} (run from the repository "
        "root; with python -m demo --demo-dir D: set DETECTRON2_DATASETS=D/datasets)"
    )
    for split in ("train", "val"):
        register_panoptic(
            f"densevlm_demo_world_{split}",
            CATEGORIES,
            os.path.join(world, split),
            os.path.join(world, f"panoptic_{split}"),
            os.path.join(world, f"panoptic_{split}.json"),
            layout=layout,
        )
        # each split's segmentation view: labels written from the panoptic PNGs by make demo
        # (panoptic_semantic.panoptic_to_semantic), classes in contiguous (sorted category id) order
        register_sem_seg(
            f"densevlm_demo_world_{split}_sem_seg",
            os.path.join(world, split),
            os.path.join(world, f"sem_seg_{split}"),
            semantic_classes(CATEGORIES),
            layout=layout + f", sem_seg_{split}/",
        )
    register_image_folder("densevlm_demo_world_train_images", os.path.join(world, "train"), layout)
    register_coco_boxes(
        "densevlm_demo_world_train_regions",
        os.path.join(world, "regions_train.json"),
        os.path.join(world, "train"),
        layout,
    )
    # open-vocabulary detection in the world: boxes of 4 base things for training, all 6 for val
    for name, split, file in (
        ("densevlm_demo_world_det_train_base", "train", "instances_train_base.json"),
        ("densevlm_demo_world_det_val", "val", "instances_val.json"),
    ):
        register_ov_coco_instances(
            name, os.path.join(world, file), os.path.join(world, split), NOVEL_THINGS, layout
        )


register_demo_world(os.path.join(os.getenv("DETECTRON2_DATASETS", DEMO_DATASETS), "demo_world"))
