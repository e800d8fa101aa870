"""CAT-Seg (Cho et al., CVPR 2024): open-vocabulary semantic segmentation by cost aggregation, on
any CLIP this project loads (EVA02-CLIP B/16 and L/14-336, OpenAI-style ViT-B/16; original,
CLIPSelf or DenseVLM weights).

What one forward pass computes (the published model, :mod:`densevlm_d2.modeling.cat_seg`):

* the image, normalised with the CLIP's mean/std, resized bilinearly to ``clip_resolution`` (384
  for 16-px models, 336 for L/14-336: a 24x24 token map);
* the CLIP's dense map (last block through its value path, ``dense_residual`` "cls" as CAT-Seg or
  "token" as DenseVLM/CLIPSelf; not normalised) and the outputs of two intermediate vision blocks
  (``guidance_blocks``: [3, 7] for B/16, [7, 15] for L/14), upsampled x2 and x4 by transposed
  convolutions as decoder guidance;
* the text embeddings of every class name in one prompt per template (``MODEL.CAT_SEG.TEXT``;
  published: "A photo of a {} in the scene" with the first synonym of each name), through the
  backbone's text route, with autograd when the text tower trains;
* the cost aggregator's (B, T, 4h, 4w) logits. Training: binary cross-entropy with logits against
  one-hot targets at the label's resolution (pixels labelled ``ignore_value`` have no class: every
  class's target is 0 there, as published). Inference: sigmoid scores; with ``sliding_window``, the
  published protocol: the (test-mapper-resized) image resized to ``test_size`` x ``test_size``,
  ``window``-pixel windows with ``overlap`` plus one global view, scores averaged, then resized to
  the original size.

What trains in the CLIP is the backbone's ``MODEL.CLIP.FINETUNE`` ("attention" as published: the
query and value projection weights of both towers); the CLIP's learning rate is
``SOLVER.CLIP_LR_MULTIPLIER`` x the head's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import build_detection_train_loader
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ...clip.text import TextSpec
from ...clip.towers import DENSE_RESIDUALS
from ...clip.vocabulary import Vocabulary
from ...data.build import build_sem_seg_test_loader
from ...data.mappers import SemSegTrainMapper
from ...data.vocabulary import training_vocabulary
from ..backbone.clip_vit import CLIPViTBackbone
from ..cat_seg import CostAggregator
from ..open_vocab import input_vocabulary, output_size, text_spec
from ..pixels import PixelNormalizer, check_image
from .base import DataContract, training_dicts

__all__ = ["CATSeg", "sliding_windows"]

_CAT_SEG_TEXT = TextSpec(prompts="cat_seg", style="plain", synonyms="first", ensemble=False)


def sliding_windows(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of ``window``-pixel windows with stride ``int(window * (1 - overlap))`` over
    ``size`` pixels (as ``nn.Unfold`` places them: the last window may stop short of the end)."""
    stride = int(window * (1 - overlap))
    if stride <= 0 or window > size:
        raise ValueError(f"no {window}-px windows with overlap {overlap} fit in {size} px")
    return list(range(0, size - window + 1, stride))


