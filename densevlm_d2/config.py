"""Config keys of densevlm_d2; every key has its default and a one-line comment."""

from detectron2.config import CfgNode as CN

__all__ = ["add_densevlm_config"]


def add_densevlm_config(cfg: CN) -> CN:
    """Add densevlm_d2's keys to a detectron2 config (idempotent). Returns ``cfg``."""
    if "CLIP" in cfg.MODEL:
        return cfg
    cfg.MODEL.CLIP = CN()
    # A name from densevlm_d2.clip.available_models(): EVA02-CLIP-B-16, EVA02-CLIP-L-14-336,
    # ViT-B-16, ...
    cfg.MODEL.CLIP.MODEL_NAME = "EVA02-CLIP-B-16"
    # CLIP weights in the EVA-CLIP, DenseVLM/CLIPSelf or open_clip layout, loaded strictly; "" =
    # random init.
    cfg.MODEL.CLIP.CHECKPOINT = ""
    # Preprocessing canvas: longest image side resized to this, zero padded to a square (published:
    # 512).
    cfg.MODEL.CLIP.IMAGE_SIZE = 512
    # Freeze the whole CLIP model (vision and text towers).
    cfg.MODEL.CLIP.FROZEN = True
    # When not frozen: how many of the last vision blocks train; embeddings, final norm, projection
    # and the text tower stay frozen (published DenseVLM: all 12 blocks of B/16).
    cfg.MODEL.CLIP.TRAINABLE_BLOCKS = 12
    # Backbone outputs: "dense" (projected, L2-normalised token map, last block through its value
    # path) and/or "block<i>" (0-based vision block outputs, width channels; the last block through
    # its value path), e.g. F-ViT's block3, block5, block7, block11 for B/16.
    cfg.MODEL.CLIP.OUT_FEATURES = ["dense"]
    # Recompute block activations in the backward pass to save memory when training.
    cfg.MODEL.CLIP.GRAD_CHECKPOINTING = False
    # Directory of the text-embedding cache ("default": $DENSEVLM_CACHE or ~/.cache/densevlm_d2; ""
    # disables).
    cfg.MODEL.CLIP.TEXT_CACHE_DIR = "default"

    # Region-classification evaluation (reference.md section 5).
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

    # Training regions (reference.md sections 1 and 4).
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
    # Grid crops (CLIPSelf) are the cell enlarged by this factor; proposal crops use 1.5.
    cfg.INPUT.REGIONS.CROP_SCALE = 1.0
    cfg.INPUT.REGIONS.CROP_SIZE = 224

    cfg.MODEL.DENSEVLM = CN()
    # Vocabulary (registered metadata with classes and class_is_thing) the teacher labels regions
    # with.
    cfg.MODEL.DENSEVLM.VOCABULARY = "densevlm_coco_stuff_ade20k_316"
    # Thing/stuff split: "metadata" (class_is_thing) or "published" (classes 0..202 are things, so
    # "house", the 204th thing, counts as stuff, as the published code reads it off a file name).
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

    # F-ViT (open-vocabulary detection, MODEL.BACKBONE.NAME "build_clip_fpn_backbone"): frozen CLIP,
    # simple pyramid on four blocks, detectron2 FPN.
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
    # Test time: fuse detector and frozen-CLIP region probabilities, det^(1-a) * clip^a for base
    # classes and background, det^(1-b) * clip^b for novel ones (published OV-COCO: 0.1, 0.8, 75).
    cfg.MODEL.FVIT.SCORE_FUSION = CN()
    cfg.MODEL.FVIT.SCORE_FUSION.ENABLED = True
    cfg.MODEL.FVIT.SCORE_FUSION.ALPHA = 0.1
    cfg.MODEL.FVIT.SCORE_FUSION.BETA = 0.8
    cfg.MODEL.FVIT.SCORE_FUSION.VLM_TEMPERATURE = 75.0

    # Text classifier of OpenVocabROIHeads (MODEL.ROI_HEADS.NAME "OpenVocabROIHeads").
    cfg.MODEL.TEXT_CLASSIFIER = CN()
    # Dimension of the class text embeddings (the CLIP embed dim: 512 for B/16, 768 for L/14).
    cfg.MODEL.TEXT_CLASSIFIER.EMBED_DIM = 512
    # Logit scale of the cosine scores; learned from this value when LEARN_TEMPERATURE (published).
    cfg.MODEL.TEXT_CLASSIFIER.TEMPERATURE = 50.0
    cfg.MODEL.TEXT_CLASSIFIER.LEARN_TEMPERATURE = True
    # Cross-entropy weight of the background class (novel classes: 0, base classes: 1).
    cfg.MODEL.TEXT_CLASSIFIER.BACKGROUND_WEIGHT = 0.6
    # Vocabulary: [] = thing_classes of DATASETS.TRAIN[0] (training) or DATASETS.TEST[0] (testing);
    # novel classes: [] = the dataset's metadata "novel_classes".
    cfg.MODEL.TEXT_CLASSIFIER.CLASS_NAMES = []
    cfg.MODEL.TEXT_CLASSIFIER.NOVEL_CLASSES = []

    # Large-scale jitter of the detection recipes (published F-ViT): resize by U(MIN_SCALE,
    # MAX_SCALE) of IMAGE_SIZE, random IMAGE_SIZE crop, flip; test: longest side IMAGE_SIZE.
    cfg.INPUT.LSJ = CN()
    cfg.INPUT.LSJ.IMAGE_SIZE = 640
    cfg.INPUT.LSJ.MIN_SCALE = 0.1
    cfg.INPUT.LSJ.MAX_SCALE = 2.0

    # Learning-rate schedule: "WarmupCosine" (published DenseVLM) or "WarmupMultiStepLR"
    # (detectron2's, with SOLVER.STEPS / GAMMA / WARMUP_FACTOR; published F-ViT: no decay).
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosine"
    # Gradient clipping is detectron2's SOLVER.CLIP_GRADIENTS (published F-ViT: norm 1.0).

    # Optimisation (published: AdamW, betas (0.9, 0.999), eps 1e-8, no weight decay on parameters
    # with fewer than 2 dimensions or named bn/ln/bias/logit_scale).
    cfg.SOLVER.ADAMW_BETAS = (0.9, 0.999)
    cfg.SOLVER.ADAMW_EPS = 1e-8
    # AMP precision when SOLVER.AMP.ENABLED: "float16" (published, with a gradient scaler) or
    # "bfloat16".
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Weight-space blend of saved/evaluated weights: ALPHA * trained + (1 - ALPHA) * initial; 1.0 =
    # off.
    cfg.SOLVER.WEIGHT_BLEND_ALPHA = 1.0
    # Write the (blended) student in the EVA-CLIP and open_clip layouts when training ends.
    cfg.SOLVER.EXPORT_CLIP = True
    return cfg
