"""Classification head: dropout -> Linear on the pooled embedding; DeiT-distilled averages two heads."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn


class ClassificationHead(nn.Module):
    """Linear classifier beside the backbone (so a frozen backbone leaves it trainable).

    Args:
        in_features: width of the pooled embedding.
        num_classes: number of classes.
        dropout: dropout before the linear layer.
        num_pooled: 1, or 2 for DeiT-distilled models (CLS and distillation token, one linear each, averaged;
            timm's ``head`` / ``head_dist``).
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, num_pooled: int = 1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        self.fc_dist = nn.Linear(in_features, num_classes) if num_pooled == 2 else None
        for fc in (self.fc, self.fc_dist):
            if fc is not None:  # timm's ViT head initialisation
                trunc_normal_(fc.weight, std=0.02)
                nn.init.zeros_(fc.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from (B, D), or from (B, 2, D) for two heads."""
        if self.fc_dist is None:
            return self.fc(self.dropout(pooled))
        return (self.fc(self.dropout(pooled[:, 0])) + self.fc_dist(self.dropout(pooled[:, 1]))) / 2