@META_ARCH_REGISTRY.register()
class CATSeg(DataContract, nn.Module):
    """See the module docstring.

    Inputs: dicts with ``image`` ((3, H, W) uint8 RGB); in training ``sem_seg`` ((H, W) labels of
    the training vocabulary); at test time ``dataset_name`` or ``classes`` (the vocabulary,
    :func:`~densevlm_d2.modeling.open_vocab.input_vocabulary`; its queries are scored) and
    optionally ``height`` / ``width`` (output size). Outputs at test time: ``{"sem_seg": (T,
    height, width)}`` class scores in [0, 1].
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: CLIPViTBackbone,
        aggregator: CostAggregator,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        train_classes: Vocabulary | Sequence[str] | None = None,
        text: TextSpec = _CAT_SEG_TEXT,
        clip_resolution: int = 384,
        guidance_blocks: Sequence[int] = (3, 7),
        decoder_guidance_dims: Sequence[int] = (256, 128),
        dense_residual: str = "cls",
        ignore_value: int = 255,
        train_pooling: Sequence[int] = (2, 2),
        test_pooling: Sequence[int] = (1, 1),
        size_divisibility: int = 0,
        sliding_window: bool = True,
        test_size: int = 640,
        window: int = 384,
        overlap: float = 0.333,
    ):
        super().__init__()
        if dense_residual not in DENSE_RESIDUALS:
            raise ValueError(
                f"MODEL.CAT_SEG.DENSE_RESIDUAL must be one of {DENSE_RESIDUALS}, got "
                f"{dense_residual!r}"
            )
        if len(guidance_blocks) != 2 or len(decoder_guidance_dims) != 2:
            raise ValueError("MODEL.CAT_SEG.GUIDANCE_BLOCKS and DECODER_GUIDANCE_DIMS take 2 each")
        _check_resolution(clip_resolution, backbone.patch_size)
        if text.ensemble or text.synonyms == "max":
            raise ValueError(
                "CAT-Seg's cost volume takes one embedding per class and template (no ensemble, "
                f"no per-synonym queries), got {text}"
            )
        if sliding_window:
            sliding_windows(test_size, window, overlap)  # fails early on a bad protocol
        self.backbone = backbone
        self.aggregator = aggregator
        width = backbone.tower.width
        self.guidance_up = nn.ModuleList(
            [
                nn.ConvTranspose2d(width, decoder_guidance_dims[0], kernel_size=2, stride=2),
                nn.ConvTranspose2d(width, decoder_guidance_dims[1], kernel_size=4, stride=4),
            ]
        )
        self.train_classes = (
            Vocabulary.from_names(train_classes) if train_classes is not None else None
        )
        self.text = text
        self.clip_resolution = clip_resolution
        self.guidance_blocks = list(guidance_blocks)
        self.dense_residual = dense_residual
        self.ignore_value = ignore_value
        self.train_pooling, self.test_pooling = tuple(train_pooling), tuple(test_pooling)
        self.size_divisibility = size_divisibility
        self.sliding_window = sliding_window
        self.test_size, self.window, self.overlap = test_size, window, overlap
        self.pixels = PixelNormalizer(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CAT_SEG
        text = text_spec(c, "MODEL.CAT_SEG", ensemble=False)
        backbone = build_backbone(cfg)
        embed_dim = backbone.embed_dim
        _check_resolution(c.CLIP_RESOLUTION, backbone.patch_size)
        grid = c.CLIP_RESOLUTION // backbone.patch_size
        if grid % min(c.WINDOW_SIZE, grid):
            raise ValueError(
                f"MODEL.CAT_SEG.WINDOW_SIZE {c.WINDOW_SIZE} does not divide the {grid}x{grid} "
                f"token map (CLIP_RESOLUTION {c.CLIP_RESOLUTION} / patch {backbone.patch_size})"
            )
        aggregator = CostAggregator(
            embed_dim=embed_dim,
            num_prompts=len(text.templates),
            feature_size=(grid, grid),
            hidden_dim=c.HIDDEN_DIM,
            text_guidance_dim=c.TEXT_GUIDANCE_DIM,
            appearance_guidance_dim=c.APPEARANCE_GUIDANCE_DIM,
            decoder_dims=c.DECODER_DIMS,
            decoder_guidance_dims=c.DECODER_GUIDANCE_DIMS,
            decoder_guidance_proj_dims=c.DECODER_GUIDANCE_PROJ_DIMS,
            num_layers=c.NUM_LAYERS,
            num_heads=c.NUM_HEADS,
            window=c.WINDOW_SIZE,
            attention_type=c.ATTENTION_TYPE,
            pad_len=c.MAX_CLASSES,
            grad_checkpointing=c.GRAD_CHECKPOINTING,
        )
        return {
            "backbone": backbone,
            "aggregator": aggregator,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "train_classes": training_vocabulary(cfg.DATASETS.TRAIN),
            "text": text,
            "clip_resolution": c.CLIP_RESOLUTION,
            "guidance_blocks": list(c.GUIDANCE_BLOCKS),
            "decoder_guidance_dims": list(c.DECODER_GUIDANCE_DIMS),
            "dense_residual": c.DENSE_RESIDUAL,
            "ignore_value": c.IGNORE_VALUE,
            "train_pooling": list(c.POOLING_SIZES),
            "test_pooling": list(c.TEST_POOLING_SIZES),
            "size_divisibility": cfg.INPUT.get("SIZE_DIVISIBILITY", -1),
            "sliding_window": c.SLIDING_WINDOW,
            "test_size": c.TEST_SIZE,
            "window": c.WINDOW,
            "overlap": c.OVERLAP,
        }

    # -- data ------------------------------------------------------------------------------------
    @classmethod
    def build_train_loader(cls, cfg):
        """Crops of semantic-segmentation records (:class:`~densevlm_d2.data.mappers.
        SemSegTrainMapper`)."""
        return build_detection_train_loader(
            training_dicts(cfg),
            mapper=SemSegTrainMapper(cfg, True),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Test images resized so the short side is ``INPUT.MIN_SIZE_TEST`` (published)."""
        return build_sem_seg_test_loader(cfg, dataset_name, min_size=cfg.INPUT.MIN_SIZE_TEST)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    # -- text --------------------------------------------------------------------------------------
    def text_embeddings(self, classes: Vocabulary | Sequence[str]) -> torch.Tensor:
        """(T, P, D) unit-norm embeddings of every class in every template, float32, on the model's
        device: the backbone's text route, with autograd while the text tower trains (otherwise
        cached by the backbone)."""
        grad = self.training and self.backbone.trains_text and torch.is_grad_enabled()
        emb = self.backbone.text_embeddings(Vocabulary.from_names(classes), self.text, grad=grad)
        return emb.to(self.device)

    # -- the model ---------------------------------------------------------------------------------
    def standardize(self, images: list[torch.Tensor]) -> torch.Tensor:
        """0-255 RGB images -> normalised with the CLIP's mean/std, then zero-padded to a batch
        (a multiple of ``size_divisibility``), as published."""
        images = [self.pixels(x) for x in images]
        return ImageList.from_tensors(images, max(self.size_divisibility, 0)).tensor

    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) 0-255 RGB -> normalised and resized to the CLIP resolution."""
        return self.to_clip_resolution(self.pixels(images))

    def to_clip_resolution(self, x: torch.Tensor) -> torch.Tensor:
        size = (self.clip_resolution, self.clip_resolution)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def logits(self, clip_images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, R, R) images at the CLIP resolution, (T, P, D) text -> (B, T, 4R/p,
        4R/p) logits."""
        out = self.backbone.features(
            clip_images,
            dense=True,
            blocks=self.guidance_blocks,
            dense_residual=self.dense_residual,
            normalize=False,
        )
        dense = out.dense.float()
        guidance = [dense] + [
            up(out.blocks[i].float())
            for up, i in zip(self.guidance_up, self.guidance_blocks, strict=True)
        ]
        pooling = self.train_pooling if self.training else self.test_pooling
        text = text.expand(clip_images.shape[0], *text.shape)
        return self.aggregator(dense, text, guidance, pooling)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits, one-hot targets at the labels' size (see the module
        docstring for ``ignore_value``)."""
        num_classes = logits.shape[1]
        valid = targets != self.ignore_value
        labels = targets[valid]
        if labels.numel():
            low, high = (int(v) for v in labels.aminmax())  # one host sync per step
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"labels must be in [0, {num_classes}) or {self.ignore_value} (ignored); "
                    f"found {low}..{high}: the training dataset's labels do not match its "
                    f"{num_classes}-class vocabulary"
                )
        logits = F.interpolate(
            logits, size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        onehot = torch.zeros_like(logits)
        index = torch.where(valid, targets, 0).unsqueeze(1)
        onehot.scatter_(1, index, valid.unsqueeze(1).to(onehot.dtype))
        return F.binary_cross_entropy_with_logits(logits, onehot)

    def forward(self, batched_inputs):
        if not self.training:
            return [self.inference(inp) for inp in batched_inputs]
        if self.train_classes is None:
            raise ValueError("CATSeg trains on DATASETS.TRAIN's classes: no training dataset")
        images = self.standardize([x["image"] for x in batched_inputs])
        targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
        targets = ImageList.from_tensors(
            targets, max(self.size_divisibility, 0), pad_value=self.ignore_value
        ).tensor.long()
        text = self.text_embeddings(self.train_classes)
        logits = self.logits(self.to_clip_resolution(images), text)
        return {"loss_sem_seg": self.loss(logits, targets)}

    @torch.no_grad()
    def inference(self, inp: dict) -> dict:
        queries = input_vocabulary(inp).queries
        return {"sem_seg": self.segment(inp["image"], queries, output_size(inp))}

    @torch.no_grad()
    def segment(
        self,
        image: torch.Tensor,
        classes: Vocabulary | Sequence[str],
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(3, H, W) RGB image (0-255) -> (T, H', W') class scores in [0, 1] for the vocabulary
        ``classes`` (a list of names is checked as one; ``output_size``: default the image's)."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) RGB image, got shape {tuple(image.shape)}")
        check_image(image)
        output_size = tuple(output_size or image.shape[-2:])
        text = self.text_embeddings(classes)
        image = image.to(self.device).float()
        if self.sliding_window:
            scores, size = self._sliding_window_scores(image, text), (self.test_size,) * 2
        else:
            # one pass over the padded image; unlike the published code, the scores are resized to
            # the padded size and cropped to the image before the final resize
            padded = self.standardize([image])
            scores = self.logits(self.to_clip_resolution(padded), text).sigmoid()
            size = tuple(image.shape[-2:])
            scores = F.interpolate(
                scores, size=padded.shape[-2:], mode="bilinear", align_corners=False
            )[0]
        return sem_seg_postprocess(scores, size, *output_size)

    def _sliding_window_scores(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The published protocol: (T, test_size, test_size) averaged window and global scores."""
        s, k = self.test_size, self.window
        resized = _resize(image, (s, s))
        starts = sliding_windows(s, k, self.overlap)
        crops = [resized[:, y : y + k, x : x + k] for y in starts for x in starts]
        views = torch.stack(crops + [_resize(image, (k, k))])
        scores = self.logits(self.clip_input(views), text)
        scores = F.interpolate(scores, size=(k, k), mode="bilinear", align_corners=False).sigmoid()
        total = scores.new_zeros(scores.shape[1], s, s)
        count = scores.new_zeros(1, s, s)
        for i, (y, x) in enumerate((y, x) for y in starts for x in starts):
            total[:, y : y + k, x : x + k] += scores[i]
            count[:, y : y + k, x : x + k] += 1
        local = total / count
        glob = F.interpolate(scores[-1:], size=(s, s), mode="bilinear", align_corners=False)[0]
        return (local + glob) / 2


def _check_resolution(resolution: int, patch: int) -> None:
    if resolution % patch:
        raise ValueError(
            f"MODEL.CAT_SEG.CLIP_RESOLUTION {resolution} is not a multiple of the patch size "
            f"{patch}"
        )


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
