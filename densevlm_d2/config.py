"""Config keys of densevlm_d2, one ``add_*_config`` per component; every key has its default and a
one-line comment. ``add_densevlm_config`` adds them all.

Each namespace belongs to the component that reads it:

* ``MODEL.CLIP``: the CLIP backbone (:class:`~densevlm_d2.modeling.CLIPViTBackbone`);
* ``TEST.REGIONS``: region-classification evaluation (mapper, meta-architecture);
* ``INPUT.REGIONS``: training regions (the train mapper);
* ``MODEL.DENSEVLM`` / ``MODEL.CLIPSELF`` / ``MODEL.REGIONCLIP``: the training methods;
* ``MODEL.FVIT``: F-ViT's backbone (pyramid on the CLIP ViT); ``MODEL.TEXT_CLASSIFIER``: the
  open-vocabulary ROI heads (text classifier, CLIP score fusion); ``INPUT.LSJ``: detection data;
* ``MODEL.DENSE_SEG``: training-free dense segmentation
  (:class:`~densevlm_d2.modeling.meta_arch.CLIPDenseSegmenter`; SCLIP's protocol);
* ``MODEL.CAT_SEG``: CAT-Seg (:class:`~densevlm_d2.modeling.meta_arch.CATSeg`) and ``INPUT``'s
  semantic-segmentation training keys (crop area constraint, SSD colour augmentation, padding);
* ``SOLVER``: AdamW, the schedule, AMP precision, the weight blend and the export at the end.

Keys that were renamed keep working for one release: :func:`resolve_deprecated_keys` translates
them (with a warning naming the new key) wherever a component reads its config.
"""

from __future__ import annotations

import logging

from detectron2.config import CfgNode as CN

__all__ = [
    "add_cat_seg_config",
    "add_clip_config",
    "add_dense_segmentation_config",
    "add_densevlm_config",
    "add_fvit_config",
    "add_region_evaluation_config",
    "add_region_training_config",
    "add_solver_config",
    "resolve_deprecated_keys",
]

logger = logging.getLogger(__name__)


def add_clip_config(cfg: CN) -> None:
    """``MODEL.CLIP``: the CLIP ViT backbone."""
    cfg.MODEL.CLIP = CN()
    # A name from densevlm_d2.available_models(): EVA02-CLIP-B-16, EVA02-CLIP-L-14-336, ViT-B-16...
    cfg.MODEL.CLIP.MODEL_NAME = "EVA02-CLIP-B-16"
    # CLIP weights in the EVA-CLIP, DenseVLM/CLIPSelf or open_clip layout, loaded strictly; "" =
    # random init.
    cfg.MODEL.CLIP.CHECKPOINT = ""
    # Run a model whose CLIPs have no weights (no checkpoint, no MODEL.WEIGHTS) on purpose: tests,
    # smoke runs, speed measurements. Otherwise loading the model's weights names what is missing.
    cfg.MODEL.CLIP.RANDOM_INIT = False
    # Preprocessing canvas of the region mappers: longest image side resized to this, zero padded
    # to a square (published: 512).
    cfg.MODEL.CLIP.IMAGE_SIZE = 512
    # How many of the last vision blocks train; 0 = the whole CLIP is frozen. Embeddings, final
    # norm, projection and the text tower never train (published DenseVLM: all 12 blocks of B/16).
    cfg.MODEL.CLIP.TRAINABLE_BLOCKS = 0
    # What of the CLIP trains: "blocks" (the last TRAINABLE_BLOCKS vision blocks; DenseVLM,
    # CLIPSelf), "frozen", "attention" (the attention query and value projection weights of both
    # towers; CAT-Seg) or "full" (everything but the logit scale).
    cfg.MODEL.CLIP.FINETUNE = "blocks"
    # Backbone outputs: "dense" (projected, L2-normalised token map, last block through its value
    # path) and/or "block<i>" (0-based vision block outputs, width channels; the last block through
    # its value path), e.g. F-ViT's block3, block5, block7, block11 for B/16.
    cfg.MODEL.CLIP.OUT_FEATURES = ["dense"]
    # Recompute block activations in the backward pass to save memory when training.
    cfg.MODEL.CLIP.GRAD_CHECKPOINTING = False
    cfg.MODEL.CLIP.TEXT_CACHE = CN()
    # Cache class text embeddings on disk (keyed by model, text-tower weights, names, templates).
    cfg.MODEL.CLIP.TEXT_CACHE.ENABLED = True
    # Where; "" = $DENSEVLM_CACHE/text_embeddings (default ~/.cache/densevlm_d2/text_embeddings).
    cfg.MODEL.CLIP.TEXT_CACHE.DIR = ""
    # Deprecated (None = unset): FROZEN -> TRAINABLE_BLOCKS 0; TEXT_CACHE_DIR -> TEXT_CACHE.*.
    cfg.MODEL.CLIP.FROZEN = None
    cfg.MODEL.CLIP.TEXT_CACHE_DIR = None


