"""The matmul resize gives F.interpolate's bilinear numbers and gradients, up and down, on odd sizes."""

import pytest
import torch
import torch.nn.functional as F

from vitdense.models.resize import resize_bilinear

SIZES = [((7, 9), (29, 37)), ((64, 48), (17, 13)), ((5, 5), (5, 11)), ((1, 3), (4, 4))]


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_same_values_and_gradients_as_interpolate(src: tuple[int, int], dst: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *src, requires_grad=True)
    ours, ref = resize_bilinear(x, dst), _interpolate(x, dst)
    exact = _interpolate(x.detach().double(), dst)
    assert (ours.double() - exact).abs().max() <= 1e-5
    # fp32 interpolate itself is ~1e-5 off the exact map when down-sampling (float32 source indices)
    assert (ours - ref).abs().max() <= 2e-5
    torch.testing.assert_close(resize_bilinear(x.detach().double(), dst), exact, atol=1e-12, rtol=0)
    weight = torch.randn_like(ref)
    (grad_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), x)
    assert (grad_ours - grad_ref).abs().max() <= 2e-5


def test_keep_crops_the_padded_canvas() -> None:
    x = torch.randn(1, 4, 8, 8)
    ref = _interpolate(x, (32, 32))[..., :27, :30]
    torch.testing.assert_close(resize_bilinear(x, (32, 32), keep=(27, 30)), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("out_size", [1, 2, 3, 6, (4, 7)])
def test_export_form_of_adaptive_pooling_is_the_same_pooling(out_size, monkeypatch) -> None:
    from vitdense.models.resize import AdaptiveAvgPool2d

    x = torch.randn(2, 3, 5, 13, dtype=torch.float64)  # bins overlap (5 rows into 6) and split unevenly
    expected = F.adaptive_avg_pool2d(x, out_size)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(AdaptiveAvgPool2d(out_size)(x), expected, atol=1e-12, rtol=0)


def test_a_matrix_first_built_under_inference_mode_still_trains() -> None:
    # Evaluate, then fine-tune in the same process (a notebook's workflow): the cached matrices must not be
    # inference tensors, which autograd cannot save for backward.
    from vitdense.models.resize import interpolation_matrix

    interpolation_matrix.cache_clear()
    with torch.inference_mode():
        resize_bilinear(torch.randn(1, 2, 3, 5), (13, 17))
    x = torch.randn(1, 2, 3, 5, requires_grad=True)
    resize_bilinear(x, (13, 17)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
