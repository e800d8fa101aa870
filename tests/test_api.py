"""The public Python API: load_clip and CLIPRegionEncoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import densevlm_d2
from densevlm_d2.clip import VocabularyError
from densevlm_d2.clip.preprocess import preprocess_crop


@pytest.fixture
def encoder(tiny_eva, tmp_path):
    path = densevlm_d2.save_checkpoint(tiny_eva, tmp_path / "tiny.pt", "eva_clip")
    return densevlm_d2.load_clip(
        "EVA02-Tiny-16", checkpoint=path, image_size=128, text_cache_dir=tmp_path / "txt"
    )


def _photo(h=90, w=120):
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_weights_and_properties(encoder, tiny_eva):
    for k, v in tiny_eva.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[k], v)
    assert (encoder.patch_size, encoder.embed_dim, encoder.token_grid) == (16, 64, (8, 8))
    assert not encoder.model.training


@torch.no_grad()
def test_region_features(encoder):
    photo = _photo()
    x, scale = encoder.preprocess(photo, return_scale=True)
    assert x.shape == (3, 128, 128) and scale == pytest.approx(128 / 120)
    boxes = torch.tensor([[0.0, 0.0, 60.0, 45.0], [30.0, 20.0, 119.0, 89.0]])
    masks = np.zeros((2, 90, 120), dtype=bool)
    masks[0, :45, :60] = True
    masks[1, 20:, 30:] = True
    grid_masks = encoder.preprocess_masks(masks)
    assert grid_masks.shape == (2, 8, 8) and grid_masks.dtype == torch.bool

    dense = encoder.encode_dense(x)
    assert dense.shape == (1, 64, 8, 8)
    fb = encoder.encode_boxes(x[None], [boxes * scale])
    fm = encoder.encode_masks(x, [grid_masks])
    both = encoder.encode_regions(x, boxes=[boxes * scale], masks=[grid_masks])
    assert torch.allclose(both["boxes"], fb) and torch.allclose(both["masks"], fm)
    assert fb.shape == fm.shape == (2, 64)
    for f in (fb, fm):
        assert torch.allclose(f.norm(dim=-1), torch.ones(2), atol=1e-5)
    # a mask and its box cover the same tokens here: their features agree closely, not exactly
    assert F.cosine_similarity(fb, fm).min() > 0.5

    crops = encoder.encode_crops(photo, boxes, enlarge=1.5)
    assert crops.shape == (2, 64)
    one = encoder.encode_image(
        preprocess_crop(photo, (0.0, 0.0, 75.0, 56.25))
    )  # 1.5x about the centre, clipped
    assert torch.allclose(crops[0], one[0], atol=1e-5)
    assert encoder.encode_crops(photo, torch.zeros(0, 4)).shape == (0, 64)

    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder.encode_dense(torch.zeros(2, 1, 64, 64))


@torch.no_grad()
def test_text_and_classification(encoder, tmp_path):
    t = encoder.encode_text(["a photo of a cat", "sky"])
    assert t.shape == (2, 64) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    names = ["cat", "sky", "grass"]
    classifier = encoder.text_embeddings(names)
    assert classifier.shape == (3, 64)
    assert len(list((tmp_path / "txt").glob("*.npy"))) == 1
    x = encoder.preprocess(_photo())
    logits = encoder.encode_boxes(x, [torch.tensor([[0.0, 0.0, 64.0, 64.0]])]) @ classifier.T
    assert logits.shape == (1, 3)


def test_save_and_reload(encoder, tmp_path):
    for fmt in ("eva_clip", "open_clip"):
        path = encoder.save(tmp_path / f"{fmt}.pt", fmt)
        again = densevlm_d2.load_clip("EVA02-Tiny-16", checkpoint=path, text_cache_dir=None)
        for k, v in encoder.model.state_dict().items():
            assert torch.equal(again.model.state_dict()[k], v)


def test_random_init_and_bad_name():
    enc = densevlm_d2.load_clip(
        "ViT-Tiny-16", image_size=(64, 96), text_cache_dir=None, random_init=True
    )
    assert enc.token_grid == (4, 6)
    with pytest.raises(ValueError, match="unsupported CLIP model"):
        densevlm_d2.load_clip("ViT-Z-99", random_init=True)
    # an unknown name is that, also without weights, with the names it is close to
    with pytest.raises(ValueError, match="unknown model; did you mean ViT-Tiny-16"):
        densevlm_d2.load_clip("ViT-Tiny-61")


def test_bad_boxes_and_masks_name_their_indices(encoder):
    x = encoder.preprocess(_photo())  # a 128 x 128 canvas
    good = [0.0, 0.0, 64.0, 64.0]
    boxes = torch.tensor(
        [good, [float("nan"), 0, 10, 10], [0, 0, float("inf"), 5], [50, 50, 40, 60],
         [200, 200, 300, 300], [10, 10, 10, 30], good]
    )  # fmt: skip
    with pytest.raises(ValueError) as e:
        encoder.encode_boxes(x, [boxes])
    msg = str(e.value)
    assert "boxes of image 0: not finite at indices [1, 2]" in msg
    assert "empty once clipped to the 128x128 canvas" in msg and "at indices [3, 4, 5]" in msg
    photo = _photo()  # 120 x 90
    with pytest.raises(ValueError, match=r"empty once clipped to the 120x90 image .* \[1\]"):
        encoder.encode_crops(photo, torch.tensor([good, [130.0, 0.0, 150.0, 20.0]]))
    with pytest.raises(ValueError, match="not finite at indices"):
        encoder.encode_crops(photo, torch.tensor([[float("nan")] * 4]))
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[1, 2:4, 2:4] = True
    with pytest.raises(ValueError, match=r"masks of image 0 cover no token at indices \[0, 2\]"):
        encoder.encode_masks(x, [masks])
    with pytest.raises(ValueError, match=r"\(N, 4\) xyxy"):
        encoder.encode_boxes(x, [torch.ones(3, 5)])


def test_vocabularies_must_be_lists_of_names(encoder, caplog):
    with pytest.raises(VocabularyError, match="is a list of class names, got the string 'cat'"):
        encoder.text_embeddings("cat")
    with pytest.raises(VocabularyError, match="got NoneType"):
        encoder.text_embeddings(None)
    with pytest.raises(VocabularyError, match=r"must be strings; .* NoneType at index 1$"):
        encoder.text_embeddings(["cat", None, "  "])
    with pytest.raises(VocabularyError, match=r"must not be blank; .* \['  ', ''\] at index 1, 2$"):
        encoder.text_embeddings(["cat", "  ", ""])
    with pytest.raises(VocabularyError, match="empty vocabulary"):
        encoder.text_embeddings([])
    with caplog.at_level("WARNING"):
        emb = encoder.text_embeddings(["cat", "sky", "cat"])
    assert "the vocabulary repeats ['cat']" in caplog.text and torch.equal(emb[0], emb[2])


@torch.no_grad()
def test_very_elongated_images(encoder, tmp_path):
    for size, (h, w) in ((64, (5000, 300)), (512, (10, 10000))):
        enc = densevlm_d2.load_clip("EVA02-Tiny-16", random_init=True, image_size=size)
        image = Image.fromarray(np.full((h, w, 3), 128, np.uint8))
        x, scale = enc.preprocess(image, return_scale=True)
        assert x.shape == (3, size, size) and scale == pytest.approx(size / max(h, w))
        masks = np.zeros((1, h, w), bool)
        masks[0, : h // 2] = True
        grid = enc.preprocess_masks(masks)
        assert grid.shape == (1, size // 16, size // 16) and grid.any()
        assert enc.encode_masks(x, [grid]).shape == (1, 64)