def add_region_evaluation_config(cfg: CN) -> None:
    """``TEST.REGIONS``: region-classification evaluation (the published zero-shot protocol)."""
    cfg.TEST.REGIONS = CN()
    # Region features to score: "rois" (boxes), "maskpool" (masks), "crops" (slow: one CLS pass
    # each).
    cfg.TEST.REGIONS.TYPES = ["rois", "maskpool"]
    # Images per forward pass (the published evaluation runs one at a time).
    cfg.TEST.REGIONS.IMS_PER_BATCH = 4
    # Only the first this-many segments of an image are considered (filtered ones count), as
    # published.
    cfg.TEST.REGIONS.MAX_PER_IMAGE = 100
    # Regions whose box area (original pixels) is below MIN_SIZE**2 or above MAX_SIZE**2 are
    # skipped.
    cfg.TEST.REGIONS.MIN_SIZE = 8
    cfg.TEST.REGIONS.MAX_SIZE = 1024
    # Crops of things are the box enlarged by this factor about its centre; stuff crops are tight.
    cfg.TEST.REGIONS.THING_CROP_SCALE = 1.5
    # Crops are fitted into CROP_SIZE x CROP_SIZE (the CLIP models' pretraining size).
    cfg.TEST.REGIONS.CROP_SIZE = 224
    # Class embeddings as a published-layout .npy (rows in the dataset's class order); "" = build
    # them with the text classifier from the registered class names.
    cfg.TEST.REGIONS.TEXT_EMBEDDINGS = ""


def add_region_training_config(cfg: CN) -> None:
    """``INPUT.REGIONS`` (training regions) and the three methods' keys."""
    cfg.INPUT.REGIONS = CN()
    # "grid" (image patches), "proposals" (COCO-format boxes) or "labeled" (RegionCLIP pseudo
    # labels).
    cfg.INPUT.REGIONS.MODE = "grid"
    # Grid shapes: "densevlm" (17 shapes for MAX_SPLIT 6) or "clipself" (24 shapes).
    cfg.INPUT.REGIONS.GRID_STYLE = "densevlm"
    cfg.INPUT.REGIONS.MAX_SPLIT = 6
    # Regions per image at most (grid: 36 = all cells; proposals and labels: 20 as published).
    cfg.INPUT.REGIONS.MAX_BOXES = 36
    # Proposals whose area (original pixels) is outside [MIN_SIZE^2, MAX_SIZE^2] are skipped.
    cfg.INPUT.REGIONS.MIN_SIZE = 8
    cfg.INPUT.REGIONS.MAX_SIZE = 1024
    # Crops (CLIPSelf's targets) enlarge a grid cell / a box (proposals, labels) by this factor.
    cfg.INPUT.REGIONS.GRID_CROP_SCALE = 1.0
    cfg.INPUT.REGIONS.BOX_CROP_SCALE = 1.5
    cfg.INPUT.REGIONS.CROP_SIZE = 224
    # Deprecated (None = unset): CROP_SCALE -> GRID_CROP_SCALE.
    cfg.INPUT.REGIONS.CROP_SCALE = None

    cfg.MODEL.DENSEVLM = CN()
    # Vocabulary (registered metadata with classes and class_is_thing) the teacher labels regions
    # with.
    cfg.MODEL.DENSEVLM.VOCABULARY = "densevlm_coco_stuff_ade20k_316"
    # Thing/stuff split: "metadata" (class_is_thing) or "published" (the published code reads the
    # number of things off a file name and subtracts one: the vocabulary's last thing class, "house"
    # in the 316 classes, counts as stuff).
    cfg.MODEL.DENSEVLM.THING_SPLIT = "metadata"
    # Re-normalise class embeddings (published 316-class files are not: row norms about 0.9).
    cfg.MODEL.DENSEVLM.RENORMALIZE_TEXT = True
    # Softmax temperature on cosine similarities, both sides (0.01 = logits x 100).
    cfg.MODEL.DENSEVLM.TEMPERATURE = 0.01
    # Regions whose teacher top-class probability is not above this are dropped.
    cfg.MODEL.DENSEVLM.THRESHOLD = 0.3
    # Columns of the stuff term: "all" classes (published code) or "stuff" only (the paper's
    # figure).
    cfg.MODEL.DENSEVLM.STUFF_CLASSES = "all"
    # Student class embeddings as a published-layout .npy; "" = the student's text tower.
    cfg.MODEL.DENSEVLM.STUDENT_TEXT_EMBEDDINGS = ""
    cfg.MODEL.DENSEVLM.TEACHER = CN()
    cfg.MODEL.DENSEVLM.TEACHER.MODEL_NAME = "EVA02-CLIP-L-14-336"
    # The refined teacher, e.g. clipself_coco_6_save6_512_eva_vitl14_24layers.pt (strict, any
    # layout).
    cfg.MODEL.DENSEVLM.TEACHER.CHECKPOINT = ""
    cfg.MODEL.DENSEVLM.TEACHER.TEXT_EMBEDDINGS = ""
    # "pad": the canvas is padded to a multiple of the teacher's patch (boxes aligned); "published":
    # the canvas as is (a 14-px patch covers 504 of 512 px while boxes span 512).
    cfg.MODEL.DENSEVLM.TEACHER.INPUT = "pad"

    cfg.MODEL.CLIPSELF = CN()
    cfg.MODEL.CLIPSELF.COSINE_WEIGHT = 1.0

    cfg.MODEL.REGIONCLIP = CN()
    # Box dataset whose category names are the concept pool (RegionCLIP's 4,764 nouns).
    cfg.MODEL.REGIONCLIP.CONCEPTS = "densevlm_coco_train_pseudo_4764"
    cfg.MODEL.REGIONCLIP.CONCEPT_EMBEDDINGS = ""
    # Concepts per batch in the loss: every label of the batch plus random others.
    cfg.MODEL.REGIONCLIP.NUM_SAMPLED = 100
    cfg.MODEL.REGIONCLIP.CONTRAST_WEIGHT = 1.0


