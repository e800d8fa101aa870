"""The alignment losses against hand-written computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from densevlm_d2.modeling.losses import clipself_loss, densevlm_loss, regionclip_loss

# 4 classes: 0, 1 things; 2, 3 stuff. Features are 4-d one-hot-ish so cosines are easy to follow.
THING = torch.tensor([True, True, False, False])
TEXT = torch.eye(4)


def _kl_by_hand(student_cos, teacher_cos, temperature):
    """sum_k p_k (log p_k - log q_k) averaged over rows, written out."""
    total = 0.0
    for s_row, t_row in zip(student_cos, teacher_cos, strict=True):
        t = [math.exp(v / temperature) for v in t_row]
        s = [math.exp(v / temperature) for v in s_row]
        p = [v / sum(t) for v in t]
        q = [v / sum(s) for v in s]
        total += sum(
            pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q, strict=True) if pk > 0
        )
    return total / len(student_cos)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_thing_only():
    teacher = _unit([1.0, 0.2, 0.0, 0.0], [0.1, 1.0, 0.0, 0.1])
    student = _unit([0.5, 0.5, 0.2, 0.0], [0.0, 1.0, 0.3, 0.0])
    loss, stats = densevlm_loss(student, teacher, TEXT, TEXT, THING, temperature=0.1, threshold=0.3)
    assert dict(stats) == {"kept": 2, "thing": 2, "stuff": 0}
    expected = _kl_by_hand(student[:, :2].tolist(), teacher[:, :2].tolist(), 0.1)  # thing columns
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_stuff_only_over_all_or_stuff_columns():
    teacher = _unit([0.0, 0.1, 1.0, 0.2], [0.0, 0.0, 0.2, 1.0])
    student = _unit([0.3, 0.0, 0.6, 0.5], [0.0, 0.4, 0.4, 0.6])
    loss, stats = densevlm_loss(student, teacher, TEXT, TEXT, THING, temperature=0.1)
    assert dict(stats) == {"kept": 2, "thing": 0, "stuff": 2}
    assert loss.item() == pytest.approx(
        _kl_by_hand(student.tolist(), teacher.tolist(), 0.1), rel=1e-5
    )  # all 4 columns
    loss_s, _ = densevlm_loss(student, teacher, TEXT, TEXT, THING, 0.1, stuff_classes="stuff")
    assert loss_s.item() == pytest.approx(
        _kl_by_hand(student[:, 2:].tolist(), teacher[:, 2:].tolist(), 0.1), rel=1e-5
    )


def test_mixed_with_a_dropped_region():
    teacher = _unit([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    student = _unit([0.2, 0.3, 0.1, 0.0], [0.1, 0.0, 0.7, 0.2], [0.5, 0.5, 0.5, 0.5])
    # the third region's teacher is uniform (top probability 0.25 < 0.3): dropped
    loss, stats = densevlm_loss(student, teacher, TEXT, TEXT, THING, temperature=0.1, threshold=0.3)
    assert dict(stats) == {"kept": 2, "thing": 1, "stuff": 1}
    expected = _kl_by_hand(student[:1, :2].tolist(), teacher[:1, :2].tolist(), 0.1) + _kl_by_hand(
        student[1:2].tolist(), teacher[1:2].tolist(), 0.1
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_nothing_kept_is_zero_with_gradients():
    teacher = _unit([1.0, 1.0, 1.0, 1.0])
    student = _unit([1.0, 0.0, 0.0, 0.0]).requires_grad_()
    loss, stats = densevlm_loss(student, teacher, TEXT, TEXT, THING)
    assert stats["kept"] == 0 and loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_published_scale_and_class_embedding_norms():
    """temperature 0.01 = logits x 100, as published; class embeddings are normalised first, so a
    published 316-class file with row norms 0.9 gives the same loss as the unit-norm one."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    text = torch.randn(4, 8, generator=g)
    unit, _ = densevlm_loss(s, t, text, text, THING, threshold=0.0)
    scaled, _ = densevlm_loss(s, t, 0.9 * text, 0.9 * text, THING, threshold=0.0)
    assert unit.item() == pytest.approx(scaled.item(), rel=1e-6)
    with pytest.raises(ValueError, match="vocabulary sizes differ"):
        densevlm_loss(s, t, text, text[:3], THING)


def test_clipself_loss():
    s = _unit([1.0, 0.0], [1.0, 1.0])
    t = _unit([1.0, 0.0], [1.0, 0.0])
    assert clipself_loss(s, t).item() == pytest.approx(1 - (1 + math.sqrt(0.5)) / 2)


def test_regionclip_loss_by_hand():
    feats = _unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    concepts = torch.eye(3)
    labels = torch.tensor([0, 1])
    loss = regionclip_loss(feats, labels, concepts, logit_scale=10.0, num_sampled=3)

    def bce(x, y):
        return -(
            y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x)))
        )

    per_box = [bce(10, 1) + bce(0, 0) + bce(0, 0), bce(0, 0) + bce(10, 1) + bce(0, 0)]
    assert loss.item() == pytest.approx(sum(per_box) / 2, rel=1e-5)
    # with fewer sampled concepts than the pool, the labels are always among them
    small = regionclip_loss(feats, labels, concepts, 10.0, num_sampled=2)
    assert small.item() == pytest.approx((bce(10, 1) + bce(0, 0)) * 2 / 2, rel=1e-5)
    # every concept of the pool among the labels, fewer than num_sampled: all of them, none drawn
    three = _unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    every = regionclip_loss(three, torch.tensor([0, 1, 2]), concepts, 10.0, num_sampled=100)
    assert every.item() == pytest.approx(bce(10, 1) + 2 * bce(0, 0), rel=1e-5)
