"""Config keys of densevlm_d2, one ``add_*_config`` per component; every key has its default and a
one-line comment. ``add_densevlm_config`` adds them all; every ``add_*`` function adds only the
keys that are missing, so they can be called in any order, any number of times.

Each namespace belongs to the component that reads it:

* ``MODEL.CLIP``: the CLIP backbone (:class:`~densevlm_d2.modeling.CLIPViTBackbone`): the
  architecture, its weights, what of it trains, its outputs, its text-embedding cache and its
  precomputed class embeddings;
* ``TEST.REGIONS``: region-classification evaluation (mapper, meta-architecture);
* ``INPUT.REGIONS``: the region mappers' canvas and the training regions;
* ``MODEL.DENSEVLM`` / ``MODEL.CLIPSELF`` / ``MODEL.REGIONCLIP``: the training methods;
* ``MODEL.FVIT``: F-ViT's backbone (pyramid on the CLIP ViT); ``MODEL.TEXT_CLASSIFIER``: the
  open-vocabulary ROI heads (text classifier, CLIP score fusion); ``INPUT.LSJ``: detection data;
* ``MODEL.DENSE_SEG``: training-free dense segmentation
  (:class:`~densevlm_d2.modeling.meta_arch.CLIPDenseSegmenter`; SCLIP's protocol);
* ``MODEL.CAT_SEG``: CAT-Seg (:class:`~densevlm_d2.modeling.meta_arch.CATSeg`) and ``INPUT``'s
  semantic-segmentation training keys (crop area constraint, SSD colour augmentation, padding);
* ``SOLVER``: AdamW, the schedule, AMP precision, the weight blend and the export at the end.

Every component that turns class names into text embeddings has a ``TEXT`` node with the same
three keys (:func:`add_text_config`): the prompt set (``PROMPTS``), the prompt style and how
synonyms are used. Scores: a *logit scale* multiplies cosine similarities, a *temperature*
divides them.
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = [
    "add_cat_seg_config",
    "add_clip_config",
    "add_dense_segmentation_config",
    "add_densevlm_config",
    "add_fvit_config",
    "add_region_evaluation_config",
    "add_region_training_config",
    "add_sem_seg_evaluation_config",
    "add_solver_config",
    "add_text_config",
]


def _node(parent: CN, name: str) -> CN:
    """``parent.<name>``, created empty when missing."""
    if name not in parent:
        parent[name] = CN()
    return parent[name]


def _add(node: CN, key: str, value) -> None:
    """``node.<key> = value`` unless the key exists (so that no call overwrites a setting)."""
    if key not in node:
        node[key] = value


def add_text_config(node: CN, prompts=("vild",), style="densevlm", synonyms="joint") -> None:
    """``<node>.TEXT``: how a component's class names become text embeddings
    (:class:`~densevlm_d2.clip.text.TextSpec`)."""
    t = _node(node, "TEXT")
    # A prompt set: ["vild"] (DenseVLM's 63 ViLD templates), ["imagenet"] (OpenAI's 80),
    # ["cat_seg"] (CAT-Seg's one), or your own templates, each with "{}" (and optionally
    # "{article}"): ["a photo of a {}.", "a {} in the scene."].
    _add(t, "PROMPTS", list(prompts))
    # "densevlm" (the published generator: cleaned name, article, "This is " prefix) or "plain"
    # (the name as given).
    _add(t, "PROMPT_STYLE", style)
    # A class "tv, television": "joint" (the whole string in each prompt, published DenseVLM),
    # "mean" (mean of the synonyms' embeddings), "first" (the first synonym: CAT-Seg) or "max"
    # (one query per synonym, a class takes its best: SCLIP; the training-free segmenter only).
    _add(t, "SYNONYMS", synonyms)


def add_clip_config(cfg: CN) -> None:
    """``MODEL.CLIP``: the CLIP ViT backbone."""
    c = _node(cfg.MODEL, "CLIP")
    # A name from densevlm_d2.available_models(): EVA02-CLIP-B-16, EVA02-CLIP-L-14-336, ViT-B-16...
    _add(c, "MODEL_NAME", "EVA02-CLIP-B-16")
    # CLIP weights in the EVA-CLIP, DenseVLM/CLIPSelf or open_clip layout, a model-zoo name or an
    # hf:// reference, loaded strictly; "" = none (then MODEL.WEIGHTS, or RANDOM_INIT).
    _add(c, "CHECKPOINT", "")
    # Run a model whose CLIPs have no weights (no checkpoint, no MODEL.WEIGHTS) on purpose: tests,
    # smoke runs, speed measurements. Otherwise loading the model's weights names what is missing.
    _add(c, "RANDOM_INIT", False)
    # What of the CLIP trains (the one switch; the rest stays frozen): "frozen" (nothing),
    # "blocks" (the last TRAINABLE_BLOCKS vision blocks: DenseVLM, CLIPSelf), "attention" (the
    # attention query and value projection weights of both towers: CAT-Seg) or "full" (everything
    # but the logit scale).
    _add(c, "FINETUNE", "frozen")
    # With FINETUNE "blocks": how many of the last vision blocks train (published DenseVLM: all 12
    # of B/16). Embeddings, final norm, projection and the text tower stay frozen.
    _add(c, "TRAINABLE_BLOCKS", 0)
    # Backbone outputs: "dense" (projected, L2-normalised token map, last block through its value
    # path) and/or "block<i>" (0-based vision block outputs, width channels; the last block through
    # its value path), e.g. F-ViT's block3, block5, block7, block11 for B/16.
    _add(c, "OUT_FEATURES", ["dense"])
    # Recompute block activations in the backward pass to save memory when training.
    _add(c, "GRAD_CHECKPOINTING", False)
    cache = _node(c, "TEXT_CACHE")
    # Cache class text embeddings on disk (keyed by model, text-tower weights, names, prompts).
    _add(cache, "ENABLED", True)
    # Where; "" = $DENSEVLM_CACHE/text_embeddings (default ~/.cache/densevlm_d2/text_embeddings).
    _add(cache, "DIR", "")
    # Precomputed class embeddings instead of this CLIP's text tower, per vocabulary: pairs of a
    # registered dataset or vocabulary name and a .npy (one row per class in its order), e.g.
    # [["densevlm_coco_panoptic_val", "coco_panoptic_clip_vitb16.npy"]].
    _add(c, "TEXT_EMBEDDINGS", [])


def add_region_evaluation_config(cfg: CN) -> None:
    """``TEST.REGIONS``: region-classification evaluation (the published zero-shot protocol)."""
    r = _node(cfg.TEST, "REGIONS")
    # Region features to score: "rois" (boxes), "maskpool" (masks), "crops" (slow: one CLS pass
    # each).
    _add(r, "TYPES", ["rois", "maskpool"])
    # Images per forward pass (the published evaluation runs one at a time).
    _add(r, "IMS_PER_BATCH", 4)
    # Only the first this-many segments of an image are considered (filtered ones count), as
    # published.
    _add(r, "MAX_PER_IMAGE", 100)
    # Regions whose box area (original pixels) is below MIN_SIZE**2 or above MAX_SIZE**2 are
    # skipped.
    _add(r, "MIN_SIZE", 8)
    _add(r, "MAX_SIZE", 1024)
    # Crops of things are the box enlarged by this factor about its centre; stuff crops are tight.
    _add(r, "THING_CROP_SCALE", 1.5)
    # Crops are fitted into CROP_SIZE x CROP_SIZE (the CLIP models' pretraining size).
    _add(r, "CROP_SIZE", 224)
    # The class embeddings: the published generator's (ViLD's 63 templates, DenseVLM style, the
    # whole synonym string).
    add_text_config(r)
    _add_region_canvas(cfg)


def _add_region_canvas(cfg: CN) -> None:
    r = _node(cfg.INPUT, "REGIONS")
    # The canvas of both region mappers (training and evaluation): the longest image side resized
    # to this, zero padded to a square (published: 512).
    _add(r, "IMAGE_SIZE", 512)


def add_region_training_config(cfg: CN) -> None:
    """``INPUT.REGIONS`` (training regions) and the three methods' keys."""
    _add_region_canvas(cfg)
    r = _node(cfg.INPUT, "REGIONS")
    # "grid" (image patches), "proposals" (COCO-format boxes) or "labeled" (RegionCLIP pseudo
    # labels).
    _add(r, "MODE", "grid")
    # Grid shapes: "densevlm" (17 shapes for MAX_SPLIT 6) or "clipself" (24 shapes).
    _add(r, "GRID_STYLE", "densevlm")
    _add(r, "MAX_SPLIT", 6)
    # Regions per image at most (grid: 36 = all cells; proposals and labels: 20 as published).
    _add(r, "MAX_BOXES", 36)
    # Proposals whose area (original pixels) is outside [MIN_SIZE^2, MAX_SIZE^2] are skipped.
    _add(r, "MIN_SIZE", 8)
    _add(r, "MAX_SIZE", 1024)
    # Crops (CLIPSelf's targets) enlarge a grid cell / a box (proposals, labels) by this factor.
    _add(r, "GRID_CROP_SCALE", 1.0)
    _add(r, "BOX_CROP_SCALE", 1.5)
    _add(r, "CROP_SIZE", 224)

    d = _node(cfg.MODEL, "DENSEVLM")
    # Vocabulary (a registered vocabulary or dataset with thing/stuff flags) the teacher labels
    # regions with.
    _add(d, "VOCABULARY", "densevlm_coco_stuff_ade20k_316")
    # Thing/stuff split: "metadata" (the vocabulary's flags) or "published" (the published code
    # reads the number of things off a file name and subtracts one: the vocabulary's last thing
    # class, "house" in the 316 classes, counts as stuff).
    _add(d, "THING_SPLIT", "metadata")
    # Re-normalise class embeddings (published 316-class files are not: row norms about 0.9).
    _add(d, "RENORMALIZE_TEXT", True)
    # Softmax temperature: cosine similarities are divided by it, both sides (0.01 = x 100).
    _add(d, "TEMPERATURE", 0.01)
    # Regions whose teacher top-class probability is not above this are dropped.
    _add(d, "THRESHOLD", 0.3)
    # Columns of the stuff term: "all" classes (published code) or "stuff" only (the paper's
    # figure).
    _add(d, "STUFF_CLASSES", "all")
    # The student's and the teacher's class embeddings (the published generator's). Precomputed
    # ones: MODEL.CLIP.TEXT_EMBEDDINGS (student), TEACHER.TEXT_EMBEDDINGS.
    add_text_config(d)
    t = _node(d, "TEACHER")
    _add(t, "MODEL_NAME", "EVA02-CLIP-L-14-336")
    # The refined teacher, e.g. clipself_coco_6_save6_512_eva_vitl14_24layers.pt (strict, any
    # layout, a model-zoo name or an hf:// reference).
    _add(t, "CHECKPOINT", "")
    # Precomputed class embeddings of the teacher (as MODEL.CLIP.TEXT_EMBEDDINGS).
    _add(t, "TEXT_EMBEDDINGS", [])
    # "pad": the canvas is padded to a multiple of the teacher's patch (boxes aligned); "published":
    # the canvas as is (a 14-px patch covers 504 of 512 px while boxes span 512).
    _add(t, "INPUT", "pad")
    # The teacher's pixel normalisation (0-255 scale) where it differs from the student's
    # MODEL.PIXEL_MEAN / PIXEL_STD (e.g. a SigLIP or PE student, mean = std = 127.5, with an EVA
    # teacher, OpenAI's); [] = the student's.
    _add(t, "PIXEL_MEAN", [])
    _add(t, "PIXEL_STD", [])

    s = _node(cfg.MODEL, "CLIPSELF")
    _add(s, "COSINE_WEIGHT", 1.0)

    g = _node(cfg.MODEL, "REGIONCLIP")
    # Box dataset whose category names are the concept pool (RegionCLIP's 4,764 nouns).
    _add(g, "CONCEPTS", "densevlm_coco_train_pseudo_4764")
    # Concepts per batch in the loss: every label of the batch plus random others.
    _add(g, "NUM_SAMPLED", 100)
    _add(g, "CONTRAST_WEIGHT", 1.0)
    add_text_config(g)


