"""Bilinear resizing of logits as two small matrix products: the same numbers as ``F.interpolate``, fast backward.

``F.interpolate(mode="bilinear", align_corners=False)`` is a separable linear map, so it can be written as
``R_h @ x @ R_w^T`` with two sparse-in-effect (out x in) interpolation matrices. Its backward is then two GEMMs
instead of interpolate's scatter with atomics (measured at 48% of a GPU training step for full-size logits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Active recorders of resize calls: (calls list, context function); see record_resizes.
_RECORDERS: list[tuple[list, Callable[[], Any]]] = []


@contextmanager
def record_resizes(context: Callable[[], Any] = lambda: None) -> Iterator[list[tuple[Any, tuple[int, ...], int, int]]]:
    """Record the resizes that run inside the block, as ``(context(), input shape, kept rows, kept columns)``.

    ``vitdense.cost.estimate`` counts their matrix products this way (they run outside any layer it can hook).
    """
    calls: list[tuple[Any, tuple[int, ...], int, int]] = []
    entry = (calls, context)
    _RECORDERS.append(entry)
    try:
        yield calls
    finally:
        _RECORDERS.remove(entry)


@lru_cache(maxsize=64)
def interpolation_matrix(out_size: int, in_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(out_size, in_size) matrix of PyTorch's bilinear weights along one axis (align_corners=False, no antialias).

    Cached and shared by every later call: built as a normal tensor even under ``torch.inference_mode`` (validate,
    test, predict, ``vitdense.evaluate``), where it would otherwise be an inference tensor that a later training
    step in the same process cannot save for backward.
    """
    with torch.inference_mode(False):
        return _interpolation_matrix(out_size, in_size, device, dtype)


def _interpolation_matrix(out_size: int, in_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    frac = src - low
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], keep: tuple[int, int] | None = None) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)[..., :keep[0], :keep[1]]`` by two matmuls.

    Args:
        x: (..., H, W) maps.
        size: output (height, width) of the resize.
        keep: only the first rows and columns of the output (e.g. the image inside a padded canvas); default all.
    """
    (out_h, out_w), (in_h, in_w) = size, x.shape[-2:]
    keep_h, keep_w = keep if keep is not None else size
    if torch.compiler.is_exporting():
        # Sizes are symbolic in an export with dynamic height and width: no branch on them, no int() (either would
        # fix them at the example's size); the graph's resize op has the same numbers.
        return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)[..., :keep_h, :keep_w]
    if (out_h, out_w) == (in_h, in_w):
        return x[..., :keep_h, :keep_w]
    for calls, context in _RECORDERS:
        calls.append((context(), tuple(x.shape), int(keep_h), int(keep_w)))
    rows = interpolation_matrix(int(out_h), int(in_h), x.device, x.dtype)[:keep_h]
    cols = interpolation_matrix(int(out_w), int(in_w), x.device, x.dtype)[:keep_w]
    return torch.matmul(torch.matmul(rows, x), cols.T)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that also exports with a dynamic input size.

    The exporter writes adaptive pooling as gathers at indices fixed by the example's size, which fail at any other
    size; while exporting, the pooling is two products with (out x in) bin-averaging matrices built from the symbolic
    size instead (PyTorch's bins: ``[floor(i * n / out), ceil((i + 1) * n / out))``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        size = self.output_size
        out_h, out_w = (size, size) if isinstance(size, int) or size is None else size
        # None keeps that side's input size (as nn.AdaptiveAvgPool2d does).
        rows = _bin_average_matrix(x.shape[-2] if out_h is None else out_h, x.shape[-2], x)
        cols = _bin_average_matrix(x.shape[-1] if out_w is None else out_w, x.shape[-1], x)
        return torch.matmul(torch.matmul(rows, x), cols.T)


def _bin_average_matrix(out_size: int, in_size: Any, like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix whose row i averages adaptive pooling's bin i (in_size may be symbolic)."""
    i = torch.arange(out_size, device=like.device)
    start = (i * in_size) // out_size
    end = ((i + 1) * in_size + out_size - 1) // out_size
    j = torch.arange(in_size, device=like.device)
    inside = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)
