"""UPerNet (mmseg's UPerHead) and the auxiliary FCN head, with mmseg's parameter names so weights port."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitdense.models.resize import AdaptiveAvgPool2d, resize_bilinear


class ConvModule(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU, named ``conv``/``bn``/``activate`` as in mmcv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            # One value per channel (batch 1 through the 1x1 pooling branch): batch statistics are undefined,
            # so normalise with the running ones instead of failing.
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            x = self.bn(x)
        return self.activate(x)


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return resize_bilinear(x, (size[0], size[1]))  # F.interpolate's numbers, matmul backward


class UPerHead(nn.Module):
    """Unified Perceptual Parsing head: a pyramid pooling module on the top level plus an FPN over all levels.

    Args:
        in_channels: channels of each pyramid level, finest first.
        num_classes: number of output classes.
        channels: width of every inner conv.
        pool_scales: output sizes of the pyramid pooling module.
        dropout: dropout (2d) before the classifier.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        top = in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool2d(s), ConvModule(top, channels, 1)) for s in pool_scales
        )
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [_resize(ppm(x), x.shape[2:]) for ppm in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of the finest level."""
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)]
        laterals.append(self.psp_forward(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals, strict=False)] + [laterals[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [_resize(o, size) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """mmseg's FCNHead, used as UPerNet's auxiliary head on one pyramid level.

    Args:
        in_channels: channels of the input level.
        num_classes: number of output classes.
        channels: width of the convs.
        num_convs: number of 3x3 convs.
        in_index: which pyramid level it reads.
        dropout: dropout (2d) before the classifier.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 1,
        in_index: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_index = in_index
        convs = [ConvModule(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels if num_convs else in_channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(features[self.in_index])))