def add_sem_seg_evaluation_config(cfg: CN) -> None:
    """``TEST.SAVE_SEM_SEG_PREDICTIONS``: the semantic-segmentation evaluator's output."""
    # Also write detectron2's sem_seg_predictions.json (RLE of every prediction; large and slow).
    _add(cfg.TEST, "SAVE_SEM_SEG_PREDICTIONS", False)


def add_dense_segmentation_config(cfg: CN) -> None:
    """``MODEL.DENSE_SEG``: the training-free segmentation protocol (defaults: SCLIP's for ADE20K,
    Context-59, VOC-20 with a ViT-B/16; configs/sem_seg/ sets the per-benchmark values)."""
    c = _node(cfg.MODEL, "DENSE_SEG")
    # Resize so the short side is SHORT_SIDE (the long side at most MAX_LONG_SIDE); 0 = no resize.
    _add(c, "SHORT_SIDE", 336)
    _add(c, "MAX_LONG_SIDE", 2048)
    # Round the resized pixels to 0..255 integers, as an 8-bit (OpenCV) resize does.
    _add(c, "ROUND_RESIZED", True)
    # Sliding windows of WINDOW pixels every STRIDE pixels (WINDOW 0: the whole image at once).
    _add(c, "WINDOW", 224)
    _add(c, "STRIDE", 112)
    # Windows of one image per backbone pass (memory only; results do not depend on it).
    _add(c, "WINDOW_BATCH", 16)
    # Logit scale: probabilities = softmax(LOGIT_SCALE * cosine) over the text queries.
    _add(c, "LOGIT_SCALE", 40.0)
    # With a background class (the vocabulary's background_index): pixels whose best probability
    # is below PROB_THRESHOLD become background; foreground classes covering at most
    # AREA_THRESHOLD of the foreground pixels are suppressed first (0 = off).
    _add(c, "PROB_THRESHOLD", 0.0)
    _add(c, "AREA_THRESHOLD", 0.0)
    # SCLIP's text queries: OpenAI's 80 templates, the names as given, one query per synonym.
    add_text_config(c, prompts=("imagenet",), style="plain", synonyms="max")
    add_sem_seg_evaluation_config(cfg)


