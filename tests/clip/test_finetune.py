"""What each MODEL.CLIP.FINETUNE mode trains, on the upstream modules, and that splitting an
nn.MultiheadAttention projection changes neither results nor the checkpoint layout."""

from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

import densevlm_d2
from densevlm_d2.clip.checkpoint import load_checkpoint
from densevlm_d2.clip.finetune import (
    attention_qv_parameters,
    attention_width,
    split_in_projection,
)
from densevlm_d2.clip.models import build_clip_model
from densevlm_d2.clip.text import encode_tokens
from densevlm_d2.modeling import CLIPViTBackbone
from tests.conftest import randomize_


def _trainable(backbone: CLIPViTBackbone) -> list[str]:
    return [n for n, p in backbone.model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("name", ["EVA02-Tiny-16", "ViT-Tiny-16"])
def test_attention_mode_trains_query_and_value_weights_of_both_towers(name):
    b = CLIPViTBackbone(model_name=name, finetune="attention", text_cache_dir=None)
    names = _trainable(b)
    visual = [n for n in names if n.startswith("visual.")]
    text = [n for n in names if not n.startswith("visual.")]
    layers = b.tower.num_blocks
    # every block's value weight; every block's query weight but the last block's, which the dense
    # value path never uses
    assert sum("v_proj" in n for n in visual) == layers
    assert sum("q_proj" in n for n in visual) == layers - 1
    assert len(text) == 2 * len(
        b.model.transformer.resblocks
        if name == "ViT-Tiny-16"
        else b.model.text.transformer.resblocks
    )
    assert all(("q_proj" in n or "v_proj" in n) and "bias" not in n for n in names)
    assert b.trains_text and not b.is_frozen


def test_full_and_frozen_modes(tiny_vit):
    full = CLIPViTBackbone(model_name="ViT-Tiny-16", finetune="full", text_cache_dir=None)
    frozen_names = {n for n, p in full.model.named_parameters() if not p.requires_grad}
    # the logit scale and the last block's query/key rows (a fused in_proj, so none) stay frozen
    assert frozen_names == {"logit_scale"}
    frozen = CLIPViTBackbone(model_name="ViT-Tiny-16", finetune="frozen", text_cache_dir=None)
    assert _trainable(frozen) == [] and frozen.is_frozen and not frozen.trains_text
    with pytest.raises(ValueError, match="FINETUNE must be one of"):
        CLIPViTBackbone(model_name="ViT-Tiny-16", finetune="lora", text_cache_dir=None)
    with pytest.raises(ValueError, match="TRAINABLE_BLOCKS .* is for MODEL.CLIP.FINETUNE 'blocks'"):
        CLIPViTBackbone(
            model_name="ViT-Tiny-16", finetune="attention", trainable_blocks=1, text_cache_dir=None
        )


def test_split_projection_keeps_outputs_and_checkpoint_layout(tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_clip_model("ViT-Tiny-16"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 224, 224)
    tokens = open_clip.get_tokenizer("ViT-Tiny-16")(["a photo of a cat", "sky"])
    ref_image, ref_text = model.encode_image(x), encode_tokens(model, tokens)
    params = attention_qv_parameters(model)
    assert all(isinstance(p, nn.Parameter) for p in params)
    after = model.state_dict()
    assert set(after) == set(before)  # still one in_proj_weight per attention layer
    assert all(torch.equal(after[k], before[k]) for k in before)
    torch.testing.assert_close(model.encode_image(x), ref_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(encode_tokens(model, tokens), ref_text, rtol=0, atol=1e-5)
    # a split model reads and writes the open_clip layout
    path = densevlm_d2.save_checkpoint(model, tmp_path / "split.pt", "open_clip")
    fresh = build_clip_model("ViT-Tiny-16")
    attention_qv_parameters(fresh)
    load_checkpoint(fresh, path)
    attn = fresh.visual.transformer.resblocks[0].attn
    c = attention_width(attn)
    torch.testing.assert_close(
        attn.v_proj_weight,
        before["visual.transformer.resblocks.0.attn.in_proj_weight"][2 * c :],
        rtol=0,
        atol=0,
    )


def test_split_is_idempotent_and_checks_its_input():
    attn = nn.MultiheadAttention(8, 2)
    assert split_in_projection(split_in_projection(attn)) is attn
    assert attn.in_proj_weight is None and attn.q_proj_weight.shape == (8, 8)
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        split_in_projection(nn.Linear(2, 2))


def test_attention_training_changes_only_query_and_value_weights():
    b = CLIPViTBackbone(model_name="EVA02-Tiny-16", finetune="attention", text_cache_dir=None)
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in b.model.parameters() if p.requires_grad], lr=1e-2)
    tokens = b.text_embedder.tokenizer(["a cat", "the sky"])
    dense = b.features(torch.randn(1, 3, 64, 64)).dense
    loss = dense.square().mean() + encode_tokens(b.model, tokens).square().mean()
    loss.backward()
    opt.step()
    changed = {k for k, v in b.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(
        ("q_proj" in k or "v_proj" in k or "in_proj_weight" in k) for k in changed
    ), changed
    # fused text in_proj: only its query and value rows moved
    key = "text.transformer.resblocks.0.attn.in_proj_weight"
    c = b.model.text.transformer.width
    delta = (b.model.state_dict()[key] - before[key]).abs().sum(dim=1)
    assert delta[:c].sum() > 0 and delta[c : 2 * c].sum() == 0 and delta[2 * c :].sum() > 0
