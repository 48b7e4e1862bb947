"""OHEM cross-entropy: the mean over hard pixels, at least min_kept of them, void never counted. The one-pass
cross-entropy: PyTorch's loss and gradients.

How SegmentationTask combines its loss terms is tested in tests/tasks/test_segmentation.py.
"""

import pytest
import torch
import torch.nn.functional as F

from vitdense.models.losses import cross_entropy, ohem_cross_entropy


def test_ohem_keeps_hard_pixels_and_at_least_min_kept() -> None:
    target = torch.tensor([[[0, 1, 1, 255]]])  # (1, 1, 4); last pixel void
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 0] = 5.0  # pixel 0: confident and right (easy)
    logits[0, 0, 0, 1] = 5.0  # pixel 1: confident and wrong (hard)
    logits[0, 1, 0, 2] = 1.0  # pixel 2: right, p = 0.73 (easy at 0.7)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[0, 0]
    loss = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=1)
    torch.testing.assert_close(loss, per_pixel[1])
    two = ohem_cross_entropy(logits, target, ignore_index=255, thresh=0.7, min_kept=2)  # the two hardest
    torch.testing.assert_close(two, (per_pixel[1] + per_pixel[2]) / 2)
    everything = ohem_cross_entropy(logits, target, ignore_index=255, thresh=1.0, min_kept=1)
    torch.testing.assert_close(everything, F.cross_entropy(logits, target, ignore_index=255))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 4)])  # per pixel, and per sample
def test_one_pass_cross_entropy_gives_pytorchs_loss_and_gradients(weighted: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(shape, dtype=torch.float64) * 3).requires_grad_(True)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    target.view(-1)[::3] = 255  # void pixels
    weight = torch.rand(shape[1], dtype=torch.float64) + 0.5 if weighted else None
    ours = cross_entropy(logits, target, weight=weight, ignore_index=255)
    theirs = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    upstream = torch.tensor(0.7, dtype=torch.float64)  # a loss weight above this term
    (g_ours,) = torch.autograd.grad(ours * upstream, logits)
    (g_theirs,) = torch.autograd.grad(theirs * upstream, logits)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-12, rtol=0)


def test_one_pass_cross_entropy_under_bf16_autocast_gives_a_bf16_gradient() -> None:
    logits = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cross_entropy(logits, target)
        reference = F.cross_entropy(logits, target)
    assert loss.dtype == torch.float32 and torch.allclose(loss, reference.float(), atol=1e-6)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_label_smoothing_is_pytorchs() -> None:
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(cross_entropy(logits, target, label_smoothing=0.1),
                               F.cross_entropy(logits, target, label_smoothing=0.1))  # fmt: skip


@pytest.mark.parametrize("weighted", [False, True])
def test_one_pass_cross_entropy_over_no_pixels_is_pytorchs(weighted: bool) -> None:
    """Every pixel ignored: loss NaN and gradient zero, as F.cross_entropy (not a NaN gradient)."""
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    weight = torch.rand(3) if weighted else None
    loss = cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(logits, target, weight=weight, ignore_index=255))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.equal(grad, torch.zeros_like(logits))


def test_one_pass_cross_entropy_backward_twice_with_a_kept_graph() -> None:
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5))
    loss = cross_entropy(logits, target) * 2
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    (reference,) = torch.autograd.grad(F.cross_entropy(logits, target) * 2, logits)
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second, reference)


def test_one_pass_cross_entropy_keeps_the_dtype_of_low_precision_logits_without_autocast() -> None:
    logits = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    loss, reference = cross_entropy(logits, target), F.cross_entropy(logits, target)
    assert loss.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(loss, reference, atol=2e-2, rtol=1e-2)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16