def add_cat_seg_config(cfg: CN) -> None:
    """``MODEL.CAT_SEG`` (CAT-Seg's head and protocol; defaults: the published ViT-B/16 settings)
    and the training mapper's ``INPUT`` keys."""
    c = _node(cfg.MODEL, "CAT_SEG")
    # One embedding per template and class (no ensemble); published: "A photo of a {} in the
    # scene" with the first synonym of each name.
    add_text_config(c, prompts=("cat_seg",), style="plain", synonyms="first")
    # Input side of the CLIP (384 for 16-px models, 336 for L/14-336: a 24x24 token map).
    _add(c, "CLIP_RESOLUTION", 384)
    # Vision blocks (0-based) whose outputs guide the decoder at 2x and 4x the token resolution
    # (published: [3, 7] for B/16, [7, 15] for L/14).
    _add(c, "GUIDANCE_BLOCKS", [3, 7])
    # The last block's dense variant: "cls" (CAT-Seg: the CLS token's input added to every token)
    # or "token" (DenseVLM/CLIPSelf's encode_dense: each token's own input).
    _add(c, "DENSE_RESIDUAL", "cls")
    _add(c, "HIDDEN_DIM", 128)
    # Projected size of the text guidance and of the appearance guidance (0 = no guidance).
    _add(c, "TEXT_GUIDANCE_DIM", 128)
    _add(c, "APPEARANCE_GUIDANCE_DIM", 128)
    _add(c, "DECODER_DIMS", [64, 32])
    # Channels of the upsampled block outputs (2x, 4x) and of their projections in the decoder.
    _add(c, "DECODER_GUIDANCE_DIMS", [256, 128])
    _add(c, "DECODER_GUIDANCE_PROJ_DIMS", [32, 16])
    _add(c, "NUM_LAYERS", 2)
    _add(c, "NUM_HEADS", 4)
    # Swin window of the spatial aggregation (tokens).
    _add(c, "WINDOW_SIZE", 12)
    # Class aggregation: "linear" or "full" attention, average pooling before it in training and
    # at test time (published: [2, 2] and [1, 1]).
    _add(c, "ATTENTION_TYPE", "linear")
    _add(c, "POOLING_SIZES", [2, 2])
    _add(c, "TEST_POOLING_SIZES", [1, 1])
    # The class aggregation sees this many classes: fewer are padded with a learned token, more
    # are cut to the top MAX_CLASSES by maximum cost (the rest get logit -100); 0 = off.
    _add(c, "MAX_CLASSES", 256)
    # Label value without a class.
    _add(c, "IGNORE_VALUE", 255)
    # Inference: the image resized to TEST_SIZE x TEST_SIZE, WINDOW-px windows with OVERLAP and one
    # global view, scores averaged (published); False: one pass over the padded image.
    _add(c, "SLIDING_WINDOW", True)
    _add(c, "TEST_SIZE", 640)
    _add(c, "WINDOW", 384)
    _add(c, "OVERLAP", 0.333)
    # Training mapper (data/mappers/sem_seg_train_mapper.py): crops where no class covers more than
    # SINGLE_CATEGORY_MAX_AREA, SSD colour distortion, padding to a multiple of SIZE_DIVISIBILITY.
    _add(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA", 1.0)
    _add(cfg.INPUT, "COLOR_AUG_SSD", False)
    _add(cfg.INPUT, "SIZE_DIVISIBILITY", -1)
    add_sem_seg_evaluation_config(cfg)


def add_fvit_config(cfg: CN) -> None:
    """F-ViT: ``MODEL.FVIT`` (backbone), ``MODEL.TEXT_CLASSIFIER`` (ROI heads), ``INPUT.LSJ``."""
    # MODEL.BACKBONE.NAME "build_clip_fpn_backbone": frozen CLIP, simple pyramid on four blocks,
    # detectron2 FPN.
    f = _node(cfg.MODEL, "FVIT")
    # Vision blocks feeding the pyramid (published: [3, 5, 7, 11] for B/16, [6, 10, 14, 23] for
    # L/14).
    _add(f, "BLOCKS", [3, 5, 7, 11])
    # Norm between the two deconvolutions of the stride-4 level (published: SyncBN).
    _add(f, "PYRAMID_NORM", "SyncBN")
    # Normalised images are zero padded to this square before the ViT (published: 640 / 896); 0 =
    # no.
    _add(f, "PAD_TO", 640)
    # Canvas pixels per ViT token; the canvas is resized by patch / TOKEN_STRIDE before the ViT, so
    # that detectron2 sees power-of-two strides (16: L/14 at a 1024 canvas runs at 896 px).
    _add(f, "TOKEN_STRIDE", 16)

    # OpenVocabROIHeads (MODEL.ROI_HEADS.NAME): a text classifier; the embedding size is the
    # backbone's "clip_dense" channels.
    t = _node(cfg.MODEL, "TEXT_CLASSIFIER")
    # Logit scale of the cosine scores; learned from this value when LEARN_LOGIT_SCALE
    # (published: 50, learned).
    _add(t, "LOGIT_SCALE", 50.0)
    _add(t, "LEARN_LOGIT_SCALE", True)
    # Cross-entropy weight of the background class (novel classes: 0, base classes: 1).
    _add(t, "BACKGROUND_WEIGHT", 0.6)
    # Vocabulary: [] = the vocabulary of DATASETS.TRAIN[0] (training) or of each test dataset;
    # novel classes: [] = the dataset vocabulary's.
    _add(t, "CLASS_NAMES", [])
    _add(t, "NOVEL_CLASSES", [])
    # The class (and "background") embeddings: the published generator's.
    add_text_config(t)
    # Test time: fuse detector and frozen-CLIP region probabilities, det^(1 - w) * clip^w with
    # w = CLIP_WEIGHT_BASE for base classes and background, CLIP_WEIGHT_NOVEL for novel ones; CLIP
    # logits are cosine x CLIP_LOGIT_SCALE (published OV-COCO: 0.1, 0.8, 75).
    s = _node(t, "SCORE_FUSION")
    _add(s, "ENABLED", True)
    _add(s, "CLIP_WEIGHT_BASE", 0.1)
    _add(s, "CLIP_WEIGHT_NOVEL", 0.8)
    _add(s, "CLIP_LOGIT_SCALE", 75.0)

    # Large-scale jitter of the detection recipes (published F-ViT): resize by U(MIN_SCALE,
    # MAX_SCALE) of IMAGE_SIZE, random IMAGE_SIZE crop, flip; test: longest side IMAGE_SIZE.
    lsj = _node(cfg.INPUT, "LSJ")
    _add(lsj, "IMAGE_SIZE", 640)
    _add(lsj, "MIN_SCALE", 0.1)
    _add(lsj, "MAX_SCALE", 2.0)


def add_solver_config(cfg: CN) -> None:
    """``SOLVER``: the published optimiser and schedule, AMP precision, weight blend and export."""
    s = cfg.SOLVER
    # "WarmupCosine" (published DenseVLM) or a detectron2 schedule ("WarmupMultiStepLR" with
    # SOLVER.STEPS / GAMMA / WARMUP_FACTOR; published F-ViT: no decay). Gradient clipping is
    # detectron2's SOLVER.CLIP_GRADIENTS (published F-ViT: norm 1.0), plus CLIP_TYPE "full_model".
    # (detectron2's default is replaced once, when these SOLVER keys are first added)
    if "ADAMW_BETAS" not in s:
        s.LR_SCHEDULER_NAME = "WarmupCosine"
    # AdamW (published: betas (0.9, 0.999), eps 1e-8, no weight decay on parameters with fewer than
    # 2 dimensions or named bn/ln/bias/logit_scale).
    _add(s, "ADAMW_BETAS", (0.9, 0.999))
    _add(s, "ADAMW_EPS", 1e-8)
    # AMP precision when SOLVER.AMP.ENABLED: "float16" (published, with a gradient scaler) or
    # "bfloat16".
    _add(s.AMP, "PRECISION", "float16")
    # Weight-space blend of saved/evaluated student weights: ALPHA * trained + (1 - ALPHA) *
    # initial; 1.0 = off.
    _add(s, "WEIGHT_BLEND_ALPHA", 1.0)
    # Write the (blended) student in the EVA-CLIP and open_clip layouts when training ends.
    _add(s, "EXPORT_CLIP", True)
    # Draw OUTPUT_DIR/curves.png (losses, learning rate, evaluation metrics) from metrics.json at
    # every checkpoint period and when training ends (densevlm_d2/engine/curves.py).
    _add(s, "PLOT_CURVES", True)
    # Learning rate of the CLIP's trainable parameters relative to SOLVER.BASE_LR (CAT-Seg: 0.01;
    # the rest of the model trains at BASE_LR).
    _add(s, "CLIP_LR_MULTIPLIER", 1.0)


def add_densevlm_config(cfg: CN) -> CN:
    """Add every key of densevlm_d2 that ``cfg`` lacks (a detectron2 config, as ``get_cfg()``
    makes it). Returns ``cfg``."""
    add_clip_config(cfg)
    add_region_evaluation_config(cfg)
    add_region_training_config(cfg)
    add_fvit_config(cfg)
    add_dense_segmentation_config(cfg)
    add_cat_seg_config(cfg)
    add_solver_config(cfg)
    return cfg
