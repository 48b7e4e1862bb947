"""Necks: turn a backbone's feature maps into a pyramid at strides 4/8/16/32 for dense heads."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

NeckName = Literal["auto", "multilevel", "layernorm", "identity"]


def _rescale(channels: int, factor: float) -> nn.Module:
    """Up-sample with stride-2 transposed convs (BN+GELU between them) or down-sample with max-pooling."""
    steps = round(math.log2(factor))
    if steps == 0:
        return nn.Identity()
    if steps < 0:  # one 2^k pool: the same maxima as k stride-2 pools, in one pass
        return nn.MaxPool2d(kernel_size=2**-steps, stride=2**-steps)
    layers: list[nn.Module] = []
    for i in range(steps):
        layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        if i < steps - 1:
            layers += [nn.BatchNorm2d(channels), nn.GELU()]
    return nn.Sequential(*layers)


class MultiLevelNeck(nn.Module):
    """BEiT/MAE-style pyramid for single-stride ViTs: level i of feature i is rescaled to ``out_strides[i]``.

    Args:
        in_channels: channels of each input map.
        in_strides: stride of each input map (all equal for a plain ViT).
        out_strides: target stride per level.
    """

    def __init__(
        self, in_channels: list[int], in_strides: list[int], out_strides: tuple[int, ...] = (4, 8, 16, 32)
    ) -> None:
        super().__init__()
        if len(in_channels) != len(out_strides):
            raise ValueError(f"MultiLevelNeck needs {len(out_strides)} input maps, got {len(in_channels)}.")
        self.levels = nn.ModuleList(
            _rescale(c, s / t) for c, s, t in zip(in_channels, in_strides, out_strides, strict=True)
        )
        self.out_channels = list(in_channels)
        self.strides = list(out_strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(f) for level, f in zip(self.levels, features, strict=True)]


class LayerNormNeck(nn.Module):
    """A LayerNorm per level, for hierarchical backbones (Swin) whose stages already form a pyramid.

    Args:
        in_channels: channels of each input map.
        in_strides: stride of each input map.
    """

    def __init__(self, in_channels: list[int], in_strides: list[int]) -> None:
        super().__init__()
        self.norms = nn.ModuleList(LayerNorm2d(c) for c in in_channels)
        self.out_channels = list(in_channels)
        self.strides = list(in_strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [norm(f) for norm, f in zip(self.norms, features, strict=True)]


class IdentityNeck(nn.Module):
    """Pass the backbone's maps through unchanged."""

    def __init__(self, in_channels: list[int], in_strides: list[int]) -> None:
        super().__init__()
        self.out_channels = list(in_channels)
        self.strides = list(in_strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(features)


SegmentationNeck = MultiLevelNeck | LayerNormNeck | IdentityNeck
SEGMENTATION_NECKS: dict[str, Callable[[list[int], list[int]], SegmentationNeck]] = {
    "multilevel": MultiLevelNeck,
    "layernorm": LayerNormNeck,
    "identity": IdentityNeck,
}


def build_neck(name: NeckName, in_channels: list[int], in_strides: list[int], hierarchical: bool) -> SegmentationNeck:
    """The pyramid neck named in ``SEGMENTATION_NECKS``; ``auto`` = multilevel for plain ViTs (one stride),
    layernorm for hierarchical backbones (``Backbone.hierarchical``)."""
    if name == "auto":
        name = "layernorm" if hierarchical else "multilevel"
    if name not in SEGMENTATION_NECKS:
        raise ValueError(f"Unknown neck '{name}'; choose one of auto, {', '.join(SEGMENTATION_NECKS)}.")
    return SEGMENTATION_NECKS[name](in_channels, in_strides)


ExtraLevels = Literal["p6p7", "maxpool"]


def _extra_block(extra: ExtraLevels, channels: int) -> ExtraFPNBlock:
    # RetinaNet/FCOS: P6 and P7 from P5 by stride-2 convs; Faster R-CNN (ViTDet, detectron2): P6 max-pooled from P5.
    return LastLevelP6P7(channels, channels) if extra == "p6p7" else LastLevelMaxPool()


def _extra_strides(extra: ExtraLevels, last: int) -> list[int]:
    return [last * 2, last * 4] if extra == "p6p7" else [last * 2]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid from a plain ViT's last map, plus extra coarser levels.

    Only the levels asked for are built (a level no detector reads would get no gradient and stop DDP).

    Args:
        in_channels: channels of the ViT map.
        in_stride: stride of the ViT map (16 for patch-16 models).
        out_channels: channels of every output level.
        out_strides: strides of the rescaled levels (ViTDet: 4, 8, 16, 32).
        extra: coarser levels after the last: ``p6p7`` (two stride-2 convs, RetinaNet/FCOS) or ``maxpool`` (P6).
    """

    def __init__(
        self,
        in_channels: int,
        in_stride: int,
        out_channels: int = 256,
        out_strides: tuple[int, ...] = (4, 8, 16, 32),
        extra: ExtraLevels = "maxpool",
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        for stride in out_strides:
            steps = round(math.log2(in_stride / stride))
            layers: list[nn.Module] = []
            dim = in_channels
            if steps < 0:
                layers += [nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(-steps)]
            for i in range(max(steps, 0)):
                layers.append(nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
                dim //= 2
                if i < steps - 1:
                    layers += [LayerNorm2d(dim), nn.GELU()]
            layers += [
                nn.Conv2d(dim, out_channels, 1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            ]
            self.stages.append(nn.Sequential(*layers))
        self.top_block = _extra_block(extra, out_channels)
        self.strides = [*out_strides, *_extra_strides(extra, out_strides[-1])]
        self.out_channels = [out_channels] * len(self.strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = [stage(features[-1]) for stage in self.stages]
        names = [str(i) for i in range(len(outs))]
        outs, _ = self.top_block(outs, outs, names)  # appends the extra levels
        return outs


class FPN(nn.Module):
    """torchvision's FPN over a hierarchical backbone's stages (each LayerNorm-ed first), plus extra coarser levels.

    Args:
        in_channels: channels of each stage.
        in_strides: stride of each stage.
        out_channels: channels of every output level.
        extra: coarser levels after the last: ``p6p7`` (RetinaNet/FCOS) or ``maxpool`` (P6, Faster R-CNN).
    """

    def __init__(
        self, in_channels: list[int], in_strides: list[int], out_channels: int = 256, extra: ExtraLevels = "maxpool"
    ) -> None:
        super().__init__()
        # Swin's stage outputs are not normalised (mmdet's Swin adds a norm per output stage, as the segmentation
        # path's LayerNormNeck does).
        self.norms = nn.ModuleList(LayerNorm2d(c) for c in in_channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=_extra_block(extra, out_channels))
        self.strides = [*in_strides, *_extra_strides(extra, in_strides[-1])]
        self.out_channels = [out_channels] * len(self.strides)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = OrderedDict((str(i), norm(f)) for i, (norm, f) in enumerate(zip(self.norms, features, strict=True)))
        return list(self.fpn(maps).values())