def add_dense_segmentation_config(cfg: CN) -> None:
    """``MODEL.DENSE_SEG``: the training-free segmentation protocol (defaults: SCLIP's for ADE20K,
    Context-59, VOC-20 with a ViT-B/16; configs/sem_seg/ sets the per-benchmark values)."""
    cfg.MODEL.DENSE_SEG = CN()
    # Resize so the short side is SHORT_SIDE (the long side at most MAX_LONG_SIDE); 0 = no resize.
    cfg.MODEL.DENSE_SEG.SHORT_SIDE = 336
    cfg.MODEL.DENSE_SEG.MAX_LONG_SIDE = 2048
    # Round the resized pixels to 0..255 integers, as an 8-bit (OpenCV) resize does.
    cfg.MODEL.DENSE_SEG.ROUND_RESIZED = True
    # Sliding windows of WINDOW pixels every STRIDE pixels (WINDOW 0: the whole image at once).
    cfg.MODEL.DENSE_SEG.WINDOW = 224
    cfg.MODEL.DENSE_SEG.STRIDE = 112
    # Windows of one image per backbone pass (memory only; results do not depend on it).
    cfg.MODEL.DENSE_SEG.WINDOW_BATCH = 16
    # Softmax temperature: probabilities = softmax(LOGIT_SCALE * cosine) over the text queries.
    cfg.MODEL.DENSE_SEG.LOGIT_SCALE = 40.0
    # With a background class (dataset metadata background_index): pixels whose best probability
    # is below PROB_THRESHOLD become background; foreground classes covering at most
    # AREA_THRESHOLD of the foreground pixels are suppressed first (0 = off).
    cfg.MODEL.DENSE_SEG.PROB_THRESHOLD = 0.0
    cfg.MODEL.DENSE_SEG.AREA_THRESHOLD = 0.0
    # Prompt templates: "imagenet" (OpenAI's 80) or "vild" (DenseVLM's 63); PROMPT_STYLE "plain"
    # puts the name in as given, "densevlm" as the DenseVLM text generator does.
    cfg.MODEL.DENSE_SEG.TEMPLATES = "imagenet"
    cfg.MODEL.DENSE_SEG.PROMPT_STYLE = "plain"
    # ", "-separated synonyms in a class name: "max" (one query each, best probability), "mean"
    # (mean embedding) or "joint" (the whole string in the prompt).
    cfg.MODEL.DENSE_SEG.SYNONYMS = "max"
    # A .npy of class embeddings (one row per class, in the dataset's class order) instead.
    cfg.MODEL.DENSE_SEG.TEXT_EMBEDDINGS = ""
    # Also write detectron2's sem_seg_predictions.json (RLE of every prediction; large and slow).
    cfg.TEST.SAVE_SEM_SEG_PREDICTIONS = False


