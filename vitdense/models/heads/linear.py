"""The linear segmentation head of DINOv2's evaluation (mmseg's ``BNHead`` there): batch norm and a 1x1 conv."""

from __future__ import annotations

import torch
from torch import nn

from vitdense.models.resize import resize_bilinear


class LinearHead(nn.Module):
    """Per-pixel linear classifier on the concatenated input levels, each resized to the first level's size.

    With one level of patch tokens this is DINOv2's "lin" evaluation; with the last four blocks its "+ms" head.

    Args:
        in_channels: channels of each input level.
        num_classes: number of output classes.
        dropout: dropout (2d) before the classifier (DINOv2: 0).
    """

    def __init__(self, in_channels: list[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(sum(in_channels))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(sum(in_channels), num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of the first level."""
        size = features[0].shape[2:]
        x = torch.cat([features[0]] + [resize_bilinear(f, (size[0], size[1])) for f in features[1:]], dim=1)
        return self.conv_seg(self.dropout(self.bn(x)))
