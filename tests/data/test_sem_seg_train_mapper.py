"""The semantic-segmentation training mapper and the SSD colour distortion, on real files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from densevlm_d2.data import register_vocabulary
from densevlm_d2.data.mappers import SemSegTrainMapper
from densevlm_d2.data.transforms import (
    ColorAugSSD,
    ColorAugSSDTransform,
    hsv_to_rgb,
    rgb_to_hsv,
)

H, W = 100, 150
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    dtype=np.uint8,
)


def blocky_label(height: int = H, width: int = W, block: int = 16, seed: int = 0) -> np.ndarray:
    """(height, width) class indices 0..5 in block x block squares, some squares ignored (255)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(PALETTE), (-(-height // block), -(-width // block)))
    cells[rng.random(cells.shape) < 0.1] = 255
    return np.kron(cells, np.ones((block, block), np.int64))[:height, :width]


def colour_of(label: np.ndarray) -> np.ndarray:
    """The image whose colour encodes the label (ignored pixels black)."""
    image = np.zeros((*label.shape, 3), np.uint8)
    known = label != 255
    image[known] = PALETTE[label[known]]
    return image


@pytest.fixture
def files(tmp_path):
    """A colour-coded png image, its uint8 png label and a jpg image of the same size."""
    label = blocky_label()
    Image.fromarray(colour_of(label)).save(tmp_path / "img.png")
    Image.fromarray(colour_of(label)).save(tmp_path / "img.jpg", quality=95)
    Image.fromarray(label.astype(np.uint8)).save(tmp_path / "label.png")
    return tmp_path, label


def record(tmp_path, image="img.png", label="label.png") -> dict:
    return {
        "file_name": str(tmp_path / image),
        "sem_seg_file_name": str(tmp_path / label),
        "image_id": "img",
    }


#: the six classes of the labels (the mapper reads the training datasets' vocabulary)
CLASSES = ["red", "green", "yellow", "blue", "orange", "purple"]


def train_cfg(crop: bool = True, **extra):
    cfg = get_cfg()
    register_vocabulary("sem_seg_train_mapper_test_vocabulary", CLASSES)  # no dataset
    cfg.DATASETS.TRAIN = ("sem_seg_train_mapper_test_vocabulary",)
    cfg.INPUT.MIN_SIZE_TRAIN = (80,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.CROP.ENABLED = crop
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (64, 64)
    cfg.INPUT.FORMAT = "RGB"  # as CAT-Seg's configs (detectron2's default is BGR)
    for key, value in extra.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def test_from_config_and_output_types(files):
    tmp_path, _ = files
    np.random.seed(0)
    mapper = SemSegTrainMapper(train_cfg())
    kinds = [type(a) for a in mapper.augmentations.augs]
    assert kinds == [T.ResizeShortestEdge, T.RandomCrop_CategoryAreaConstraint, T.RandomFlip]
    assert mapper.ignore_label == 255 and mapper.size_divisibility == -1
    rec = record(tmp_path, image="img.jpg")
    out = mapper(rec)
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].shape == (64, 64) and out["sem_seg"].dtype == torch.int64
    assert out["file_name"] == rec["file_name"] and out["image_id"] == "img"
    assert "image" not in rec and "width" not in rec  # the record itself is not changed
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    # without the crop: the shortest edge resized to 80 (100 x 150 -> 80 x 120)
    np.random.seed(1)
    uncropped = SemSegTrainMapper(train_cfg(crop=False))(record(tmp_path))
    assert uncropped["image"].shape == (3, 80, 120) and uncropped["sem_seg"].shape == (80, 120)
    np.random.seed(1)
    bgr = SemSegTrainMapper(train_cfg(crop=False, FORMAT="BGR"))(record(tmp_path))
    assert torch.equal(bgr["image"], uncropped["image"].flip(0))


def test_from_config_optional_keys(files):
    name = "sem_seg_train_mapper_test_ignore_200"
    register_vocabulary(name, CLASSES)
    MetadataCatalog.get(name).set(ignore_label=200)
    cfg = train_cfg(COLOR_AUG_SSD=True, SIZE_DIVISIBILITY=32, FORMAT="BGR")
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    args = SemSegTrainMapper.from_config(cfg)
    crop, color = args["augmentations"][1:3]
    assert isinstance(color, ColorAugSSD) and color.img_format == "BGR"
    assert crop.single_category_max_area == 0.75 and crop.ignored_category == 200
    assert args["ignore_label"] == 200 and args["size_divisibility"] == 32
    assert args["image_format"] == "BGR" and args["num_classes"] == 6
    tmp_path, label = files
    Image.fromarray(np.where(label == 255, 200, label).astype(np.uint8)).save(
        tmp_path / "label_200.png"
    )
    np.random.seed(0)
    out = SemSegTrainMapper(**args)(record(tmp_path, label="label_200.png"))
    assert out["image"].shape == (3, 64, 64) and out["sem_seg"].shape == (64, 64)
    with pytest.raises(ValueError, match="for training"):
        SemSegTrainMapper.from_config(cfg, is_train=False)


def _interior(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels whose (2 radius + 1)^2 neighbourhood has one label, away from the borders (a crop
    border may have been blended with pixels outside it): no resize blending there."""
    padded = np.pad(label, radius, constant_values=-1)
    same = np.ones(label.shape, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[radius + dy : radius + dy + label.shape[0]]
            same &= shifted[:, radius + dx : radius + dx + label.shape[1]] == label
    return same


def test_image_and_label_transformed_together(files):
    tmp_path, _ = files
    mapper = SemSegTrainMapper(train_cfg(MIN_SIZE_TRAIN=(72, 80, 96)))
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(record(tmp_path))
        image = out["image"].permute(1, 2, 0).numpy().astype(int)
        label = out["sem_seg"].numpy()
        inside = _interior(label)
        assert inside.mean() > 0.3
        expected = colour_of(label).astype(int)
        assert np.abs(image[inside] - expected[inside]).max() <= 2, seed


def test_flip_moves_image_and_label_together(files):
    tmp_path, _ = files
    resize = [T.ResizeShortestEdge(80, 1333)]
    plain = SemSegTrainMapper(augmentations=resize)(record(tmp_path))["sem_seg"]
    mapper = SemSegTrainMapper(augmentations=[*resize, T.RandomFlip()])
    flips = []
    for seed in range(8):
        np.random.seed(seed)
        out = mapper(record(tmp_path))
        flips.append(torch.equal(out["sem_seg"], plain.flip(-1)))
        assert flips[-1] or torch.equal(out["sem_seg"], plain)
        inside = _interior(out["sem_seg"].numpy())
        expected = colour_of(out["sem_seg"].numpy()).astype(int)
        image = out["image"].permute(1, 2, 0).numpy().astype(int)
        assert np.abs(image[inside] - expected[inside]).max() <= 2, seed
    assert any(flips) and not all(flips)


def test_padding_to_size_divisibility(files):
    tmp_path, label = files
    for ignore in (255, 200):
        mapper = SemSegTrainMapper(augmentations=[], ignore_label=ignore, size_divisibility=32)
        out = mapper(record(tmp_path))
        image, sem_seg = out["image"], out["sem_seg"]
        assert image.shape == (3, 128, 160) and sem_seg.shape == (128, 160)
        assert torch.equal(sem_seg[:H, :W], torch.from_numpy(label))
        assert torch.equal(image[:, :H, :W], torch.from_numpy(colour_of(label)).permute(2, 0, 1))
        assert (sem_seg[H:] == ignore).all() and (sem_seg[:, W:] == ignore).all()
        assert (image[:, H:] == 128).all() and (image[:, :, W:] == 128).all()
    exact = SemSegTrainMapper(augmentations=[], size_divisibility=50)(record(tmp_path))
    assert exact["sem_seg"].shape == (H, W)  # already a multiple: no padding


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_labels_keep_their_values(tmp_path, suffix):
    classes = np.array([0, 300, 1000, 40000, 65535])
    label = classes[blocky_label() % len(classes)]
    Image.fromarray(colour_of(blocky_label())).save(tmp_path / "img.png")
    Image.fromarray(label.astype(np.uint16)).save(tmp_path / f"label.{suffix}")
    rec = record(tmp_path, label=f"label.{suffix}")
    out = SemSegTrainMapper(augmentations=[])(rec)
    assert torch.equal(out["sem_seg"], torch.from_numpy(label))
    np.random.seed(0)
    resized = SemSegTrainMapper(augmentations=[T.ResizeShortestEdge(80, 1333), T.RandomFlip()])(rec)
    assert resized["sem_seg"].shape == (80, 120)
    assert set(resized["sem_seg"].unique().tolist()) == set(classes.tolist())


def test_errors(files):
    tmp_path, label = files
    mapper = SemSegTrainMapper(augmentations=[])
    with pytest.raises(ValueError, match="has no sem_seg_file_name: not a semantic-segmentation"):
        mapper({"file_name": str(tmp_path / "img.png"), "image_id": 3})
    Image.fromarray(label[:, :140].astype(np.uint8)).save(tmp_path / "narrow.png")
    with pytest.raises(
        ValueError, match=r"narrow\.png \(image .*img\.png\): the labels are 140x100 .* is 150x100"
    ):
        mapper(record(tmp_path, label="narrow.png"))
    Image.fromarray(colour_of(label)).save(tmp_path / "rgb_label.png")
    with pytest.raises(ValueError, match="one class index per pixel"):
        mapper(record(tmp_path, label="rgb_label.png"))


# --- the SSD colour distortion ---------------------------------------------------------------


def random_image(seed: int = 0, shape=(48, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_color_aug_is_seeded_and_changes_only_the_image():
    image = random_image()
    label = np.random.default_rng(1).integers(0, 6, image.shape[:2]).astype(np.float64)
    changed = 0
    for seed in range(8):
        results = []
        for _ in range(2):
            np.random.seed(seed)
            tfm = ColorAugSSD().get_transform(image)
            assert isinstance(tfm, ColorAugSSDTransform)
            results.append((tfm.apply_image(image), tfm.apply_segmentation(label)))
        assert np.array_equal(results[0][0], results[1][0])
        assert results[0][1] is label
        changed += not np.array_equal(results[0][0], image)
    assert changed >= 6
    # in the mapper, with every step drawn: the image changes, the label does not
    aug_input = T.AugInput(image.copy(), sem_seg=label.copy())
    np.random.seed(0)
    T.AugmentationList([ColorAugSSD(prob=1.0)])(aug_input)
    assert not np.array_equal(aug_input.image, image)
    assert np.array_equal(aug_input.sem_seg, label)
    coords = np.array([[1.5, 2.0], [30.0, 40.0]])
    assert np.array_equal(tfm.apply_coords(coords.copy()), coords)


def test_color_aug_draws():
    np.random.seed(0)
    draws = [ColorAugSSD().get_transform(random_image()) for _ in range(400)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        values = [getattr(t, name) for t in draws if getattr(t, name) is not None]
        assert 150 < len(values) < 250, name  # each step with probability 0.5
    assert all(-32 <= t.brightness <= 32 for t in draws if t.brightness is not None)
    assert all(0.5 <= t.contrast <= 1.5 for t in draws if t.contrast is not None)
    hues = {t.hue for t in draws if t.hue is not None}
    assert hues <= set(range(-18, 19)) and {-18, 18} <= hues and isinstance(hues.pop(), int)
    assert 150 < sum(t.contrast_first for t in draws) < 250


def test_color_aug_steps():
    image = random_image()
    none = ColorAugSSDTransform()
    assert np.array_equal(none.apply_image(image), image)
    # brightness and contrast: float, clipped, truncated
    shifted = ColorAugSSDTransform(brightness=-20.6).apply_image(image)
    assert np.array_equal(shifted, np.clip(image - 20.6, 0, 255).astype(np.uint8))
    scaled = ColorAugSSDTransform(contrast=1.3).apply_image(image)
    assert np.array_equal(scaled, np.clip(image * np.float32(1.3), 0, 255).astype(np.uint8))
    # hue: red + 120 degrees (60 units) is green; saturation 0 is grey
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert (ColorAugSSDTransform(hue=60).apply_image(red) == [0, 255, 0]).all()
    assert (ColorAugSSDTransform(hue=-60).apply_image(red) == [0, 0, 255]).all()
    assert (ColorAugSSDTransform(saturation=0.0).apply_image(red) == 255).all()
    # BGR images: the same distortion on the reversed channels
    bgr = ColorAugSSDTransform(hue=25, saturation=1.4, img_format="BGR")
    rgb = ColorAugSSDTransform(hue=25, saturation=1.4)
    assert np.array_equal(bgr.apply_image(image[..., ::-1])[..., ::-1], rgb.apply_image(image))


@pytest.mark.parametrize("contrast_first", [True, False])
def test_color_aug_order(contrast_first):
    image = random_image(3)
    tfm = ColorAugSSDTransform(
        brightness=7.0, contrast=1.4, saturation=0.7, hue=11, contrast_first=contrast_first
    )

    def contrast(x):
        return np.clip(x.astype(np.float32) * 1.4, 0, 255).astype(np.uint8)

    x = np.clip(image.astype(np.float32) + 7.0, 0, 255).astype(np.uint8)
    if contrast_first:
        x = contrast(x)
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(0.7), 0, 255).astype(np.uint8)
    hsv = rgb_to_hsv(hsv_to_rgb(hsv))
    hsv[..., 0] = (hsv[..., 0].astype(int) + 11) % 180
    x = hsv_to_rgb(hsv)
    if not contrast_first:
        x = contrast(x)
    assert np.array_equal(tfm.apply_image(image), x)


def test_neutral_hue_and_saturation_nearly_identity():
    image = random_image(4)
    out = ColorAugSSDTransform(saturation=1.0, hue=0).apply_image(image).astype(int)
    err = np.abs(out - image)
    assert err.mean() < 0.5
    assert err.max() <= 5  # uint8 hue steps of 2 degrees: at most 255 / 60 on one channel


def test_hsv_round_trip():
    image = random_image(5, (128, 128, 3))
    back = hsv_to_rgb(rgb_to_hsv(image)).astype(int)
    err = np.abs(back - image)
    chroma = (image.max(-1) - image.min(-1)).astype(float)
    # H is quantised to 2 degrees: the middle channel may move by chroma / 60, plus rounding
    assert (err.max(-1) <= chroma / 60 + 2).all()
    assert err.mean() < 0.5
    dull = (image // 4 + 100).astype(np.uint8)  # chroma < 64: within 2 levels
    assert np.abs(hsv_to_rgb(rgb_to_hsv(dull)).astype(int) - dull).max() <= 2
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    assert (rgb_to_hsv(grey)[:, :2] == 0).all() and np.array_equal(
        hsv_to_rgb(rgb_to_hsv(grey)), grey
    )
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_hsv(image.astype(np.float32))


def test_hsv_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    image = random_image(6, (64, 64, 3))
    ours, theirs = rgb_to_hsv(image).astype(int), cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    dh = (ours[..., 0] - theirs[..., 0] + 90) % 180 - 90  # hue is circular
    assert np.abs(dh).max() <= 1 and np.abs(ours[..., 1:] - theirs[..., 1:]).max() <= 1
    assert ours[..., 0].max() < 180
    hsv = random_image(7, (64, 64, 3))
    hsv[..., 0] %= 180
    back = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(int)
    assert np.abs(hsv_to_rgb(hsv).astype(int) - back).max() <= 1