def add_cat_seg_config(cfg: CN) -> None:
    """``MODEL.CAT_SEG`` (CAT-Seg's head and protocol; defaults: the published ViT-B/16 settings)
    and the training mapper's ``INPUT`` keys."""
    c = cfg.MODEL.CAT_SEG = CN()
    # One prompt per template and class ("{}" is the class name's first ", "-separated synonym).
    c.TEMPLATES = ["A photo of a {} in the scene"]
    # Input side of the CLIP (384 for 16-px models, 336 for L/14-336: a 24x24 token map).
    c.CLIP_RESOLUTION = 384
    # Vision blocks (0-based) whose outputs guide the decoder at 2x and 4x the token resolution
    # (published: [3, 7] for B/16, [7, 15] for L/14).
    c.GUIDANCE_BLOCKS = [3, 7]
    # The last block's dense variant: "cls" (CAT-Seg: the CLS token's input added to every token)
    # or "token" (DenseVLM/CLIPSelf's encode_dense: each token's own input).
    c.DENSE_RESIDUAL = "cls"
    c.HIDDEN_DIM = 128
    # Projected size of the text guidance and of the appearance guidance (0 = no guidance).
    c.TEXT_GUIDANCE_DIM = 128
    c.APPEARANCE_GUIDANCE_DIM = 128
    c.DECODER_DIMS = [64, 32]
    # Channels of the upsampled block outputs (2x, 4x) and of their projections in the decoder.
    c.DECODER_GUIDANCE_DIMS = [256, 128]
    c.DECODER_GUIDANCE_PROJ_DIMS = [32, 16]
    c.NUM_LAYERS = 2
    c.NUM_HEADS = 4
    # Swin window of the spatial aggregation (tokens).
    c.WINDOW_SIZE = 12
    # Class aggregation: "linear" or "full" attention, average pooling before it in training and
    # at test time (published: [2, 2] and [1, 1]).
    c.ATTENTION_TYPE = "linear"
    c.POOLING_SIZES = [2, 2]
    c.TEST_POOLING_SIZES = [1, 1]
    # The class aggregation sees this many classes: fewer are padded with a learned token, more
    # are cut to the top MAX_CLASSES by maximum cost (the rest get logit -100); 0 = off.
    c.MAX_CLASSES = 256
    # Label value without a class.
    c.IGNORE_VALUE = 255
    # Inference: the image resized to TEST_SIZE x TEST_SIZE, WINDOW-px windows with OVERLAP and one
    # global view, scores averaged (published); False: one pass over the padded image.
    c.SLIDING_WINDOW = True
    c.TEST_SIZE = 640
    c.WINDOW = 384
    c.OVERLAP = 0.333
    # Training mapper (data/mappers/sem_seg_train_mapper.py): crops where no class covers more than
    # SINGLE_CATEGORY_MAX_AREA, SSD colour distortion, padding to a multiple of SIZE_DIVISIBILITY.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = -1


