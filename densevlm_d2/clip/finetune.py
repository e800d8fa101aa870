"""Which CLIP weights train: the last vision blocks, the attention query/value projections of both
towers (CAT-Seg's recipe), everything, or nothing.

CAT-Seg fine-tunes only the query and value projection *weights* of every attention layer of both
towers (OpenAI-style towers keep the three projections in one ``in_proj_weight`` tensor, which it
splits). Here that is done on the upstream modules without changing them:

* timm's EVA02 attention has separate ``q_proj`` / ``k_proj`` / ``v_proj`` layers already: their
  ``q_proj.weight`` and ``v_proj.weight`` train;
* ``nn.MultiheadAttention`` (open_clip's OpenAI-style vision tower and every text tower) is switched
  to its own separate-projection mode (``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``,
  the layout it uses when query/key/value sizes differ) by :func:`split_in_projection`; only the
  query and value weights train. State-dict hooks keep the checkpoint layout open_clip's: the
  module's ``state_dict`` still holds one ``in_proj_weight`` (the three concatenated), and loading
  one fills the three tensors. Checkpoints, exports and text-embedding caches are unchanged.

A frozen tensor also never changes under AdamW's decoupled weight decay, which a gradient mask on a
shared tensor would not give.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FINETUNE_MODES", "attention_qv_parameters", "split_in_projection", "value_weight"]

#: ``MODEL.CLIP.FINETUNE``: "blocks": the last ``MODEL.CLIP.TRAINABLE_BLOCKS`` vision blocks (the
#: DenseVLM/CLIPSelf recipe); "frozen": nothing; "attention": the attention query and value
#: projection weights of every block of both towers (CAT-Seg); "full": every CLIP parameter except
#: the logit scale
FINETUNE_MODES = ("blocks", "frozen", "attention", "full")

_SPLIT = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def _fuse_on_save(module, state_dict, prefix, local_metadata) -> None:
    parts = [state_dict.pop(prefix + name) for name in _SPLIT]
    state_dict[prefix + "in_proj_weight"] = torch.cat(parts, dim=0)


def _split_on_load(module, state_dict, prefix, *args) -> None:
    fused = state_dict.pop(prefix + "in_proj_weight", None)
    if fused is not None:
        for name, part in zip(_SPLIT, fused.chunk(3, dim=0), strict=True):
            state_dict[prefix + name] = part


def split_in_projection(attn: nn.MultiheadAttention) -> nn.MultiheadAttention:
    """Give ``attn`` separate query/key/value projection weights in place (same values; a no-op
    when it has them already). Its state dict keeps the fused ``in_proj_weight`` key."""
    if not isinstance(attn, nn.MultiheadAttention):
        raise TypeError(f"expected nn.MultiheadAttention, got {type(attn).__name__}")
    if attn.in_proj_weight is None:
        return attn
    if not (attn.kdim == attn.vdim == attn.embed_dim):
        raise ValueError("split_in_projection needs query, key and value of the model's width")
    weight = attn.in_proj_weight
    for name, part in zip(_SPLIT, weight.detach().chunk(3, dim=0), strict=True):
        attn.register_parameter(name, nn.Parameter(part.clone(), weight.requires_grad))
    attn.register_parameter("in_proj_weight", None)
    attn._qkv_same_embed_dim = False  # the module's own switch for separate projections
    attn.register_state_dict_post_hook(_fuse_on_save)
    attn.register_load_state_dict_pre_hook(_split_on_load)
    return attn


def value_weight(attn: nn.MultiheadAttention) -> torch.Tensor:
    """The value projection weight of an ``nn.MultiheadAttention``, fused or split."""
    if attn.in_proj_weight is not None:
        c = attn.embed_dim
        return attn.in_proj_weight[2 * c :]
    return attn.v_proj_weight


def attention_qv_parameters(clip: nn.Module) -> list[nn.Parameter]:
    """The query and value projection weights of every attention layer of an open_clip model's
    towers, splitting fused ``nn.MultiheadAttention`` projections first. A clear error for an
    attention layer whose query and value weights cannot be told apart (timm's fused ``qkv``)."""
    params: list[nn.Parameter] = []
    for name, module in clip.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            split_in_projection(module)
            params += [module.q_proj_weight, module.v_proj_weight]
        elif hasattr(module, "qkv"):
            # timm's attention: EVA's has separate projections unless built with qkv_fused;
            # ViT's (SigLIP) and PE's have the fused one only
            if getattr(module, "q_proj", None) is None:
                raise ValueError(
                    f"{name}: fused qkv projection; attention fine-tuning needs a model built "
                    "with separate query/key/value projections"
                )
            params += [module.q_proj.weight, module.v_proj.weight]
    if not params:
        raise ValueError("no attention layer found for attention fine-tuning")
    return params
