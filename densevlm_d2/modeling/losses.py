"""Region-language alignment losses as plain functions (docs/published_code.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "DenseVLMLossStats",
    "clipself_loss",
    "densevlm_loss",
    "densevlm_loss_terms",
    "densevlm_regions",
    "regionclip_loss",
]


class DenseVLMLossStats(dict):
    """Counts of the regions a :func:`densevlm_loss` call used: ``kept``, ``thing``, ``stuff``."""


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student), averaged over regions (``batchmean``)."""
    return F.kl_div(
        student_logits.log_softmax(-1), teacher_logits.softmax(-1), reduction="batchmean"
    )


def densevlm_loss(*args, **kwargs) -> tuple[torch.Tensor, DenseVLMLossStats]:
    """DenseVLM's decoupled region distillation: the sum of :func:`densevlm_loss_terms` (same
    arguments)."""
    terms, stats = densevlm_loss_terms(*args, **kwargs)
    return terms["thing"] + terms["stuff"], stats


def densevlm_regions(
    teacher_features: torch.Tensor,
    teacher_text: torch.Tensor,
    class_is_thing: torch.Tensor,
    temperature: float = 0.01,
    threshold: float = 0.3,
    normalize_text: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's side of :func:`densevlm_loss_terms`, without gradients: (teacher logits
    (R, K), thing regions (R,) bool, stuff regions (R,) bool); a region below the threshold is
    neither."""
    with torch.no_grad():
        ft = F.normalize(teacher_features.float(), dim=-1)
        tt = teacher_text.float()
        if normalize_text:
            tt = F.normalize(tt, dim=-1)
        is_thing = class_is_thing.to(torch.bool).to(ft.device)
        teacher_logits = ft @ tt.T / temperature
        top_prob, label = teacher_logits.softmax(-1).max(-1)
        keep = top_prob > threshold
        return teacher_logits, is_thing[label] & keep, ~is_thing[label] & keep


def densevlm_loss_terms(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    student_text: torch.Tensor,
    teacher_text: torch.Tensor,
    class_is_thing: torch.Tensor,
    temperature: float = 0.01,
    threshold: float = 0.3,
    stuff_classes: str = "all",
    normalize_text: bool = True,
) -> tuple[dict[str, torch.Tensor], DenseVLMLossStats]:
    """DenseVLM's decoupled region distillation, its thing and stuff terms apart.

    The frozen teacher (P-VLM) labels each region: ``p = softmax(cos(teacher feature, teacher class
    embeddings) / temperature)``; regions whose top probability is not above ``threshold`` are
    dropped (region denoising); the others are thing or stuff regions by their top class. Then

    * thing regions: KL(teacher || student) over the thing classes only;
    * stuff regions: KL(teacher || student) over all classes (``stuff_classes="all"``, as the
      published code does) or over the stuff classes only (``"stuff"``, as the paper's figure
      draws);

    each term is ``kl_div(log_softmax(student), softmax(teacher), reduction="batchmean")`` over its
    own regions, with cosine similarities divided by ``temperature`` on both sides; the loss is
    their sum (:func:`densevlm_loss`). A term with no region is 0 (still attached to
    ``student_features`` so every parameter gets a gradient).

    Args:
        student_features: (R, D_s) student region features (normalised here).
        teacher_features: (R, D_t) teacher region features of the same regions.
        student_text / teacher_text: (K, D_s) / (K, D_t) class embeddings (normalised here).
        class_is_thing: (K,) bool.
        normalize_text: L2-normalise the class embeddings (the published code uses its 316-class
            files as they are, with row norms of about 0.9).
    Returns:
        ({"thing": loss, "stuff": loss}, stats with the numbers of kept, thing and stuff regions).
    """
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"{student_features.shape[0]} student but {teacher_features.shape[0]} "
            "teacher region features"
        )
    if student_text.shape[0] != teacher_text.shape[0] or student_text.shape[0] != len(
        class_is_thing
    ):
        raise ValueError(
            f"vocabulary sizes differ: student {student_text.shape[0]}, teacher "
            f"{teacher_text.shape[0]}, thing flags {len(class_is_thing)}"
        )
    if stuff_classes not in ("all", "stuff"):
        raise ValueError(f"stuff_classes must be 'all' or 'stuff', got {stuff_classes!r}")
    teacher_logits, thing_region, stuff_region = densevlm_regions(
        teacher_features, teacher_text, class_is_thing, temperature, threshold, normalize_text
    )
    fs = F.normalize(student_features.float(), dim=-1)
    ts = F.normalize(student_text.float(), dim=-1) if normalize_text else student_text.float()
    is_thing = class_is_thing.to(torch.bool).to(fs.device)
    student_logits = fs @ ts.T / temperature
    stats = DenseVLMLossStats(
        kept=int((thing_region | stuff_region).sum()),
        thing=int(thing_region.sum()),
        stuff=int(stuff_region.sum()),
    )
    zero = student_features.sum() * 0.0
    terms = {"thing": zero, "stuff": zero}
    if thing_region.any():
        terms["thing"] = zero + _kl(
            student_logits[thing_region][:, is_thing], teacher_logits[thing_region][:, is_thing]
        )
    if stuff_region.any():
        columns = ~is_thing if stuff_classes == "stuff" else slice(None)
        terms["stuff"] = zero + _kl(
            student_logits[stuff_region][:, columns], teacher_logits[stuff_region][:, columns]
        )
    return terms, stats


def clipself_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """CLIPSelf: ``1 - mean cosine`` between the student's region features (dense-map RoIAlign) and
    the frozen teacher's CLS embeddings of the region crops."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student {tuple(student_features.shape)} and teacher "
            f"{tuple(teacher_features.shape)} features differ"
        )
    cos = (
        F.normalize(student_features.float(), dim=-1)
        * F.normalize(teacher_features.float(), dim=-1)
    ).sum(-1)
    return 1.0 - cos.mean()


def regionclip_loss(
    box_features: torch.Tensor,
    labels: torch.Tensor,
    concept_embeddings: torch.Tensor,
    logit_scale: float,
    num_sampled: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RegionCLIP as re-implemented in the DenseVLM repository: sigmoid BCE between box-to-concept
    logits (cosine x ``logit_scale``) and one-hot pseudo labels, over ``num_sampled`` concepts
    (every
    label of the batch plus random other concepts), summed over concepts, averaged over boxes."""
    logits = (
        F.normalize(box_features.float(), dim=-1)
        @ F.normalize(concept_embeddings.float(), dim=-1).T
    ) * logit_scale
    num_concepts = logits.shape[1]
    target = torch.zeros_like(logits)
    target[torch.arange(len(labels), device=labels.device), labels] = 1.0
    appeared = torch.unique(labels)
    if len(appeared) < min(num_sampled, num_concepts):  # else every concept is already in
        weights = torch.ones(num_concepts, device=logits.device)
        weights[appeared] = 0
        extra = torch.multinomial(
            weights,
            min(num_sampled, num_concepts) - len(appeared),
            replacement=False,
            generator=generator,
        )
        appeared = torch.cat([appeared, extra])
    loss = F.binary_cross_entropy_with_logits(
        logits[:, appeared], target[:, appeared], reduction="none"
    )
    return loss.sum(-1).mean()