def add_fvit_config(cfg: CN) -> None:
    """F-ViT: ``MODEL.FVIT`` (backbone), ``MODEL.TEXT_CLASSIFIER`` (ROI heads), ``INPUT.LSJ``."""
    # MODEL.BACKBONE.NAME "build_clip_fpn_backbone": frozen CLIP, simple pyramid on four blocks,
    # detectron2 FPN.
    cfg.MODEL.FVIT = CN()
    # Vision blocks feeding the pyramid (published: [3, 5, 7, 11] for B/16, [6, 10, 14, 23] for
    # L/14).
    cfg.MODEL.FVIT.BLOCKS = [3, 5, 7, 11]
    # Norm between the two deconvolutions of the stride-4 level (published: SyncBN).
    cfg.MODEL.FVIT.PYRAMID_NORM = "SyncBN"
    # Normalised images are zero padded to this square before the ViT (published: 640 / 896); 0 =
    # no.
    cfg.MODEL.FVIT.PAD_TO = 640
    # Canvas pixels per ViT token; the canvas is resized by patch / TOKEN_STRIDE before the ViT, so
    # that detectron2 sees power-of-two strides (16: L/14 at a 1024 canvas runs at 896 px).
    cfg.MODEL.FVIT.TOKEN_STRIDE = 16

    # OpenVocabROIHeads (MODEL.ROI_HEADS.NAME): a text classifier; the embedding size is the
    # backbone's "clip_dense" channels.
    cfg.MODEL.TEXT_CLASSIFIER = CN()
    # Logit scale of the cosine scores; learned from this value when LEARN_TEMPERATURE (published).
    cfg.MODEL.TEXT_CLASSIFIER.TEMPERATURE = 50.0
    cfg.MODEL.TEXT_CLASSIFIER.LEARN_TEMPERATURE = True
    # Cross-entropy weight of the background class (novel classes: 0, base classes: 1).
    cfg.MODEL.TEXT_CLASSIFIER.BACKGROUND_WEIGHT = 0.6
    # Vocabulary: [] = thing_classes of DATASETS.TRAIN[0] (training) or of each test dataset;
    # novel classes: [] = the dataset's metadata "novel_classes".
    cfg.MODEL.TEXT_CLASSIFIER.CLASS_NAMES = []
    cfg.MODEL.TEXT_CLASSIFIER.NOVEL_CLASSES = []
    # Test time: fuse detector and frozen-CLIP region probabilities, det^(1 - w) * clip^w with
    # w = CLIP_WEIGHT_BASE for base classes and background, CLIP_WEIGHT_NOVEL for novel ones; CLIP
    # logits are cosine x CLIP_LOGIT_SCALE (published OV-COCO: 0.1, 0.8, 75).
    cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION = CN()
    cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION.ENABLED = True
    cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION.CLIP_WEIGHT_BASE = 0.1
    cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION.CLIP_WEIGHT_NOVEL = 0.8
    cfg.MODEL.TEXT_CLASSIFIER.SCORE_FUSION.CLIP_LOGIT_SCALE = 75.0
    # Deprecated (None = unset): derived from the backbone's "clip_dense" ShapeSpec.
    cfg.MODEL.TEXT_CLASSIFIER.EMBED_DIM = None
    # Deprecated (None = unset): MODEL.FVIT.SCORE_FUSION.{ENABLED, ALPHA, BETA, VLM_TEMPERATURE}
    # -> MODEL.TEXT_CLASSIFIER.SCORE_FUSION.{ENABLED, CLIP_WEIGHT_BASE, CLIP_WEIGHT_NOVEL,
    # CLIP_LOGIT_SCALE}.
    cfg.MODEL.FVIT.SCORE_FUSION = CN()
    for key in _FUSION_RENAMES:
        cfg.MODEL.FVIT.SCORE_FUSION[key] = None

    # Large-scale jitter of the detection recipes (published F-ViT): resize by U(MIN_SCALE,
    # MAX_SCALE) of IMAGE_SIZE, random IMAGE_SIZE crop, flip; test: longest side IMAGE_SIZE.
    cfg.INPUT.LSJ = CN()
    cfg.INPUT.LSJ.IMAGE_SIZE = 640
    cfg.INPUT.LSJ.MIN_SCALE = 0.1
    cfg.INPUT.LSJ.MAX_SCALE = 2.0


def add_solver_config(cfg: CN) -> None:
    """``SOLVER``: the published optimiser and schedule, AMP precision, weight blend and export."""
    # "WarmupCosine" (published DenseVLM) or a detectron2 schedule ("WarmupMultiStepLR" with
    # SOLVER.STEPS / GAMMA / WARMUP_FACTOR; published F-ViT: no decay). Gradient clipping is
    # detectron2's SOLVER.CLIP_GRADIENTS (published F-ViT: norm 1.0).
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosine"
    # AdamW (published: betas (0.9, 0.999), eps 1e-8, no weight decay on parameters with fewer than
    # 2 dimensions or named bn/ln/bias/logit_scale).
    cfg.SOLVER.ADAMW_BETAS = (0.9, 0.999)
    cfg.SOLVER.ADAMW_EPS = 1e-8
    # AMP precision when SOLVER.AMP.ENABLED: "float16" (published, with a gradient scaler) or
    # "bfloat16".
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Weight-space blend of saved/evaluated student weights: ALPHA * trained + (1 - ALPHA) *
    # initial; 1.0 = off.
    cfg.SOLVER.WEIGHT_BLEND_ALPHA = 1.0
    # Write the (blended) student in the EVA-CLIP and open_clip layouts when training ends.
    cfg.SOLVER.EXPORT_CLIP = True
    # Learning rate of the CLIP's trainable parameters relative to SOLVER.BASE_LR (CAT-Seg: 0.01;
    # the rest of the model trains at BASE_LR).
    cfg.SOLVER.CLIP_LR_MULTIPLIER = 1.0


def add_densevlm_config(cfg: CN) -> CN:
    """Add all of densevlm_d2's keys to a detectron2 config (idempotent). Returns ``cfg``."""
    if "CLIP" in cfg.MODEL:
        return cfg
    add_clip_config(cfg)
    add_region_evaluation_config(cfg)
    add_region_training_config(cfg)
    add_fvit_config(cfg)
    add_dense_segmentation_config(cfg)
    add_cat_seg_config(cfg)
    add_solver_config(cfg)
    return cfg


# --------------------------------------------------------------------------------------------------
# Deprecated keys
# --------------------------------------------------------------------------------------------------
_FUSION_RENAMES = {
    "ENABLED": "ENABLED",
    "ALPHA": "CLIP_WEIGHT_BASE",
    "BETA": "CLIP_WEIGHT_NOVEL",
    "VLM_TEMPERATURE": "CLIP_LOGIT_SCALE",
}
_warned: set[str] = set()


def _warn(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        logger.warning("config key %s is deprecated and will be removed: %s", old, new)


def _translate_deprecated(cfg: CN) -> list[tuple[str, str]]:
    """Translate every deprecated key that is set into its replacement, in place (``cfg`` must be
    mutable); returns (old key, what to do instead) for each."""
    done = []
    clip = cfg.MODEL.CLIP
    if clip.get("FROZEN") is not None:
        if clip.FROZEN:
            clip.TRAINABLE_BLOCKS = 0
        elif clip.TRAINABLE_BLOCKS == 0:
            raise ValueError(
                "MODEL.CLIP.FROZEN False (deprecated) needs MODEL.CLIP.TRAINABLE_BLOCKS > 0: "
                "set only TRAINABLE_BLOCKS, the number of last vision blocks that train"
            )
        done.append(("MODEL.CLIP.FROZEN", "use MODEL.CLIP.TRAINABLE_BLOCKS (0 = frozen)"))
        clip.FROZEN = None
    if clip.get("TEXT_CACHE_DIR") is not None:
        old = clip.TEXT_CACHE_DIR
        clip.TEXT_CACHE.ENABLED = bool(old)
        clip.TEXT_CACHE.DIR = "" if old in ("", "default") else old
        done.append(("MODEL.CLIP.TEXT_CACHE_DIR", "use MODEL.CLIP.TEXT_CACHE.ENABLED and .DIR"))
        clip.TEXT_CACHE_DIR = None
    regions = cfg.INPUT.get("REGIONS")
    if regions is not None and regions.get("CROP_SCALE") is not None:
        regions.GRID_CROP_SCALE = regions.CROP_SCALE
        done.append(("INPUT.REGIONS.CROP_SCALE", "use INPUT.REGIONS.GRID_CROP_SCALE"))
        regions.CROP_SCALE = None
    text = cfg.MODEL.get("TEXT_CLASSIFIER")
    if text is not None and text.get("EMBED_DIM") is not None:
        done.append(
            (
                "MODEL.TEXT_CLASSIFIER.EMBED_DIM",
                "ignored: the embedding size is the backbone's clip_dense channels",
            )
        )
        text.EMBED_DIM = None
    fusion = cfg.MODEL.get("FVIT", CN()).get("SCORE_FUSION")
    for old, new in _FUSION_RENAMES.items():
        if fusion is not None and fusion.get(old) is not None:
            text.SCORE_FUSION[new] = fusion[old]
            fusion[old] = None
            done.append(
                (
                    f"MODEL.FVIT.SCORE_FUSION.{old}",
                    f"use MODEL.TEXT_CLASSIFIER.SCORE_FUSION.{new}",
                )
            )
    return done


def resolve_deprecated_keys(cfg: CN) -> CN:
    """``cfg`` with deprecated keys translated into their replacements (a warning names each once).

    Returns ``cfg`` itself when no deprecated key is set, else a translated copy (``cfg`` may be
    frozen). Components call it in ``from_config``; ``tools/train_net.py`` calls it after merging,
    so that the written ``config.yaml`` has the new keys.
    """
    probe = cfg.clone()
    probe.defrost()
    done = _translate_deprecated(probe)
    if not done:
        return cfg
    for old, message in done:
        _warn(old, message)
    if cfg.is_frozen():
        probe.freeze()
    return probe
